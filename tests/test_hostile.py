"""Hostile input and faults (issue "bounded memory for any file, nothing of the user's overwritten or
lost, one line and exit 2 for every bad option"): each numbered case of the issue, built here.

Cases that could exhaust memory run in a subprocess whose address space is capped (3 GB: torch and
a normal prediction fit in it; the 3.6 GB decodes the cases used to make do not), so a regression
fails the test instead of the machine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from attention_unet.cli import main
from attention_unet.io.outputs import OutputFolder

from .conftest import synthetic

CAP = 3 << 30


def capped(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``attention-unet ARGV`` in a process limited to CAP bytes of address space."""
    code = (
        f"import resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({CAP}, {CAP}));"
        "from attention_unet.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


def one_line(stderr: str) -> str:
    """The error line; there must be exactly one and no traceback."""
    lines = [line for line in stderr.splitlines() if "error" in line.lower() or "warning" in line.lower()]
    assert "Traceback" not in stderr, stderr[-2000:]
    assert len([line for line in lines if line.startswith("attention-unet: error:")]) <= 1, stderr
    return "\n".join(lines)


def tiff_bomb(path: Path, side: int = 60000) -> None:
    """A few-MB TIFF whose header declares side x side pixels (zero tiles, compressed once)."""
    blob = zlib.compress(np.zeros((1024, 1024), np.uint8).tobytes())
    n = -(-side // 1024)
    tifffile.imwrite(
        path, (blob for _ in range(n * n)), shape=(side, side), dtype=np.uint8, tile=(1024, 1024), compression="zlib"
    )


# ----------------------------------------------------------------- 1-5: memory from tiny files


def test_1_a_tiff_declaring_60000_squared_pixels_is_refused_from_its_header(tmp_path: Path, tiny_model: Path) -> None:
    tiff_bomb(tmp_path / "bomb.tif")
    assert (tmp_path / "bomb.tif").stat().st_size < 5 << 20
    result = capped(["predict", "bomb.tif", "--out", "out", "--model", str(tiny_model)], tmp_path)
    assert result.returncode == 2 and "60000 x 60000 pixels is above the limit" in one_line(result.stderr)
    with zipfile.ZipFile(tmp_path / "train.zip", "w") as archive:  # the same inside a training zip
        archive.write(tmp_path / "bomb.tif", "a/images/a.tif")
        archive.writestr("a/masks/m.png", b"")
    result = capped(["train", "--data", "train.zip", "--out", "run", "--epochs", "1"], tmp_path)
    assert result.returncode == 2 and "a.tif: 60000 x 60000 pixels" in one_line(result.stderr)


def test_the_pixel_limit_can_be_raised_or_lowered(tmp_path: Path, tiny_model: Path, capsys) -> None:
    iio.imwrite(tmp_path / "a.png", synthetic(0, (64, 64))[0])
    argv = ["predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--model", str(tiny_model)]
    assert main([*argv, "--max-pixels", "1000"]) == 2
    assert "64 x 64 pixels is above the limit of 1,000" in capsys.readouterr().err
    assert main([*argv, "--max-pixels", "5000"]) == 0
    os.environ.pop("ATTENTION_UNET_MAX_PIXELS", None)


@pytest.mark.parametrize("value", ["abc", "-5", "1e400"])
def test_a_bad_pixel_limit_in_the_environment_is_one_line(
    tmp_path: Path, tiny_model: Path, monkeypatch, capsys, value: str
) -> None:
    """Once, before any file (it was a warning and a failure for every file of the batch)."""
    monkeypatch.setenv("ATTENTION_UNET_MAX_PIXELS", value)
    iio.imwrite(tmp_path / "a.png", synthetic(0, (64, 64))[0])
    assert main(["predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--model", str(tiny_model)]) == 2
    assert (
        capsys.readouterr().err
        == f"attention-unet: error: ATTENTION_UNET_MAX_PIXELS must be a number of pixels, not '{value}'\n"
    )
    assert not (tmp_path / "o").exists()


def test_2_a_zip_entry_that_inflates_hugely_is_refused_unread(tmp_path: Path) -> None:
    image = tmp_path / "i.png"
    iio.imwrite(image, synthetic(0)[0])
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(image, "a/images/a.png")
        with archive.open("a/masks/m.png", "w", force_zip64=True) as entry:
            block = bytes(1 << 20)
            for _ in range(200):  # 200 MB of zeros, ~200 KB stored
                entry.write(block)
    assert (tmp_path / "bomb.zip").stat().st_size < 1 << 20
    result = capped(["train", "--data", "bomb.zip", "--out", "run", "--epochs", "1"], tmp_path)
    assert result.returncode == 2 and "m.png: inflates to 209,715,200 bytes" in one_line(result.stderr)


@pytest.mark.parametrize(("key", "value"), [("width", 1024), ("depth", 40)])
def test_3_model_metadata_that_describes_a_huge_network_is_refused_before_building_it(
    tmp_path: Path, tiny_model: Path, key: str, value: int
) -> None:
    from safetensors.torch import load_file

    info = json.loads((tiny_model / "config.json").read_text())
    info["model"][key] = value
    save_file(
        load_file(tiny_model / "model.safetensors"),
        tmp_path / "model.safetensors",
        metadata={"attention_unet": json.dumps(info)},
    )
    iio.imwrite(tmp_path / "a.png", synthetic(0)[0])
    result = capped(["predict", "a.png", "--out", "out", "--model", "model.safetensors"], tmp_path)
    assert result.returncode == 2
    assert ("does not match its weights" in result.stderr) or (
        f"{key} must be a whole number from 1 to" in result.stderr
    )
    one_line(result.stderr)


def test_4_a_200_page_tiff_is_read_one_plane_at_a_time(tmp_path: Path) -> None:
    blob = zlib.compress(np.zeros((2000, 2000), np.uint8).tobytes())
    tifffile.imwrite(
        tmp_path / "pages.tif",
        (blob for _ in range(200)),
        shape=(200, 2000, 2000),
        dtype=np.uint8,
        compression="zlib",
        rowsperstrip=2000,
    )
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30));"
        "from attention_unet.io.images import open_image;"
        "print(sum(1 for plane in open_image('pages.tif').planes()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0 and result.stdout.strip() == "200", result.stderr[-1000:]


