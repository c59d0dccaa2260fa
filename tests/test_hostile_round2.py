"""Hostile input, round 2 (issue 37): each case built here, each pinned by a test that failed on
the code before its fix."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_unet.cli import main
from attention_unet.errors import InputError
from attention_unet.settings import InferenceSettings

from .conftest import synthetic

NO_NETWORK = """
import socket, sys
calls = []
def refuse(*args, **kwargs):
    calls.append(args)
    raise OSError("this test allows no network")
socket.getaddrinfo = refuse
socket.socket.connect = refuse
import attention_unet.training.fit  # what train, finetune and demo import
import albumentations  # imported by the augmentations of every training run
print(len(calls))
"""


def test_training_imports_open_no_connection() -> None:
    """albumentations asks PyPI for updates at import unless NO_ALBUMENTATIONS_UPDATE is set: the
    package sets it before anything imports albumentations."""
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    done = subprocess.run([sys.executable, "-c", NO_NETWORK], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "0", done.stdout + done.stderr


def _image(path: Path, seed: int = 3) -> None:
    grey = synthetic(seed, (64, 64))[0]
    if path.suffix == ".tif":
        tifffile.imwrite(path, grey)
    else:
        iio.imwrite(path, grey)


def _summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def test_stems_of_same_named_inputs_never_collide(tmp_path: Path, tiny_model: Path) -> None:
    """x.png, x.tif and x_2.png: x.tif used to take x_2, and x_2.png overwrote its outputs."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name, seed in (("x.png", 1), ("x.tif", 2), ("x_2.png", 3)):
        _image(folder / name, seed)
    assert main(["predict", str(folder), "--model", str(tiny_model), "--out", str(tmp_path / "out")]) == 0
    rows = _summary(tmp_path / "out")
    assert sorted(r["file"] for r in rows) == ["x", "x_2", "x_3"]
    assert len({(tmp_path / "out" / f"{r['file']}_labels.tif").stat().st_ino for r in rows}) == 3
    by_file = {Path(r["input"]).name: r["file"] for r in rows}
    assert by_file["x_2.png"] == "x_2"


