"""Block-wise prediction (blockwise.py): the same nuclei as a whole-image pass, none split at a
block border, the same labels on a dask.distributed cluster, zarr in and out, resumption."""

import contextlib
import json
import os
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr

from attention_unet.cli import main
from attention_unet.inference import blockwise
from attention_unet.io import data

from .conftest import disks, fragments_and_large_nuclei, fragments_predictor, sure_below

SAMPLE = Path(data.SAMPLE_DIR) / "images"


def sample_mosaic(size: int, offset: int = 128) -> np.ndarray:
    """A size x size grey image of real nuclei: the sample's 256 x 256 fluorescence images side by
    side, from ``offset`` pixels into the first (so that block borders cut through nuclei, not
    along the seams between the images)."""
    tiles = []
    for path in sorted(SAMPLE.glob("*.png")):
        image = data.to_rgb(iio.imread(path))
        if image.shape[:2] == (256, 256) and (image[..., 0] == image[..., 2]).all() and np.median(image) < 60:
            tiles.append(image[..., 0])
    n = -(-(size + offset) // 256)
    rows = [np.concatenate([tiles[(i * n + j) % len(tiles)] for j in range(n)], axis=1) for i in range(n)]
    return np.concatenate(rows, axis=0)[offset : offset + size, offset : offset + size]


def read_zarr_labels(path: Path) -> np.ndarray:
    return np.asarray(zarr.open_group(path, mode="r")["0"])


def best_iou(whole: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """For each nucleus of ``whole``, the IoU with the ``blocks`` nucleus that overlaps it most."""
    from skimage.metrics import contingency_table

    table = contingency_table(whole, blocks).tocsr()
    area_w, area_b = np.bincount(whole.ravel()), np.bincount(blocks.ravel(), minlength=int(blocks.max()) + 1)
    ious = np.zeros(int(whole.max()))
    for label in range(1, int(whole.max()) + 1):
        row = table.getrow(label)
        found = row.indices > 0
        if found.any():
            k = np.argmax(row.data[found])
            j, inter = row.indices[found][k], row.data[found][k]
            ious[label - 1] = inter / (area_w[label] + area_b[j] - inter)
    return ious


def test_blockwise_matches_the_whole_image_on_3000_pixels_of_real_nuclei(tmp_path: Path) -> None:
    image = sample_mosaic(3000)
    tifffile.imwrite(tmp_path / "big.tif", image, tile=(512, 512), bigtiff=True, compression="zlib")
    common = [str(tmp_path / "big.tif"), "--scale", "1", "--no-tta"]
    assert main(["predict", *common, "--out", str(tmp_path / "whole"), "--blockwise", "never"]) == 0
    assert (
        main(["predict", *common, "--out", str(tmp_path / "blocks"), "--blockwise", "always", "--block-size", "1024"])
        == 0
    )
    whole = tifffile.imread(tmp_path / "whole" / "big_labels.tif").astype(np.int64)
    blocks = read_zarr_labels(tmp_path / "blocks" / "big_labels.zarr").astype(np.int64)
    assert not (tmp_path / "blocks" / "big.partial").exists()  # the work folder is gone once done
    assert whole.max() > 2000  # real nuclei, found
    ious = best_iou(whole, blocks)
    assert (ious >= 0.9).mean() >= 0.99
    # no nucleus split along a block border: each block-wise nucleus crossing a border line is one
    # whole-image nucleus's partner on both sides
    for line in (1024, 2048):
        for w, b in (
            (whole[line - 1 : line + 1], blocks[line - 1 : line + 1]),
            (whole[:, line - 1 : line + 1].T, blocks[:, line - 1 : line + 1].T),
        ):
            crossing = (w[0] > 0) & (w[0] == w[1])  # one whole-image nucleus on both sides of the line
            assert crossing.sum() > 50
            assert (b[0][crossing] != b[1][crossing]).sum() <= 0.01 * crossing.sum()
    table = (tmp_path / "blocks" / "big_nuclei.csv").read_text().splitlines()
    assert len(table) - 1 == blocks.max()  # one row per nucleus, labels 1..n
    header = table[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in table[1:]]
    areas = np.bincount(blocks.ravel())[1:]
    assert [int(r["area"]) for r in rows] == areas.tolist()


def test_blockwise_smooths_sharp_stained_tissue_as_the_whole_image_does(tmp_path: Path) -> None:
    """The sample's stained images side by side, made grainy (sharp, as 40x H&E scans are): the
    shipped model's rule smooths them, decided once on the mosaic; block-wise the nuclei are the
    whole-image pass's, and both differ from the unsmoothed result."""
    tiles = [
        image
        for image in (data.to_rgb(iio.imread(path)) for path in sorted(SAMPLE.glob("*.png")))
        if data.modality(image) == "stained"
    ]
    tiles = [t[:256, :256] for t in tiles if t.shape[0] >= 256 and t.shape[1] >= 256]
    row = np.concatenate([tiles[i % len(tiles)] for i in range(4)], axis=1)
    mosaic = np.concatenate([np.roll(row, 256 * k, axis=1) for k in range(4)], axis=0)[:1000, :1000]
    grain = np.random.default_rng(0).normal(0, 12, mosaic.shape[:2])[..., None]
    image = np.clip(mosaic + grain, 0, 255).astype(np.uint8)
    assert data.modality(image) == "stained" and data.sharpness(data.central(image), "polarity") > 0.025
    tifffile.imwrite(tmp_path / "he.tif", image, tile=(256, 256))
    args = ["predict", str(tmp_path / "he.tif"), "--model", "nuclei", "--scale", "1", "--no-tta"]
    assert main([*args, "--out", str(tmp_path / "whole"), "--blockwise", "never"]) == 0
    assert main([*args, "--out", str(tmp_path / "plain"), "--blockwise", "never", "--smoothing", "0"]) == 0
    assert main([*args, "--out", str(tmp_path / "blocks"), "--blockwise", "always", "--block-size", "512"]) == 0
    whole = tifffile.imread(tmp_path / "whole" / "he_labels.tif").astype(np.int64)
    plain = tifffile.imread(tmp_path / "plain" / "he_labels.tif").astype(np.int64)
    blocks = read_zarr_labels(tmp_path / "blocks" / "he_labels.zarr").astype(np.int64)
    assert whole.max() > 100
    assert (best_iou(whole, blocks) >= 0.9).mean() >= 0.99
    assert (best_iou(whole, plain) >= 0.9).mean() < 0.9


def scale_on_mosaic_and_whole(path: Path, predictor) -> tuple[float, tuple[float, float | None, float | None]]:
    """(the factor that ``blockwise.prepare`` gives the job for the one-channel image at ``path``,
    the whole image's ``Predictor.sizing``), after checking that the job's factor is the one
    ``Predictor.choose`` picks on the whole image."""
    from attention_unet.inference.engine import load_predictor

    source = blockwise.open_lazy(path)
    job = blockwise.prepare(
        source,
        work=path.parent / "work",
        predictor=predictor,
        loader=load_predictor,
        recipe={},
        settings=blockwise.BlockSettings(),
    )
    image = np.dstack([source.open()[:]] * 3)
    value_range = data.normalisation_range(image, "percentile")
    sizing = predictor.policy.sizing(image, predictor.network(value_range))
    assert job.factor == pytest.approx(predictor.choose(image, value_range, sizing)[0].factor)
    return job.factor, sizing


@pytest.mark.parametrize("width", [48, 200])
def test_blockwise_takes_auto_scales_second_pass_as_the_whole_image_does(tmp_path: Path, width: int) -> None:
    """The half-size pass of auto scale (``Predictor.choose``) is decided once, on the
    mosaic (here the whole 128-px image): the job's factor is the whole-image choice."""
    from attention_unet.inference.pipeline import make_predictor

    centres = [(y, x) for y in (24, 64, 104) for x in (24, 64, 104)]
    tifffile.imwrite(tmp_path / "disks.tif", (disks((128, 128), centres, 20) > 0).astype(np.uint8) * 200)
    predictor = make_predictor(sure_below(width), "percentile", tile=128, scale="auto", min_area=1, shrink_above=1.5)
    scale, (factor, _, _) = scale_on_mosaic_and_whole(tmp_path / "disks.tif", predictor)
    assert scale == pytest.approx(factor / 2 if width == 48 else factor)


def test_blockwise_outlines_are_those_of_the_stitched_labels(tmp_path: Path) -> None:
    """--rois / --geojson on a block-wise image: one outline per row of the table, each the outline
    of that label in the stitched labels (traced per block, where the nucleus is whole)."""
    import roifile

    from attention_unet.io.measure import outlines

    tifffile.imwrite(tmp_path / "big.tif", sample_mosaic(1100), tile=(256, 256))
    args = ["predict", str(tmp_path / "big.tif"), "--scale", "1", "--no-tta", "--out", str(tmp_path / "out")]
    assert main([*args, "--blockwise", "always", "--block-size", "512", "--rois", "--geojson"]) == 0
    labels = read_zarr_labels(tmp_path / "out" / "big_labels.zarr")
    features = json.loads((tmp_path / "out" / "big_nuclei.geojson").read_text())["features"]
    rows = (tmp_path / "out" / "big_nuclei.csv").read_text().splitlines()[1:]
    assert len(features) == len(rows) == labels.max() > 200
    assert len(roifile.roiread(tmp_path / "out" / "big_rois.zip")) == labels.max()
    expected = outlines(labels.astype(np.int64))
    for feature in features:
        label = feature["properties"]["label"]
        ring = np.array(feature["geometry"]["coordinates"][0])[:-1]
        np.testing.assert_allclose(ring, expected[label], atol=1e-3)
        assert feature["properties"]["measurements"]["area"] == (labels == label).sum()


@pytest.mark.parametrize("shape", [(600, 700), (5, 5)])
def test_an_image_without_nuclei_gives_empty_labels_block_wise(tmp_path: Path, shape: tuple[int, int]) -> None:
    tifffile.imwrite(tmp_path / "blank.tif", np.full(shape, 20, np.uint8))
    args = ["predict", str(tmp_path / "blank.tif"), "--scale", "1", "--no-tta", "--out", str(tmp_path / "out")]
    assert main([*args, "--blockwise", "always", "--block-size", "256"]) == 0
    labels = read_zarr_labels(tmp_path / "out" / "blank_labels.zarr")
    assert labels.shape == shape and not labels.any()
    assert len((tmp_path / "out" / "blank_nuclei.csv").read_text().splitlines()) == 1  # the header alone


def test_a_dask_cluster_gives_the_labels_of_the_local_run(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    tifffile.imwrite(tmp_path / "img.tif", sample_mosaic(1100), tile=(256, 256))
    common = [str(tmp_path / "img.tif"), "--blockwise", "always", "--block-size", "512", "--scale", "1", "--no-tta"]
    assert main(["predict", *common, "--out", str(tmp_path / "local")]) == 0
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        code = main(
            ["predict", *common, "--out", str(tmp_path / "cluster"), "--dask-scheduler", cluster.scheduler_address]
        )
    assert code == 0
    local = read_zarr_labels(tmp_path / "local" / "img_labels.zarr")
    remote = read_zarr_labels(tmp_path / "cluster" / "img_labels.zarr")
    assert local.max() > 100
    np.testing.assert_array_equal(local, remote)


def test_an_interrupted_run_continues_with_the_blocks_not_done(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "img.tif", rng.integers(0, 255, (700, 900), np.uint8), tile=(256, 256))
    args = ["predict", str(tmp_path / "img.tif"), "--model", str(tiny_model), "--blockwise", "always"]
    args += ["--block-size", "256", "--scale", "1", "--out", str(tmp_path / "out")]
    calls = []
    real = blockwise.instance_block

    def stop_after_two(job: blockwise.Job, y: int, x: int) -> dict:
        calls.append((y, x))
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(job, y, x)

    monkeypatch.setattr(blockwise, "instance_block", stop_after_two)
    assert main(args) == 130  # interrupted
    assert not (tmp_path / "out" / "img_labels.zarr").exists()  # nothing that looks finished
    work = tmp_path / "out" / "img.partial"
    assert len(list((work / "done").glob("prob-*"))) == 12  # 3 x 4 blocks of probabilities kept
    monkeypatch.setattr(blockwise, "instance_block", real)
    predicted = []
    monkeypatch.setattr(
        blockwise.Predictor,
        "window_probabilities",
        lambda self, *a, **k: predicted.append(1) or pytest.fail("a finished block was predicted again"),
    )
    # continued with --geojson: the blocks whose tables were saved without outlines are redone
    assert main([*args, "--geojson"]) == 0
    assert not predicted and not work.exists()
    labels = read_zarr_labels(tmp_path / "out" / "img_labels.zarr")
    features = json.loads((tmp_path / "out" / "img_nuclei.geojson").read_text())["features"]
    assert labels.max() > 0 and sorted(f["properties"]["label"] for f in features) == list(range(1, labels.max() + 1))
    monkeypatch.undo()
    assert main([*args[:-1], str(tmp_path / "fresh")]) == 0
    np.testing.assert_array_equal(labels, read_zarr_labels(tmp_path / "fresh" / "img_labels.zarr"))


def test_ome_zarr_in_and_out(tmp_path: Path, tiny_model: Path) -> None:
    rng = np.random.default_rng(1)
    group = zarr.open_group(tmp_path / "in.ome.zarr", mode="w", attributes=blockwise.ome_attributes(0.5, "cyx"))
    group.create_array("0", shape=(2, 300, 400), chunks=(1, 128, 128), dtype="uint16")
    group["0"][:] = rng.integers(0, 4000, (2, 300, 400))
    out = tmp_path / "out"
    args = ["predict", str(tmp_path), "--model", str(tiny_model), "--out", str(out), "--block-size", "512"]
    assert main([*args, "--channel", "1", "--save-prob"]) == 0
    labels = zarr.open_group(out / "in_labels.zarr", mode="r")
    assert labels["0"].shape == (300, 400) and labels["0"].dtype == np.uint32
    assert labels.attrs["ome"]["multiscales"][0]["axes"][0]["unit"] == "micrometer"
    assert zarr.open_group(out / "in_prob.zarr", mode="r")["0"].shape[1:] == (300, 400)
    assert (out / "in_nuclei.csv").is_file()
    assert main(args) == 2  # two channels and no --channel: one line, nothing else


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--block-size", "1000"], "multiple of the chunk size"),
        (["--halo", "-1"], "--halo must be a whole number of pixels, 0 or more, not -1"),
        (
            ["--block-size", "200"],
            r"--block-size 200 is narrower than the margins .* \(--halo 256, .* give at least 256",
        ),
        (["--block-size", "64", "--halo", "0"], r"network's context 96\): give at least 96"),
        (["--workers", "0"], "--workers"),
    ],
)
def test_bad_block_options_are_one_line(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((64, 64), np.uint8))
    code = main(
        ["predict", str(tmp_path / "img.tif"), "--model", str(tiny_model), "--out", str(tmp_path / "o"), *extra]
    )
    err = capsys.readouterr().err
    assert code == 2 and re.search(message, err) and err.count("\n") == 1


def test_a_stack_or_a_bare_zarr_group_is_one_line(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture
) -> None:
    zarr.open_group(tmp_path / "bare.zarr", mode="w").create_array("x", shape=(10, 10), dtype="uint8")
    stack = zarr.open_group(tmp_path / "stack.zarr", mode="w", attributes=blockwise.ome_attributes(None, "zyx"))
    stack.create_array("0", shape=(3, 64, 64), dtype="uint8")
    for name, message in (("bare.zarr", "multiscales"), ("stack.zarr", "stack")):
        code = main(["predict", str(tmp_path / name), "--model", str(tiny_model), "--out", str(tmp_path / "o")])
        assert code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("weak", [0.7, 1.0])
def test_blockwise_takes_the_large_pieces_size_as_the_whole_image_does(tmp_path: Path, weak: float) -> None:
    """Where the fragments rule is undecided, the choice between the median's and the large
    pieces' size (``Predictor.choose``) is made once, on the mosaic (the whole image here),
    with the diameter it stands for: the job's factor is the whole-image choice."""
    from attention_unet.inference.plan import factor_for_diameter

    tifffile.imwrite(tmp_path / "nuclei.tif", fragments_and_large_nuclei(3)[..., 0])
    predictor = fragments_predictor(sure_below(200, weak), tile=512)
    scale, (_, _, large) = scale_on_mosaic_and_whole(tmp_path / "nuclei.tif", predictor)
    assert large is not None
    assert scale == pytest.approx(factor_for_diameter(large, 16) if weak < 1 else 1.0)


def test_one_colour_reads_as_its_grey_and_channel_picks_a_colour(tmp_path: Path) -> None:
    """Block by block as for a whole image (data.signal_channel): the shipped model finds in the
    sample's nuclei shown in blue what it finds in them in grey (it found none: the network learnt
    fluorescence in grey); and --channel on an RGB TIFF picks a colour (it was refused block-wise)."""
    sample = iio.imread(SAMPLE / "05040e2e959c3f5632558fc9683fec88f0010026c555b499066346f67fdd0e13.png")
    image = np.tile(sample if sample.ndim == 2 else sample[..., 0], (2, 2))  # grey, 512 x 512
    blue = np.zeros((*image.shape, 3), np.uint8)
    blue[..., 2] = image
    tifffile.imwrite(tmp_path / "grey.tif", image, tile=(128, 128))
    tifffile.imwrite(tmp_path / "blue.tif", blue, tile=(128, 128), photometric="rgb")
    common = ["--blockwise", "always", "--block-size", "256", "--halo", "96", "--scale", "1", "--no-tta"]
    labels = {}
    for name, extra in (("grey", []), ("blue", []), ("blue", ["--channel", "2"])):
        out = tmp_path / f"{name}{len(extra)}"
        assert main(["predict", str(tmp_path / f"{name}.tif"), "--out", str(out), *common, *extra]) == 0
        labels[out.name] = read_zarr_labels(out / f"{name}_labels.zarr")
        assert labels[out.name].max() > 50 and np.array_equal(labels[out.name], labels["grey0"])


def test_a_replaced_input_restarts_an_interrupted_run_instead_of_mixing_blocks(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """After a kill, the input replaced by another image of the same path and shape: its blocks
    were mixed with the old ones (exit 0). Now the run starts afresh, with a note, and equals a
    fresh run on the new image."""
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "img.tif", rng.integers(0, 255, (600, 600), np.uint8), tile=(256, 256))
    args = ["predict", str(tmp_path / "img.tif"), "--model", str(tiny_model), "--blockwise", "always"]
    args += ["--block-size", "256", "--scale", "1", "--out", str(tmp_path / "out")]
    real = blockwise.instance_block
    monkeypatch.setattr(blockwise, "instance_block", lambda job, y, x: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(args) == 130
    assert len(list((tmp_path / "out" / "img.partial" / "done").glob("prob-*"))) == 9
    monkeypatch.setattr(blockwise, "instance_block", real)
    new = rng.integers(0, 255, (600, 600), np.uint8)
    tifffile.imwrite(tmp_path / "img.tif", new, tile=(256, 256))
    os.utime(tmp_path / "img.tif", ns=(10**9, 10**9))  # same path, shape and size; another time
    assert main(args) == 0
    assert "changed since the interrupted run; starting afresh" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "fresh.tif", new, tile=(256, 256))
    fresh = ["predict", str(tmp_path / "fresh.tif"), *args[2:-1], str(tmp_path / "fresh")]
    assert main(fresh) == 0
    np.testing.assert_array_equal(
        read_zarr_labels(tmp_path / "out" / "img_labels.zarr"),
        read_zarr_labels(tmp_path / "fresh" / "fresh_labels.zarr"),
    )


def test_tiles_on_block_edges_run_once_and_give_the_whole_images_probabilities(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks of 256 px under tiles of 512: each tile touches up to 9 blocks, and is run once."""
    from attention_unet.inference import tiles

    tifffile.imwrite(tmp_path / "img.tif", sample_mosaic(1100), tile=(256, 256))
    run = ["predict", str(tmp_path / "img.tif"), "--model", str(tiny_model), "--scale", "1", "--no-tta", "--save-prob"]
    blocks = ["--blockwise", "always", "--block-size", "256"]
    tiles_run = []
    real = tiles.run_views
    monkeypatch.setattr(
        tiles, "run_views", lambda run, batch, views: tiles_run.append(len(batch)) or real(run, batch, views)
    )

    assert main([*run, "--out", str(tmp_path / "whole"), "--blockwise", "never"]) == 0
    whole_tiles, tiles_run[:] = sum(tiles_run), []
    assert main([*run, *blocks, "--out", str(tmp_path / "blocks")]) == 0
    assert whole_tiles == 9 and sum(tiles_run) == whole_tiles
    whole = tifffile.imread(tmp_path / "whole" / "img_prob.tif").astype(np.float16)
    shared = np.asarray(zarr.open_group(tmp_path / "blocks" / "img_prob.zarr", mode="r")["0"])[0]
    np.testing.assert_array_equal(shared, whole)

    # every block running its own tiles (as on a cluster's workers) gives the same pixels
    monkeypatch.setattr(blockwise, "tiles_shared", lambda job, local: contextlib.nullcontext())
    tiles_run[:] = []
    assert main([*run, *blocks, "--out", str(tmp_path / "own")]) == 0
    assert sum(tiles_run) > 3 * whole_tiles
    own = np.asarray(zarr.open_group(tmp_path / "own" / "img_prob.zarr", mode="r")["0"])[0]
    np.testing.assert_array_equal(own, shared)


def test_a_shared_tile_is_kept_until_its_last_window_took_it_and_within_the_limit() -> None:
    from attention_unet.inference.tiles import SharedTiles

    output = (np.zeros(10, np.float32), [np.zeros(5, np.float32)])  # 60 bytes
    store = SharedTiles({(0, 0): 3, (0, 512): 1}, limit=100)
    store.keep((0, 512), output)  # one window needs it: nothing to share
    assert store.take((0, 512)) is None and store.held == 0
    store.keep((0, 0), output)
    assert store.held == 60
    assert store.take((0, 0)) is output and store.take((0, 0)) is output  # the two other windows
    assert store.held == 0 and store.take((0, 0)) is None  # let go
    full = SharedTiles({(0, 0): 2, (0, 512): 2}, limit=100)
    full.keep((0, 0), output)
    full.keep((0, 512), output)  # past the limit: that window's neighbour runs it again
    assert full.take((0, 512)) is None and full.take((0, 0)) is output


def test_probabilities_are_stored_as_numpy_would_round_them_to_float16() -> None:
    """pass 1's float16 conversion equals NumPy's bit for bit: every float16 subnormal and each
    tie between two of them (rounded to the even one), both signs, the edges of the normal range,
    zeros, infinities and NaN, and random probabilities spread over 24 octaves."""
    from attention_unet.inference.blockwise import as_float16

    steps = np.arange(0, 2049, dtype=np.float32) * np.float32(2.0**-25)  # subnormals, their ties, 2**-14
    edges = np.array([2.0**-14, np.nextafter(np.float32(2.0**-14), 0), 65504, 65520, 1e6, np.inf, np.nan, 0.0])
    spread = np.random.default_rng(0).random(100_000) * 2.0 ** -np.random.default_rng(1).integers(0, 24, 100_000)
    values = np.concatenate(
        [steps, -steps, edges.astype(np.float32), -edges.astype(np.float32), spread.astype(np.float32)]
    )
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16)
    got = as_float16(values.reshape(2, -1)).ravel()
    assert got.dtype == np.float16
    assert np.array_equal(got.view(np.uint16), expected.view(np.uint16))