def test_5_a_network_too_deep_for_the_machine_is_refused(tmp_path: Path, capsys) -> None:
    assert main(["train", "--preset", "small", "--depth", "9", "--out", str(tmp_path / "r")]) == 2
    assert "depth must be a whole number from 1 to 6, not 9" in capsys.readouterr().err
    assert (
        main(["train", "--preset", "seed", "--input", "crop:1024", "--batch-size", "512", "--out", str(tmp_path / "r")])
        == 2
    )
    assert "this training needs about" in capsys.readouterr().err and not (tmp_path / "r").exists()


# ------------------------------------------------------ 6-11: the user's files overwritten or lost


def test_6_the_users_own_files_are_never_replaced_nor_taken_for_inputs(
    tmp_path: Path, tiny_model: Path, capsys
) -> None:
    iio.imwrite(tmp_path / "cell.png", synthetic(0)[0])
    (tmp_path / "cell_mask.png").write_bytes(b"the user's own mask")
    assert main(["predict", str(tmp_path / "cell.png"), "--out", str(tmp_path), "--model", str(tiny_model)]) == 2
    assert (tmp_path / "cell_mask.png").read_bytes() == b"the user's own mask"
    assert "was not written by attention-unet" in capsys.readouterr().err
    folder = tmp_path / "own"
    folder.mkdir()
    iio.imwrite(folder / "a.png", synthetic(1)[0])
    for _ in range(2):  # the second run sees its own outputs and leaves them out
        assert main(["predict", str(folder), "--out", str(folder), "--model", str(tiny_model)]) == 0
    assert not list(folder.glob("*_mask_mask*")) and (folder / "a_mask.png").is_file()
    # a run into another folder leaves them out too (they are listed where they were written)
    capsys.readouterr()
    assert main(["predict", str(folder), "--out", str(tmp_path / "elsewhere"), "--model", str(tiny_model)]) == 0
    assert sorted(p.name for p in (tmp_path / "elsewhere").glob("*_labels.tif")) == ["a_labels.tif"]
    assert "left out 3 file(s) that earlier attention-unet runs wrote" in capsys.readouterr().err
    OutputFolder(folder).claim(folder / "b.partial")  # a block-wise run's work folder, left by a crash
    (folder / "b.partial").mkdir()
    iio.imwrite(folder / "b.partial" / "tile.png", synthetic(2)[0])
    assert main(["predict", str(folder), "--out", str(tmp_path / "third"), "--model", str(tiny_model)]) == 0
    assert "left out 4 file(s)" in capsys.readouterr().err
    assert main(["predict", "", "--out", str(tmp_path / "fourth"), "--model", str(tiny_model)]) == 2
    assert "an input is an empty path" in capsys.readouterr().err