def test_formula_names_are_neutralised_and_read_back(tmp_path: Path, tiny_model: Path) -> None:
    """An input named like a spreadsheet formula lands in summary.csv with a leading quote; a
    --skip-existing rerun still knows it as done."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("=HYPERLINK(1).png", "+cmd.png", "@SUM(1).png", "plain.png"):
        _image(folder / name)
    argv = ["predict", str(folder), "--model", str(tiny_model), "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    cells = [r["input"] for r in _summary(tmp_path / "out")] + [r["file"] for r in _summary(tmp_path / "out")]
    assert not [c for c in cells if c[:1] in "=+-@"], cells
    assert sum(c.startswith("'") for c in cells) == 3  # the three formula names (inputs are full paths)
    before = (tmp_path / "out" / "+cmd_labels.tif").stat().st_mtime_ns
    assert main([*argv, "--skip-existing"]) == 0
    assert (tmp_path / "out" / "+cmd_labels.tif").stat().st_mtime_ns == before  # skipped, not redone
    assert len(_summary(tmp_path / "out")) == 4


def test_skip_existing_redoes_outputs_made_with_other_options(tmp_path: Path, tiny_model: Path, capsys) -> None:
    """--skip-existing kept files made under other options or another model in one summary: the
    folder records what its outputs were made with, and a rerun with anything else redoes them."""
    folder = tmp_path / "in"
    folder.mkdir()
    _image(folder / "a.png")
    argv = ["predict", str(folder), "--model", str(tiny_model), "--out", str(tmp_path / "out"), "--skip-existing"]
    labels = tmp_path / "out" / "a_labels.tif"
    assert main(argv) == 0
    first = labels.stat().st_mtime_ns
    assert main(argv) == 0 and labels.stat().st_mtime_ns == first  # the same options: skipped
    capsys.readouterr()
    assert main([*argv, "--threshold", "0.3"]) == 0
    assert labels.stat().st_mtime_ns != first and "redoes them" in capsys.readouterr().out
    again = labels.stat().st_mtime_ns
    assert main([*argv, "--threshold", "0.3"]) == 0 and labels.stat().st_mtime_ns == again


def test_an_earlier_summary_is_escaped_and_may_carry_a_bom(tmp_path: Path, tiny_model: Path) -> None:
    """--skip-existing reads the earlier summary.csv back into index.html: a crafted cell is text,
    not a script; a summary saved by a spreadsheet (a BOM first) is read, not a KeyError."""
    folder = tmp_path / "in"
    folder.mkdir()
    _image(folder / "a.png")
    out = tmp_path / "out"
    argv = ["predict", str(folder), "--model", str(tiny_model), "--out", str(out)]
    assert main(argv) == 0
    rows = _summary(out)
    rows[0]["nucleus_count"] = "<script>alert(1)</script>"
    with open(out / "summary.csv", "w", newline="", encoding="utf-8-sig") as f:  # as a spreadsheet saves it
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main([*argv, "--skip-existing"]) == 0
    assert "<script>alert" not in (out / "index.html").read_text()


def test_export_killed_mid_write_keeps_the_previous_model(tmp_path: Path, tiny_model: Path, monkeypatch) -> None:
    """export --onnx wrote in place: a kill mid-write left a truncated file and no model."""
    import torch

    from attention_unet.model.runtime import onnx_info

    target = tmp_path / "m.onnx"
    assert main(["export", "--model", str(tiny_model), "--onnx", str(target)]) == 0
    before = target.read_bytes()

    def killed(model: object, args: object, path: str, **kwargs: object) -> None:
        Path(path).write_bytes(b"\x08\x01truncated")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.onnx, "export", killed)
    assert main(["export", "--model", str(tiny_model), "--onnx", str(target)]) == 130
    assert target.read_bytes() == before and onnx_info(target)["model"]["width"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


@pytest.mark.parametrize("value", ["=1+1", "-2", "@x", "+y", "'z"])
def test_spreadsheet_cells_round_trip(value: str) -> None:
    from attention_unet.io.outputs import from_spreadsheet_cell, spreadsheet_cell

    cell = spreadsheet_cell(value)
    assert isinstance(cell, str) and cell.startswith("'") and from_spreadsheet_cell(cell) == value
    assert spreadsheet_cell(np.float64(-2.5)) == -2.5


@pytest.mark.parametrize(
    ("inference", "expected"),
    [
        ({"h": float("nan")}, "h must lie between 0 and 1000, not nan"),
        ({"target_diameter": 0}, "target_diameter must lie between 1 and 1000"),
        ({"target_diameter": -5}, "target_diameter must lie between"),
        ({"target_diameter": float("inf")}, "target_diameter must lie between"),
        ({"target_diameter": 1e9}, "target_diameter must lie between"),
        ({"h": -1}, "h must lie between"),
        (None, "inference settings must be a mapping"),
        ({"min_area": 10**400}, "min_area must lie between 0 and 1e+07"),
        ({"tta": "false"}, "tta must be true or false, not 'false'"),
    ],
)
def test_hostile_model_metadata_is_one_line(tmp_path: Path, inference: object, expected: str, capsys) -> None:
    """Model metadata values that hung, crashed or silently turned TTA on: one line, exit 2."""
    from attention_unet.model import AttentionUNet, ModelConfig, save_model

    save_model(AttentionUNet(ModelConfig(width=4, depth=2)).eval(), tmp_path / "m", {"inference": inference})
    _image(tmp_path / "a.png")
    argv = ["predict", str(tmp_path / "a.png"), "--model", str(tmp_path / "m"), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


@given(
    st.dictionaries(
        st.sampled_from(sorted(InferenceSettings.__dataclass_fields__)),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.lists(st.integers())),
        max_size=4,
    )
)
@settings(max_examples=300, deadline=None, derandomize=True)
def test_fuzzed_model_metadata_is_accepted_or_one_clear_error(values: dict) -> None:
    try:
        InferenceSettings.from_metadata(values)
    except InputError as exc:
        assert str(exc).startswith("the model's inference setting")


def test_a_glob_that_climbs_out_of_its_root_writes_inside_out(tmp_path: Path, tiny_model: Path, monkeypatch) -> None:
    """'data/*/../../shared/img.png' wrote its outputs into shared/ (beside the input), not --out."""
    (tmp_path / "data" / "x").mkdir(parents=True)
    (tmp_path / "shared").mkdir()
    _image(tmp_path / "shared" / "img.png")
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "data/*/../../shared/img.png", "--model", str(tiny_model), "--out", "out"]) == 0
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["img.png"]
    assert (tmp_path / "out" / "img_labels.tif").is_file()


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32])
def test_the_same_pixels_in_a_wider_integer_type_give_the_same_nuclei(
    tmp_path: Path, tiny_model: Path, dtype: type
) -> None:
    """data.resize truncated int32/int64 pixels after interpolating (uint8 rounds), which moved
    nuclei and could flip auto scale: the same 8-bit pixels stored wider now segment the same."""
    grey = synthetic(5, (96, 120))[0]
    tifffile.imwrite(tmp_path / "narrow.tif", grey.astype(np.uint8))
    tifffile.imwrite(tmp_path / "wide.tif", grey.astype(dtype))
    for name in ("narrow", "wide"):
        argv = ["predict", str(tmp_path / f"{name}.tif"), "--model", str(tiny_model), "--scale", "0.7"]
        assert main([*argv, "--save-prob", "--out", str(tmp_path / name)]) == 0
    narrow, wide = (tifffile.imread(tmp_path / n / f"{n}_prob.tif") for n in ("narrow", "wide"))
    np.testing.assert_array_equal(narrow, wide)


def test_nan_pixels_give_empty_cells_and_valid_json(tmp_path: Path, tiny_model: Path) -> None:
    """A float TIFF with NaN pixels: its intensity columns reached the CSV as 'nan' and the GeoJSON
    as a bare NaN, which is not JSON."""
    import json

    grey = synthetic(3, (64, 64))[0].astype(np.float32)
    grey[20:40, 20:40] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", grey)
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "nan.tif"), "--model", str(tiny_model), "--geojson", "--min-confidence", "0"]
    assert main([*argv, "--threshold", "0.05", "--out", str(out)]) == 0

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    features = json.loads((out / "nan_nuclei.geojson").read_text(), parse_constant=refuse)["features"]
    table = (out / "nan_nuclei.csv").read_text().lower()
    assert features and "nan" not in table and "inf" not in table


def test_repeated_channel_names_keep_every_channels_column(tmp_path: Path, tiny_model: Path) -> None:
    """Two OME channels named DAPI: the second's intensity columns overwrote the first's."""
    grey = synthetic(3, (64, 64))[0].astype(np.uint16)
    stack = np.stack([grey, np.full_like(grey, 1000), np.full_like(grey, 3000)])
    metadata = {"axes": "CYX", "Channel": {"Name": ["DAPI", "DAPI", "dapi"]}}
    tifffile.imwrite(tmp_path / "c.ome.tif", stack, metadata=metadata)
    argv = ["predict", str(tmp_path / "c.ome.tif"), "--model", str(tiny_model), "--channel", "0"]
    assert main([*argv, "--min-confidence", "0", "--threshold", "0.05", "--out", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "c_nuclei.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and {"mean_DAPI", "mean_DAPI_2", "mean_dapi_3"} <= set(rows[0])
    assert {float(rows[0]["mean_DAPI_2"]), float(rows[0]["mean_dapi_3"])} == {1000.0, 3000.0}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--channel", "²"], "--channel ²: no channel of that name"),
        (["--zoom", "inf"], "--zoom must be a positive factor, not inf"),
    ],
)
def test_odd_numbers_are_one_line(tmp_path: Path, tiny_model: Path, argv: list[str], expected: str, capsys) -> None:
    """'--channel ²' (a digit to str.isdigit, not to int) and 'evaluate --zoom inf' were tracebacks."""
    _image(tmp_path / "a.png")
    if argv[0] == "--zoom":
        command = ["evaluate", "--model", str(tiny_model), "--split", "all", "--out", str(tmp_path / "o"), *argv]
    else:
        command = ["predict", str(tmp_path / "a.png"), "--model", str(tiny_model), "--out", str(tmp_path / "o"), *argv]
    assert main(command) == 2  # a bad option, or the batch's only file refused
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_a_large_batch_rewrites_its_summary_at_intervals(tmp_path: Path, tiny_model: Path, monkeypatch) -> None:
    """summary.csv and index.html were rewritten after every file: quadratic in the batch. Now after
    each of the first 20 files, then every 1%, and once at the end, which holds every row."""
    from attention_unet.commands import predict

    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(25):
        _image(folder / f"img{k:02d}.png", seed=k % 5)
    writes = []
    real = predict.write_summary
    monkeypatch.setattr(
        predict, "write_summary", lambda f, rows, failed: writes.append(len(rows)) or real(f, rows, failed)
    )
    assert main(["predict", str(folder), "--model", str(tiny_model), "--out", str(tmp_path / "out")]) == 0
    assert writes == [*range(1, 21), 25]
    assert len(_summary(tmp_path / "out")) == 25


def test_engine_onnx_leaves_nothing_in_the_temporary_folder(tmp_path: Path, tiny_model: Path, monkeypatch) -> None:
    """--engine onnx with a safetensors model exported to a mkdtemp() folder that was never removed."""
    import tempfile

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    _image(tmp_path / "a.png")
    argv = ["predict", str(tmp_path / "a.png"), "--model", str(tiny_model), "--engine", "onnx"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    assert list(temporary.iterdir()) == []


def test_a_finetune_that_fails_on_bad_data_leaves_no_folder_to_refuse_the_fixed_rerun(
    tmp_path: Path, tiny_model: Path, capsys
) -> None:
    """finetune wrote config.yaml before reading the data: after a bad-data failure the fixed
    rerun was refused ('holds files already')."""
    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    (bad / "masks").mkdir()
    (bad / "images" / "a.png").write_bytes(b"not a png")
    (bad / "masks" / "a.png").write_bytes(b"not a png")
    out = tmp_path / "run"
    argv = ["--model", str(tiny_model), "--out", str(out), "--epochs", "1", "--minutes", "0.2"]
    assert main(["finetune", str(bad), *argv]) == 2
    assert "cannot read image" in capsys.readouterr().err and not out.exists()
    good = tmp_path / "good"
    (good / "images").mkdir(parents=True)
    (good / "masks").mkdir()
    for k in range(2):
        image, labels = synthetic(k, (128, 128))
        iio.imwrite(good / "images" / f"g{k}.png", image)
        iio.imwrite(good / "masks" / f"g{k}.png", labels.astype(np.uint16))
    assert main(["finetune", str(good), *argv]) == 0
    assert (out / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint64])
def test_label_masks_of_every_integer_type_keep_their_nuclei(tmp_path: Path, dtype: type) -> None:
    """int16, int8 and uint64 masks were read as binary: two touching nuclei became one."""
    from attention_unet.io import data

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    labels = np.zeros((32, 32), dtype)
    labels[8:24, 4:16], labels[8:24, 16:28] = 1, 2 if dtype != np.uint64 else 2**40  # touching
    iio.imwrite(tmp_path / "images" / "a.png", np.full((32, 32), 100, np.uint8))
    tifffile.imwrite(tmp_path / "masks" / "a.tif", labels)
    (record,) = data.load_records(tmp_path, use_cache=False)
    assert record.labels.max() == 2 and len(np.unique(record.labels)) == 3


def test_training_keeps_nuclei_whose_ids_pass_65535() -> None:
    """Training cast labels to uint16: 65536 became background and 65537 fused with nucleus 1."""
    from attention_unet.io import data
    from attention_unet.training.config import TrainConfig
    from attention_unet.training.datasets import TrainDataset

    labels = np.zeros((64, 64), np.int32)
    labels[4:20, 4:20], labels[30:50, 4:20], labels[30:50, 30:50] = 1, 65536, 65537
    record = data.Record("a", np.full((64, 64, 3), 100, np.uint8), labels)
    dataset = TrainDataset([record], TrainConfig(input="crop:32", samples_per_epoch=1))
    assert len(np.unique(dataset.labels[0])) == 4


def test_segmenter_applies_the_pixel_limit(monkeypatch) -> None:
    """Segmenter.segment applied no pixel limit (a large array went straight to inference)."""
    from attention_unet.segmenter import as_image

    monkeypatch.setenv("ATTENTION_UNET_MAX_PIXELS", "1000")
    with pytest.raises(InputError, match="image: 50 x 40 pixels is above the limit of 1,000 per image"):
        as_image(np.zeros((40, 50), np.uint8))
    assert as_image(np.zeros((20, 50), np.uint8)).shape == (20, 50, 3)


def test_labels_corrected_by_hand_under_our_name_are_kept(tmp_path: Path, tiny_model: Path, capsys) -> None:
    """A *_labels.tif the user corrected and saved under the same name was replaced by the next run
    (the output list named files only): a file changed since the tool wrote it is the user's."""
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png", seed=4)
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", str(tiny_model), "--out", str(out)]
    assert main(argv) == 0
    corrected = np.zeros((64, 64), np.uint16)
    corrected[10:20, 10:20] = 7
    tifffile.imwrite(out / "a_labels.tif", corrected)
    assert main(argv) == 1  # a.png refused, b.png redone
    assert "a_labels.tif: changed since attention-unet wrote it" in capsys.readouterr().err
    np.testing.assert_array_equal(tifffile.imread(out / "a_labels.tif"), corrected)
    only_b = ["predict", str(tmp_path / "b.png"), "--model", str(tiny_model), "--out", str(out)]
    assert main(only_b) == 0  # b's own outputs are still the tool's to replace