def test_6_evaluate_and_train_leave_the_users_files_and_earlier_runs(
    tmp_path: Path, tiny_model: Path, tiny_dataset: Path, capsys
) -> None:
    out = tmp_path / "scores"
    out.mkdir()
    (out / "summary.json").write_text("the user's own summary")
    evaluate = ["evaluate", "--model", str(tiny_model), "--data", str(tiny_dataset), "--split", "all", "--no-strips"]
    assert main([*evaluate, "--out", str(out)]) == 2
    assert "summary.json: exists and was not written by attention-unet" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == "the user's own summary" and not (out / "score.csv").exists()
    for _ in range(2):  # its own files it replaces
        assert main([*evaluate, "--out", str(tmp_path / "again")]) == 0
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("the user's own config")
    assert main(["train", "--data", str(tiny_dataset), "--out", str(run), "--epochs", "1"]) == 2
    assert "holds files already; choose another --out" in capsys.readouterr().err
    assert main(["finetune", str(tiny_dataset), "--out", str(run), "--epochs", "1"]) == 2  # the same for finetune
    assert (run / "config.yaml").read_text() == "the user's own config"
    fresh = tmp_path / "fresh"  # a --resume with nothing to resume leaves nothing that blocks a new run
    assert main(["train", "--data", str(tiny_dataset), "--out", str(fresh), "--resume", "last"]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err
    assert not fresh.exists()


def test_6_a_damaged_or_unreadable_output_list_stops_nothing(tmp_path: Path) -> None:
    from attention_unet.io.outputs import MANIFEST, written_by_a_run

    iio.imwrite(tmp_path / "a.png", synthetic(0)[0])
    (tmp_path / MANIFEST).write_bytes(b"b.png\n\xff\xfe damaged\n")  # not UTF-8
    assert not written_by_a_run(tmp_path / "a.png") and written_by_a_run(tmp_path / "b.png")
    (tmp_path / MANIFEST).unlink()
    (tmp_path / MANIFEST).mkdir()  # reading it raises an OSError, as a permission error would
    assert not written_by_a_run(tmp_path / "a.png")


def test_6b_a_damaged_output_list_in_out_is_still_ours(tmp_path: Path, tiny_model: Path) -> None:
    """--out's own list damaged (not UTF-8, no end to its last line): predicting into it works, and
    again, replacing its own outputs (it had stopped with a UnicodeDecodeError traceback)."""
    from attention_unet.io.outputs import MANIFEST, listed

    out, images = tmp_path / "out", tmp_path / "in"
    images.mkdir()
    argv = ["predict", str(images), "--out", str(out), "--model", str(tiny_model)]
    for name in "ab":
        iio.imwrite(images / f"{name}.png", synthetic(0)[0])
        assert main(argv) == 0  # a alone, then a and b: b's outputs are listed after the damage
        if name == "a":
            with open(out / MANIFEST, "ab") as f:
                f.write(b"\xff\xfe damaged")
    assert main(argv) == 0  # b's outputs are still known as its own, so replaced
    # the damaged last line was ended before the next entry (a's or b's: images run side by side), not joined to it
    assert "b_labels.tif" in listed(out) and re.search(rb"damaged\n[ab]_", (out / MANIFEST).read_bytes())


def test_7_inputs_sharing_a_stem_get_distinct_outputs(tmp_path: Path, tiny_model: Path) -> None:
    for folder, suffix in (("d1", ".png"), ("d1", ".tif"), ("d2", ".png")):
        (tmp_path / folder).mkdir(exist_ok=True)
        iio.imwrite(tmp_path / folder / f"x{suffix}", synthetic(2)[0])
    out = tmp_path / "out"
    assert (
        main(["predict", str(tmp_path / "d1"), str(tmp_path / "d2"), "--out", str(out), "--model", str(tiny_model)])
        == 0
    )
    assert sorted(p.name for p in out.glob("*_labels.tif")) == ["x_2_labels.tif", "x_3_labels.tif", "x_labels.tif"]
    rows = (out / "summary.csv").read_text().splitlines()[1:]
    assert len({row.split(",")[1] for row in rows}) == 3


def test_8_a_second_run_into_the_same_folder_is_refused(tmp_path: Path, tiny_model: Path, capsys) -> None:
    iio.imwrite(tmp_path / "a.png", synthetic(0)[0])
    holder = OutputFolder(tmp_path / "out")
    holder.lock()
    assert main(["predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--model", str(tiny_model)]) == 2
    assert "another attention-unet run is writing there" in capsys.readouterr().err
    holder.release()


def test_9_an_interrupted_write_leaves_nothing_that_looks_complete(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path)

    def dies(path: Path) -> None:
        path.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        folder.write(tmp_path / "x_overlay.png", dies)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no partial file, no 0-byte output


def test_9_a_stopped_run_continues_with_what_is_missing(tmp_path: Path, tiny_model: Path) -> None:
    for k in range(3):
        iio.imwrite(tmp_path / f"i{k}.png", synthetic(k)[0])
    out = tmp_path / "out"
    argv = ["predict", *(str(tmp_path / f"i{k}.png") for k in range(3)), "--out", str(out), "--model", str(tiny_model)]
    assert main(argv) == 0
    (out / "i1_nuclei.csv").unlink()  # as if stopped before i1 was finished
    before = (out / "i0_labels.tif").stat().st_mtime_ns
    assert main([*argv, "--skip-existing"]) == 0
    assert (out / "i1_nuclei.csv").is_file() and (out / "i0_labels.tif").stat().st_mtime_ns == before
    assert len((out / "summary.csv").read_text().splitlines()) == 4


def test_10_resume_restores_the_runs_options_and_keeps_every_metric_row(
    tiny_dataset: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    tiny = ["--preset", "small", "--width", "4", "--depth", "2", "--batch-size", "4"]
    assert main(["train", "--data", str(tiny_dataset), *tiny, "--epochs", "1", "--out", str(run)]) == 0
    assert (
        main(["train", "--out", str(run), "--resume", "--epochs", "2"]) == 0
    )  # the README's command, with a longer budget
    assert "width: 4" in (run / "config.yaml").read_text() and "epochs: 2" in (run / "config.yaml").read_text()
    # an interrupted resume's rows are kept too: set metrics aside as a killed resume leaves them
    (run / "metrics.csv").rename(run / "metrics.before-resume.csv")
    (run / "metrics.csv").write_text("epoch,step,train_loss_epoch\n1,99,0.5\n")
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3"]) == 0
    epochs = [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert {"0", "1", "2"} <= set(epochs)
    assert main(["train", "--out", str(run), "--resume", "--width", "8"]) == 2
    assert "--width 8 differs from its 4" in capsys.readouterr().err


def test_11b_a_cache_that_cannot_be_written_stops_nothing(
    tiny_dataset: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """The cache only saves time: a cache folder that cannot be made (here under a file, as a
    read-only or full disk would refuse it) is a warning, and the records come all the same."""
    from attention_unet.io import data

    (tmp_path / "file").write_text("")
    monkeypatch.setenv("ATTENTION_UNET_CACHE", str(tmp_path / "file" / "cache"))
    records = data.load_records(tiny_dataset)
    assert [r.id for r in records] == [r.id for r in data.load_records(tiny_dataset, use_cache=False)]
    assert "warning: cannot write the dataset cache" in capsys.readouterr().err

    def disk_full(*args, **kwargs) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setenv("ATTENTION_UNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(np, "savez", disk_full)
    assert len(data.load_records(tiny_dataset)) == len(records)
    assert "No space left on device" in capsys.readouterr().err
    assert not list((tmp_path / "cache").iterdir())  # no partial file left to fill the disk further


def test_11_a_damaged_or_tampered_cache_is_rebuilt_with_a_warning(
    tiny_dataset: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from attention_unet.io import data

    monkeypatch.setenv("ATTENTION_UNET_CACHE", str(tmp_path / "cache"))
    first = data.load_records(tiny_dataset)
    (cache,) = (tmp_path / "cache").glob("*.npz")
    cache.write_bytes(cache.read_bytes()[:100])  # truncated
    again = data.load_records(tiny_dataset)
    assert "damaged dataset cache" in capsys.readouterr().err
    assert all((a.labels == b.labels).all() for a, b in zip(first, again))
    with np.load(cache) as z:  # valid, but not what was written
        arrays = {k: z[k] for k in z.files}
    arrays[next(k for k in arrays if k.endswith("/labels"))][:] = 0
    np.savez(cache, **arrays)
    assert all((a.labels == b.labels).all() for a, b in zip(first, data.load_records(tiny_dataset)))
    assert "checksum does not match" in capsys.readouterr().err


# --------------------------------------------------------------------- 12-14: silent wrong results


def test_12_a_nan_pixel_does_not_blank_the_image(tmp_path: Path) -> None:
    from attention_unet.io.data import normalise, to_rgb

    image = synthetic(3, (64, 64))[0].astype(np.float32)
    broken = image.copy()
    broken[5, 5] = np.nan
    assert np.allclose(
        normalise(to_rgb(broken), "percentile")[6:, 6:], normalise(to_rgb(image), "percentile")[6:, 6:], atol=0.02
    )


def test_13_bool_complex_and_planar_rgb_tiffs(tmp_path: Path, tiny_model: Path, capsys) -> None:
    image = synthetic(4, (64, 64))[0]
    tifffile.imwrite(tmp_path / "bits.tif", image > 100)
    tifffile.imwrite(tmp_path / "complex.tif", image.astype(np.complex64))
    tifffile.imwrite(tmp_path / "planar.tif", np.stack([image] * 3), photometric="rgb", planarconfig="separate")
    assert main(["predict", str(tmp_path), "--out", str(tmp_path / "out"), "--model", str(tiny_model)]) == 1
    assert "complex.tif: pixels of type complex64 are not an image's" in capsys.readouterr().err
    assert {p.name for p in (tmp_path / "out").glob("*_labels.tif")} == {"bits_labels.tif", "planar_labels.tif"}


def test_14_a_symlink_loop_is_walked_once(tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "in" / "a").mkdir(parents=True)
    iio.imwrite(tmp_path / "in" / "a" / "x.png", synthetic(5)[0])
    (tmp_path / "in" / "a" / "back").symlink_to(tmp_path / "in")
    assert main(["predict", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", str(tiny_model)]) == 0
    assert len((tmp_path / "out" / "summary.csv").read_text().splitlines()) == 2


# ------------------------------------------------------------ 15-17: one line and exit 2, not a traceback


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--epochs", "-1"], "--epochs must lie between 1"),
        (["train", "--epochs", "0"], "--epochs must lie between 1"),
        (["train", "--max-minutes", "-1"], "--max-minutes must lie between 0"),
        (["train", "--batch-size", "0"], "--batch-size must lie between 1"),
        (["train", "--batch-size", "-2"], "--batch-size must lie between 1"),
        (["train", "--lr", "-1"], "--lr must lie between"),
        (["train", "--lr", "nan"], "--lr must lie between"),
        (["train", "--lr", "0"], "--lr must lie between"),
        (["train", "--scale", "0", "0"], "--scale must lie between"),
        (["train", "--samples-per-epoch", "-5"], "--samples-per-epoch must lie between 0"),
        (["predict", "IMAGE", "--tile", "0"], "--tile must be a whole number of pixels from 32"),
        (["predict", "IMAGE", "--tile", "-5"], "--tile must be"),
        (["predict", "IMAGE", "--tile", "7"], "--tile must be"),
        (["predict", "IMAGE", "--batch-size", "0"], "--batch-size must be a whole number from 1"),
        (["predict", "IMAGE", "--device", "cuda"], "--device cuda: not available on this machine"),
        (["predict", "IMAGE", "--scale", "1e6"], "--scale must be 'auto' or a number above 0 and at most 8"),
        (["predict", "IMAGE", "--scale", "0"], "--scale must be"),
        (["predict", "IMAGE", "--threshold", "2"], "--threshold must lie between 0 and 1"),
        (["predict", "IMAGE", "--min-size", "-1"], "--min-size must be 0 or more"),
        (["predict", "IMAGE", "--diameter", "1e-9"], "--diameter must be at least 2 pixels"),
    ],
)
def test_15_bad_options_are_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, tiny_model: Path, capsys
) -> None:
    if argv[0] == "predict":
        iio.imwrite(tmp_path / "a.png", synthetic(0)[0])
        argv = ["predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--model", str(tiny_model), *argv[2:]]
    else:
        argv = [*argv, "--out", str(tmp_path / "run"), "--preset", "small"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_15_a_yaml_option_of_the_wrong_type_is_named(tmp_path: Path, capsys) -> None:
    (tmp_path / "c.yaml").write_text("epochs: ten\n")
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "option epochs: 'ten' is not a whole number" in capsys.readouterr().err


def broken_models(folder: Path, tiny_model: Path) -> dict[str, Path]:
    from safetensors.torch import load_file

    tensors = load_file(tiny_model / "model.safetensors")
    info = json.loads((tiny_model / "config.json").read_text())
    paths = {name: folder / f"{name}.safetensors" for name in ("random", "bare", "malformed", "mismatch")}
    paths["random"].write_bytes(np.random.default_rng(0).bytes(5000))
    save_file(tensors, paths["bare"])
    save_file(tensors, paths["malformed"], metadata={"attention_unet": "{not json"})
    save_file(
        tensors,
        paths["mismatch"],
        metadata={"attention_unet": json.dumps({**info, "model": {**info["model"], "width": 8}})},
    )
    paths["onnx"] = folder / "garbage.onnx"
    paths["onnx"].write_bytes(b"\x08\x01garbage" * 50)
    return paths


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("random", "not a readable safetensors model file"),
        ("bare", "not an attention-unet model"),
        ("malformed", "the model's metadata is malformed"),
        ("mismatch", "does not match its weights"),
        ("onnx", "not a readable ONNX file"),
    ],
)
def test_16_broken_model_files_are_one_line(tmp_path: Path, tiny_model: Path, name: str, message: str, capsys) -> None:
    path = broken_models(tmp_path, tiny_model)[name]
    iio.imwrite(tmp_path / "a.png", synthetic(0)[0])
    assert main(["predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--model", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and str(path) in err


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing", "no such model file or folder"),
        ("folder", "no model.safetensors found"),
        ("onnx", "an ONNX export; this needs the model.safetensors it was exported from"),
        ("checkpoint", "a training checkpoint (for --resume); give the run folder"),
        ("random", "not a readable safetensors model file"),
    ],
)
def test_16b_finetune_from_a_broken_model_is_one_line(
    tmp_path: Path, tiny_model: Path, name: str, message: str, capsys
) -> None:
    """The path once, the problem once (it had read "--init-from X: X: ..." under finetune's --model)."""
    paths = broken_models(tmp_path, tiny_model)
    paths["missing"], paths["folder"], paths["checkpoint"] = tmp_path / "nothere", tmp_path, tmp_path / "last.ckpt"
    paths["checkpoint"].write_bytes(b"PK\x03\x04 a zip of pickles: never opened")
    data = tmp_path / "data"
    for part in ("images", "masks"):
        (data / part).mkdir(parents=True)
        iio.imwrite(data / part / "a.png", synthetic(0)[part == "masks"].astype(np.uint8))
    argv = ["finetune", str(data), "--model", str(paths[name]), "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.count(str(paths[name])) == 1 and message in err
    assert not (tmp_path / "run").exists()


def test_17_outputs_and_inputs_that_cannot_work(tmp_path: Path, tiny_model: Path, capsys) -> None:
    iio.imwrite(tmp_path / "a.png", synthetic(0)[0])
    (tmp_path / "file").write_text("")
    assert main(["predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "file"), "--model", str(tiny_model)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["export", "--model", str(tiny_model), "--torchscript", str(tmp_path / "missing" / "m.pt")]) == 0
    # export replaces its own files, never the user's (checked before anything is written)
    export = ["export", "--model", str(tiny_model), "--onnx", str(tmp_path / "m.onnx")]
    assert main([*export, "--torchscript", str(tmp_path / "missing" / "m.pt")]) == 0
    (tmp_path / "mine.pt").write_text("the user's notes")
    (tmp_path / "mine.onnx").write_text("the user's notes")
    for argv in (
        [
            "export",
            "--model",
            str(tiny_model),
            "--onnx",
            str(tmp_path / "new.onnx"),
            "--torchscript",
            str(tmp_path / "mine.pt"),
        ],
        ["export", "--model", str(tiny_model), "--onnx", str(tmp_path / "mine.onnx")],
    ):
        capsys.readouterr()
        assert main(argv) == 2
        assert "is no model attention-unet exported; not replacing it" in capsys.readouterr().err
    assert (tmp_path / "mine.pt").read_text() == (tmp_path / "mine.onnx").read_text() == "the user's notes"
    assert not (tmp_path / "new.onnx").exists()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    for bad in ("empty.png", "text.png"):
        assert main(["predict", str(tmp_path / bad), "--out", str(tmp_path / "o2"), "--model", str(tiny_model)]) == 2
        err = capsys.readouterr().err
        assert f"{bad}: cannot read image" in err and "pyav" not in err


# ------------------------------------------------------------------------------ fuzzing main()


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    option=st.sampled_from(
        [
            "--tile",
            "--batch-size",
            "--scale",
            "--threshold",
            "--diameter",
            "--min-size",
            "--channel",
            "--pixel-size",
            "--axes",
        ]
    ),
    value=st.one_of(
        st.integers(-(10**9), 10**9).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(str),
        st.text(max_size=8),
    ),
    payload=st.binary(max_size=300),
)
def test_random_options_and_bytes_never_give_a_traceback(
    tmp_path_factory: pytest.TempPathFactory, option: str, value: str, payload: bytes
) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "junk.png").write_bytes(payload)
    (folder / "junk.safetensors").write_bytes(payload)
    iio.imwrite(folder / "a.png", synthetic(0, (40, 40))[0])
    for argv in (
        ["predict", str(folder / "a.png"), "--out", str(folder / "o"), "--model", str(folder / "junk.safetensors")],
        [
            "predict",
            str(folder / "junk.png"),
            str(folder / "a.png"),
            "--out",
            str(folder / "o"),
            "--tile",
            "32",
            option,
            value,
        ],
    ):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code
        assert code in (0, 1, 2)


def test_a_file_whose_outputs_cannot_be_written_mid_batch_is_reported_and_the_batch_goes_on(
    tmp_path: Path, tiny_model: Path, capsys
) -> None:
    """The user's own file under one output's name of the second of three files: that file
    fails (the user's file untouched), the files around it finish, and summary.csv lists them in
    input order."""
    import csv

    folder = tmp_path / "in"
    folder.mkdir()
    for k, name in enumerate(("a", "b", "c")):
        iio.imwrite(folder / f"{name}.png", synthetic(k)[0])
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_overlay.png").write_bytes(b"the user's own overlay")
    assert main(["predict", str(folder), "--out", str(out), "--model", str(tiny_model)]) == 1
    err = capsys.readouterr().err
    assert "b_overlay.png: exists and was not written by attention-unet" in err
    assert "1 file(s) failed: " in err and str(folder / "b.png") in err
    assert (out / "b_overlay.png").read_bytes() == b"the user's own overlay"
    assert (out / "a_nuclei.csv").is_file() and (out / "c_nuclei.csv").is_file()
    with open(out / "summary.csv", newline="") as f:
        assert [Path(row["input"]).name for row in csv.DictReader(f)] == ["a.png", "c.png"]