@pytest.mark.parametrize("imagej", [True, False])
def test_a_truncated_stack_is_one_line_not_one_plane(tmp_path: Path, tiny_model: Path, capsys, imagej: bool) -> None:
    """A 5-plane stack cut short was segmented as its first plane, exit 0: now the file is named as
    damaged (tifffile only logs the broken page chain; an ImageJ file also declares its planes)."""
    import tifffile

    path = tmp_path / "in" / "stack.tif"
    path.parent.mkdir()
    stack = np.random.default_rng(0).integers(0, 255, (5, 64, 64), dtype=np.uint8)
    tifffile.imwrite(path, stack, imagej=imagej, metadata={"axes": "ZYX"})
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) * 2 // 5])
    code = main(["predict", str(path), "--model", str(tiny_model), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "stack.tif" in err and ("truncated" in err or "damaged" in err)
    assert not (tmp_path / "out" / "stack_labels.tif").exists()


def test_the_pixel_limit_counts_every_channel_of_a_plane(tmp_path: Path, monkeypatch) -> None:
    """The limit counted Y x X only: 3000 channels of 1000² in a 3.7 MB OME-TIFF asked for 2.2 GB.
    A plane may hold the pixel limit in colour (3 values a pixel); more channels count against it."""
    import tifffile

    from attention_unet.io.images import open_image

    monkeypatch.setenv("ATTENTION_UNET_MAX_PIXELS", "10000")
    for channels, refused in ((3, False), (10, True)):
        path = tmp_path / f"c{channels}.ome.tif"
        tifffile.imwrite(path, np.zeros((channels, 64, 64), np.uint8), metadata={"axes": "CYX"}, compression="zlib")
        if refused:
            with pytest.raises(InputError, match=f"64 x 64 pixels x {channels} channels is above the limit of 30,000"):
                open_image(path)
        else:
            assert open_image(path).n_channels == channels


def test_finetune_into_a_folder_it_cannot_write_is_one_line(tmp_path: Path, tiny_dataset: Path, capsys) -> None:
    """finetune --out on a read-only file system was a traceback: now one line naming --out, exit 2."""
    import os

    if os.geteuid() == 0:  # root writes anywhere: stand in with a file where the folder's parent should be
        blocker = tmp_path / "file"
        blocker.write_text("not a folder")
        out = blocker / "run"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        out = locked / "run"
    code = main(["finetune", str(tiny_dataset), "--model", "nuclei", "--out", str(out), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("attention-unet: error: --out") and "cannot write there" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [("empty", (0, 256), "an empty image"), ("huge", (300_000, 300_000), "decompression bomb")],
)
def test_an_empty_or_unwritten_giant_zarr_is_one_line(
    tmp_path: Path, tiny_model: Path, capsys, name, shape, message
) -> None:
    """A 0 x 256 zarr was a ValueError traceback; a zarr declaring 300,000² pixels with no chunk
    written (all fill value) started hours of work on zeros: now one line each, exit 2."""
    import zarr

    group = zarr.open_group(tmp_path / f"{name}.zarr", mode="w")
    group.create_array("0", shape=shape, dtype="uint8", chunks=(256, 256))
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    scale = [{"type": "scale", "scale": [1.0, 1.0]}]
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [{"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]}],
    }
    code = main(["predict", str(tmp_path / f"{name}.zarr"), "--model", str(tiny_model), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and f"{name}.zarr" in err


def test_names_that_are_not_utf8_or_too_long_for_the_disk(tmp_path: Path, tiny_model: Path, capsys) -> None:
    """A Latin-1 file name was a UnicodeEncodeError traceback (the output list, summary.csv, the
    index); a name whose outputs are too long for the file system stopped the batch. Now the first
    is segmented and read back by --skip-existing, the second is one warning, and the batch goes on."""
    import os

    folder = tmp_path / "in"
    folder.mkdir()
    _image(folder / "plain.png")
    latin = os.fsencode(folder) + b"/caf\xe9.png"
    os.rename(folder / "plain.png", latin)
    _image(folder / ("x" * 250 + ".png"))
    argv = ["predict", str(folder), "--model", str(tiny_model), "--out", str(tmp_path / "out")]
    assert main(argv) == 1  # one file failed, the other was done
    err = capsys.readouterr().err
    assert "cannot write its outputs (File name too long)" in err and "Traceback" not in err
    labels = os.fsencode(tmp_path / "out") + b"/caf\xe9_labels.tif"
    assert os.path.isfile(labels)
    before = os.stat(labels).st_mtime_ns
    assert main([*argv, "--skip-existing"]) == 1
    assert os.stat(labels).st_mtime_ns == before  # read back from summary.csv and the output list: skipped
    assert "index.html" in os.listdir(tmp_path / "out")


def test_a_pipe_or_a_device_given_as_input_is_one_line(tmp_path: Path, tiny_model: Path, capsys) -> None:
    """A FIFO or a link to /dev/zero named as an input was 'no such file or folder'; in a folder
    they are passed over (reading them may never end), as before."""
    import os

    fifo, zero = tmp_path / "pipe.png", tmp_path / "zero.png"
    os.mkfifo(fifo)
    zero.symlink_to("/dev/zero")
    for path in (fifo, zero):
        assert main(["predict", str(path), "--model", str(tiny_model), "--out", str(tmp_path / "o")]) == 2
        assert "not a regular file or folder" in capsys.readouterr().err
    _image(tmp_path / "a.png")
    assert main(["predict", str(tmp_path), "--model", str(tiny_model), "--out", str(tmp_path / "o2")]) == 0


@pytest.mark.parametrize(
    ("address", "message"), [("ucx://127.0.0.1:8786", "is not supported"), ("tls://127.0.0.1:8786", "cannot connect")]
)
def test_scheduler_addresses_dask_cannot_use_are_one_line(
    tmp_path: Path, tiny_model: Path, capsys, address, message
) -> None:
    """tls:// without dask's TLS settings and ucx:// without ucx were TypeError tracebacks."""
    pytest.importorskip("distributed")
    _image(tmp_path / "a.png")
    argv = ["predict", str(tmp_path / "a.png"), "--model", str(tiny_model), "--out", str(tmp_path / "o")]
    assert main([*argv, "--blockwise", "always", "--dask-scheduler", address]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def _hostile_onnx(kind: str, good: Path, folder: Path) -> Path:
    """An ONNX file that is no model attention-unet can run, built from a good export."""
    import onnx
    from onnx import TensorProto, helper

    path = folder / f"{kind}.onnx"
    proto = onnx.load(str(good))
    if kind == "custom-op":
        io = [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, c, None, None]) for n, c in (("image", 3), ("y", 2))
        ]
        graph = helper.make_graph([helper.make_node("Foo", ["image"], ["y"], domain="my.ops")], "g", io[:1], io[1:])
        custom = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)])
        custom.metadata_props.extend(proto.metadata_props)
        onnx.save(custom, str(path))
    elif kind == "unknown-op":  # the standard domain, an operator ONNX Runtime does not have
        proto.graph.node[0].op_type = "NoSuchOperator"
        onnx.save(proto, str(path))
    elif kind == "external-data":
        onnx.save(proto, str(path), save_as_external_data=True, location="w.data", size_threshold=0)
        (folder / "w.data").unlink()
    elif kind == "bad-metadata":
        for prop in proto.metadata_props:
            if prop.key == "attention_unet":
                prop.value = '{"model": {"depth": "x"}}'
        onnx.save(proto, str(path))
    elif kind == "device-link":
        path.symlink_to("/dev/zero")
    else:
        os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("custom-op", "uses operators outside the ONNX standard (my.ops)"),
        ("unknown-op", "ONNX Runtime cannot run it"),
        ("external-data", "its weights are in external data files"),
        ("bad-metadata", "the model's metadata is malformed (InputError: depth must be a whole number"),
        ("device-link", "not a regular file (a pipe, socket or device)"),
        ("fifo", "not a regular file (a pipe, socket or device)"),
    ],
)
def test_hostile_onnx_files_are_one_line(tmp_path: Path, tiny_model: Path, kind: str, expected: str, capsys) -> None:
    """ONNX files with a custom operator, external data or bad metadata were tracebacks; a link
    to /dev/zero read 2.3 GB and a FIFO hung: each is one line naming the file, exit 2."""
    assert main(["export", "--model", str(tiny_model), "--onnx", str(tmp_path / "good.onnx")]) == 0
    path = _hostile_onnx(kind, tmp_path / "good.onnx", tmp_path)
    _image(tmp_path / "a.png")
    capsys.readouterr()
    argv = ["predict", str(tmp_path / "a.png"), "--model", str(path), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{path.name}: {expected}" in err and "Traceback" not in err


def test_block_size_and_workers_beyond_the_machines_memory_are_one_line(
    tmp_path: Path, tiny_model: Path, monkeypatch, capsys
) -> None:
    """--block-size 16384 or --workers 32 were MemoryError tracebacks: block-wise prediction now
    estimates its peak (a window per worker at work) and refuses one that exceeds the machine."""
    from attention_unet.inference import blockwise

    tifffile.imwrite(tmp_path / "big.tif", np.tile(synthetic(2, (128, 128))[0], (8, 8)))  # 1024 x 1024
    base = ["predict", str(tmp_path / "big.tif"), "--model", str(tiny_model), "--blockwise", "always"]
    settings = blockwise.BlockSettings(block=256, workers=16)
    memory = (settings.memory(1024, 1024) + blockwise.BlockSettings(block=256).memory(1024, 1024)) / 2 / 0.9
    monkeypatch.setattr(blockwise, "machine_memory", lambda: int(memory))
    capsys.readouterr()
    argv = [*base, "--block-size", "256", "--workers", "16", "--out", str(tmp_path / "o")]
    assert main(argv) == 2  # its one file failed (a batch goes on past it)
    err = capsys.readouterr().err
    assert "big.tif: blocks of 256 px on 16 worker(s) need about" in err and "Traceback" not in err
    assert main([*base, "--block-size", "256", "--out", str(tmp_path / "o1")]) == 0


def test_running_out_of_memory_is_one_line(tmp_path: Path, tiny_model: Path, monkeypatch, capsys) -> None:
    from attention_unet.inference import pipeline

    def no_memory(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(pipeline.Predictor, "planned", no_memory)
    _image(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "--model", str(tiny_model), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "out of memory: give a smaller --block-size" in err and "Traceback" not in err


FUZZ_EXAMPLES = int(os.environ.get("ATTENTION_UNET_FUZZ_EXAMPLES", "40"))  # 300 for a local run


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True)
@given(
    st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
        min_size=1,
        max_size=80,
    ).filter(lambda name: name not in (".", ".."))
)
def test_fuzzed_file_names_are_segmented_or_one_line(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, stem: str
) -> None:
    """Any file name (control characters, spaces, leading dashes or dots, formula prefixes, right-to-
    left marks, names near the file system's length limit): predict segments it or says one line,
    writes only inside --out, and a rerun with --skip-existing finds its outputs."""
    import contextlib
    import io

    folder = tmp_path_factory.mktemp("names")
    path = folder / f"{stem}.png"
    try:
        _image(path)
    except OSError:  # the file system itself refuses the name (too long): nothing to predict
        return
    for extra in ([], ["--skip-existing"]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["predict", str(path), "--model", str(tiny_model), "--out", str(folder / "out"), *extra])
        assert code in (0, 1), err.getvalue()[-800:]
        assert "Traceback" not in err.getvalue()
    assert sorted(p.name for p in folder.iterdir()) == sorted([path.name, "out"])
    if code == 0:
        assert "(1 skipped: done by an earlier run)" in err.getvalue(), err.getvalue()[-400:]


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True)
@given(
    st.dictionaries(
        st.sampled_from(sorted(InferenceSettings.__dataclass_fields__)),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.lists(st.integers())),
        max_size=3,
    ),
    st.dictionaries(
        st.sampled_from(["width", "depth", "gate", "outputs", "in_channels", "norm"]),
        st.one_of(st.none(), st.integers(-3, 10**6), st.floats(), st.text(max_size=6)),
        max_size=2,
    ),
)
def test_fuzzed_model_metadata_through_predict(
    tmp_path_factory: pytest.TempPathFactory, inference: dict, network: dict
) -> None:
    """A model file whose stored settings and network description are fuzzed: predict segments
    with it or says one line naming the file (exit 2), never a traceback or a hang."""
    import contextlib
    import io
    import json

    from safetensors.torch import load_file, save_file

    from attention_unet.model import AttentionUNet, ModelConfig, save_model

    folder = tmp_path_factory.mktemp("meta")
    weights = save_model(AttentionUNet(ModelConfig(width=4, depth=2)).eval(), folder / "m", {"inference": inference})
    info = json.loads((folder / "m" / "config.json").read_text())
    info["model"].update(network)
    save_file(load_file(weights), str(weights), metadata={"attention_unet": json.dumps(info)})
    _image(folder / "a.png")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["predict", str(folder / "a.png"), "--model", str(weights), "--out", str(folder / "o")])
    assert code in (0, 2), err.getvalue()[-800:]
    assert "Traceback" not in err.getvalue()
