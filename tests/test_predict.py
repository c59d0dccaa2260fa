"""Sliding-window inference, instance separation and the predict command's outputs."""

import csv
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from attention_unet import AttentionUNet, ModelConfig, load_model
from attention_unet.cli import main
from attention_unet.errors import InputError
from attention_unet.inference.decode import Decoder
from attention_unet.inference.engine import torch_runner
from attention_unet.inference.pipeline import make_predictor
from attention_unet.inference.plan import FragmentsRule, factor_for_diameter, size_statistics, sizes_of
from attention_unet.inference.tiles import gaussian_weights, run_views, tile_starts
from attention_unet.instances import contours, distances, instances
from attention_unet.io import data
from attention_unet.io.data import SAMPLE_DIR, load_records
from attention_unet.model import pretrained_path, save_model
from attention_unet.settings import TTA_VIEWS, InferenceSettings

from .conftest import (
    brightness_runner,
    disks,
    fragmenting,
    fragments_and_large_nuclei,
    fragments_predictor,
    large_nuclei,
    sure_below,
    synthetic,
    two_touching_boxes,
)

SHIPPED_SAMPLE_F1 = 0.920  # `attention-unet evaluate --split all` on the sample, resize256, when nuclei-v6 was shipped


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.integers(1, 3000), st.integers(16, 600), st.sampled_from([0.0, 0.125, 0.25, 0.5]))
def test_tiles_cover_evenly_with_the_last_flush(length: int, tile: int, overlap: float) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0
    assert starts[-1] + min(tile, length) == max(length, min(tile, length))
    gaps = np.diff(starts)
    assert (gaps > 0).all() and (gaps <= tile * (1 - overlap) + 1).all()


def test_tiles_overlap_by_an_eighth() -> None:
    """The default grid: 512-px tiles whose neighbours share at least 64 px (a 4000-px side in 9
    tiles, not the 11 of a quarter's overlap), 576-px ones where they cover a side with fewer
    pixels (1000 px in two, not three); an image up to a tile's size is one tile."""
    from attention_unet.inference.tiles import Tiling

    rows, cols, height, width = Tiling().grid(4000, 1000)
    assert len(rows) == 9 and len(cols) == 2 and (height, width) == (512, 576)
    assert min(np.diff(rows)) >= 1 and 512 - max(np.diff(rows)) >= 64 and 576 - (cols[1] - cols[0]) >= 72
    assert Tiling().grid(512, 300)[:2] == ([0], [0])


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(1, 5000), st.integers(32, 600), st.sampled_from([0.0, 0.125, 0.25]))
def test_a_side_takes_longer_tiles_only_where_they_cover_it_with_fewer_pixels(
    length: int, tile: int, overlap: float
) -> None:
    from attention_unet.inference.tiles import Tiling

    starts, side = Tiling(tile=tile, overlap=overlap).side(length)
    plain = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + side == length  # covered, the last tile flush with the end
    assert side <= tile + round(tile * overlap)
    assert len(starts) * side <= len(plain) * min(tile, length)
    if len(starts) > 1:
        assert side - max(np.diff(starts)) >= overlap * side - 1  # neighbours still share an overlap


def test_a_side_just_over_a_tile_is_one_tile_not_two_that_share_almost_all() -> None:
    """A 520 x 696 image (BBBC039's size) runs 2 tiles of 520 x 512, not 4 of 512 x 512."""
    shapes: list[tuple[int, ...]] = []

    def runner(batch: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        shapes.append(batch.shape)
        return brightness_runner(batch)

    image = np.dstack([synthetic(4, (520, 696))[0]] * 3)
    make_predictor(runner, "percentile", batch_size=1).probability(image)
    assert shapes == [(1, 3, 520, 512)] * 2


def test_gaussian_weights_have_no_zeros() -> None:
    w = gaussian_weights(64, 48)
    assert w.shape == (64, 48) and w.min() > 0 and w.max() == pytest.approx(1.0, abs=0.02)


def test_touching_nuclei_are_separated() -> None:
    labels = disks((40, 60), [(20, 20), (20, 36)], 9)  # overlapping disks: one component
    prob = (labels > 0).astype(np.float32)
    out = instances(prob)
    assert out.max() == 2
    assert instances(np.zeros((10, 10), np.float32)).max() == 0


def test_contours_split_touching_nuclei_that_have_no_neck() -> None:
    labels = two_touching_boxes()
    prob = (labels > 0).astype(np.float32)
    assert instances(prob).max() == 1  # no neck: the distance transform has one peak
    out = instances(prob, contour=contours(labels).astype(np.float32))
    assert out.max() == 2 and ((out > 0) == (labels > 0)).all()
    assert len(np.unique(out[labels == 1])) == 1 and len(np.unique(out[labels == 2])) == 1


def weak_dropped(prob: np.ndarray, **settings: float) -> np.ndarray:
    """The decoder's labels of a foreground probability alone (no contour output)."""
    return Decoder(InferenceSettings(contours=False, **settings), ("mask",)).labels(prob[None])


def test_weak_instances_are_dropped_by_mean_probability() -> None:
    labels = disks((40, 70), [(20, 15), (20, 50)], 8)
    prob = np.where(labels == 1, 0.6, np.where(labels == 2, 0.95, 0.0)).astype(np.float32)
    assert instances(prob, min_area=1).max() == 2
    out = weak_dropped(prob, min_area=1, min_confidence=0.8)
    assert out.max() == 1 and ((out == 1) == (labels == 2)).all()  # the weak one is gone, numbering closes up


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), min_confidence=st.floats(0.5, 1.0))
def test_min_confidence_only_removes_the_weak_instances(seed: int, min_confidence: float) -> None:
    """The same instances as without the rule, less those whose mean probability is below it."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    prob = ndimage.gaussian_filter(rng.random((48, 64)), 3).astype(np.float32)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    everything = instances(prob, min_area=4)
    kept = weak_dropped(prob, min_area=4, min_confidence=min_confidence)
    ids = np.arange(1, everything.max() + 1)
    strong = ids[np.asarray(ndimage.mean(prob, everything, ids)) >= min_confidence]
    expected = np.zeros_like(everything)
    for new, old in enumerate(strong, start=1):
        expected[everything == old] = new
    assert (kept == expected).all()


def test_distance_output_splits_touching_nuclei_and_is_found_by_name() -> None:
    labels = two_touching_boxes()
    mask, distance = (labels > 0).astype(np.float32), distances(labels).astype(np.float32)
    out = instances(mask, distance=distance, h=0.1)
    assert out.max() == 2 and ((out > 0) == (labels > 0)).all()
    assert len(np.unique(out[labels == 1])) == 1 and len(np.unique(out[labels == 2])) == 1
    predictor = make_predictor(
        None, outputs=("mask", "distance"), distances=True, h=0.1, min_area=8
    )  # distance is second
    assert predictor.labels(np.stack([mask, distance])).max() == 2
    predictor = predictor.with_settings(distances=False)
    assert predictor.labels(np.stack([mask, distance])).max() == 1


@pytest.mark.skipif(not pretrained_path().is_file(), reason="no shipped model yet")
def test_tiled_equals_whole_image_on_1024() -> None:
    brightfield = next(r for r in load_records(SAMPLE_DIR) if r.image.shape[:2] == (1024, 1024))
    run = torch_runner(load_model())
    whole = make_predictor(run, "percentile", tile=1024).probability(brightfield.image)
    tiled = make_predictor(run, "percentile", tile=512, batch_size=4).probability(
        brightfield.image
    )  # the default tile: 4 tiles of 576
    assert np.abs(whole - tiled).mean() <= 1e-3


def test_predict_writes_every_output_and_mirrors_folders(tmp_path: Path, tiny_model: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    image, _ = synthetic(1, (70, 90))
    iio.imwrite(src / "a.png", image)
    iio.imwrite(src / "sub" / "b.jpg", np.dstack([image] * 3))
    tifffile.imwrite(src / "sub" / "c.tif", np.stack([image.astype(np.uint16) * 100] * 5))  # five pages: a stack
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(src),
            "--out",
            str(out),
            "--model",
            str(tiny_model),
            "--save-prob",
            "--attention",
            "--tile",
            "64",
        ]
    )
    assert code == 0
    for stem in ("a", "sub/b"):
        mask = iio.imread(out / f"{stem}_mask.png")
        assert mask.shape == (70, 90) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        assert tifffile.imread(out / f"{stem}_labels.tif").dtype == np.uint16
        assert iio.imread(out / f"{stem}_overlay.png").shape == (70, 90, 3)
        assert tifffile.imread(out / f"{stem}_prob.tif").dtype == np.float32
        assert iio.imread(out / f"{stem}_attention2.png").shape == (70, 90, 3)
    assert (
        tifffile.imread(out / "sub/c_labels.tif").shape == tifffile.imread(out / "sub/c_prob.tif").shape == (5, 70, 90)
    )
    assert not (out / "sub/c_mask.png").exists()  # a stack's planes are not written as unrelated images
    lines = (out / "summary.csv").read_text().splitlines()
    header = "input,file,model,height,width,nucleus_count,foreground_fraction,mean_area_px,median_area_px,scale,plane"
    assert lines[0] == header
    assert len(lines) == 1 + 2 + 5


def test_a_bad_file_is_reported_and_the_rest_goes_on(tmp_path: Path, tiny_model: Path, capsys) -> None:
    iio.imwrite(tmp_path / "good.png", synthetic(2)[0])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    code = main(
        [
            "predict",
            str(tmp_path / "good.png"),
            str(tmp_path / "broken.png"),
            "--out",
            str(tmp_path / "o"),
            "--model",
            str(tiny_model),
        ]
    )
    assert code == 1
    assert (tmp_path / "o" / "good_mask.png").is_file()
    assert "broken.png" in capsys.readouterr().err
    # the page lists it with why (the broken file comes last: the index is written once more for it)
    index = (tmp_path / "o" / "index.html").read_text()
    assert "Not segmented: 1 file(s)" in index and f"<td>{tmp_path / 'broken.png'}</td><td>" in index
    assert "cannot read image" in index and "1 image(s)" in index


def test_missing_input_is_a_one_line_error(tmp_path: Path, tiny_model: Path, capsys) -> None:
    assert main(["predict", str(tmp_path / "nope.png"), "--out", str(tmp_path), "--model", str(tiny_model)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope.png: no such file" in err


def test_a_contour_model_predicts_both_channels(tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_model(
        AttentionUNet(ModelConfig(width=4, depth=2, out_channels=2)).eval(),
        tmp_path / "m",
        {"train": {"norm": "polarity", "contour": True}},
    )
    image = np.dstack([synthetic(4, (70, 90))[0]] * 3)
    probs, _ = make_predictor(torch_runner(load_model(tmp_path / "m")), "polarity", tile=64, tta=True).probabilities(
        image
    )
    assert probs.shape == (2, 70, 90) and 0 <= probs.min() and probs.max() <= 1
    iio.imwrite(tmp_path / "a.png", image)
    assert main(["predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "m")]) == 0
    assert tifffile.imread(tmp_path / "o" / "a_labels.tif").shape == (70, 90)


def test_inference_settings_come_from_the_model(tmp_path: Path) -> None:
    from attention_unet.inference.engine import load_predictor

    inference = {
        "tta": True,
        "scale": 1.0,
        "contours": False,
        "distances": False,
        "contour_threshold": 0.3,
        "h": 2.0,
        "min_area": 500,
        "min_confidence": 0.7,
    }
    save_model(
        AttentionUNet(ModelConfig(width=4, depth=2, out_channels=2)).eval(),
        tmp_path,
        {"train": {"norm": "polarity", "contour": True}, "inference": inference},
    )
    predictor = load_predictor(tmp_path, tile=64, batch_size=2)
    s = predictor.settings
    settings = (predictor.norm, s.tta, predictor.outputs, s.contours, s.distances, s.contour_threshold, s.h)
    assert settings + (s.min_area, s.min_confidence) == (
        "polarity",
        True,
        ("mask", "contour"),
        False,
        False,
        0.3,
        2.0,
        500,
        0.7,
    )
    labels = two_touching_boxes()
    probs = np.stack([(labels > 0).astype(np.float32), contours(labels).astype(np.float32)])
    assert predictor.labels(probs).max() == 0  # both boxes together are 240 pixels < min_area
    predictor = predictor.with_settings(min_area=8)
    assert predictor.labels(probs).max() == 1  # contours off: the boxes stay one object
    predictor = predictor.with_settings(contours=True)
    assert predictor.labels(probs).max() == 2
    # the caller's min_confidence replaces the model's; out of 0..1 it is one clear error naming the parameter
    assert load_predictor(tmp_path, tile=64, min_confidence=0).settings.min_confidence == 0.0
    with pytest.raises(InputError, match="^min_confidence must be at least 0 and below 1, not 1"):
        load_predictor(tmp_path, tile=64, min_confidence=1)
    # ... which the command line names by its flag
    code = main(
        ["predict", str(tmp_path), "--model", str(tmp_path), "--min-confidence", "1", "--out", str(tmp_path / "o")]
    )
    assert code == 2


@pytest.mark.parametrize("shape", [(33, 47), (1, 1), (1, 40), (5, 1)])
def test_tta_keeps_the_shape(tiny_model: Path, shape: tuple[int, int]) -> None:
    """Also for a side of 1 pixel, where a flipped view's negative stride survives
    np.ascontiguousarray (numpy calls it contiguous) and torch refused it."""
    run = torch_runner(load_model(tiny_model))
    image = np.dstack([np.resize(synthetic(3, (33, 47))[0], shape)] * 3)
    for views in sorted(TTA_VIEWS):
        assert make_predictor(run, tta=True, tta_views=views).probability(image).shape == shape


@pytest.mark.skipif(not pretrained_path().is_file(), reason="no shipped model yet")
def test_shipped_model_keeps_its_accuracy_on_the_sample(tmp_path: Path) -> None:
    """The floor was measured when the model was shipped (docs/experiments), minus a margin of 0.02."""
    from attention_unet.commands.evaluate import evaluate

    summary = evaluate(None, None, split="all", protocol="resize256", out=tmp_path, strips=False)
    assert summary["n_images"] == 39
    assert summary["f1"] >= SHIPPED_SAMPLE_F1 - 0.02


def test_a_composite_of_several_colours_gets_a_note_on_channel(tmp_path: Path, tiny_model: Path, capsys) -> None:
    """Nuclei in blue and a second stain in green: the note says which --channel picks a colour;
    a grey image, or the composite with --channel, gets none."""
    grey = synthetic(6, (64, 80))[0]
    composite = np.dstack([np.zeros_like(grey), grey[::-1] // 2, grey])
    iio.imwrite(tmp_path / "composite.png", composite)
    iio.imwrite(tmp_path / "grey.png", grey)
    argv = ["predict", "--model", str(tiny_model), "--out", str(tmp_path / "o")]
    assert main([*argv, str(tmp_path / "composite.png"), str(tmp_path / "grey.png")]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    note = f"note: {tmp_path / 'composite.png'}: fluorescence in several colours; if one holds the nuclei, "
    assert notes == [note + "--channel N segments it (0 red, 1 green, 2 blue)"]
    assert main([*argv, str(tmp_path / "composite.png"), "--channel", "2"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_an_image_in_one_colour_is_predicted_as_its_grey() -> None:
    """DAPI shown in blue gets exactly the probabilities of the same nuclei in grey (the network
    learnt fluorescence in grey only: the shipped one found no nucleus of the sample in blue)."""
    grey = np.dstack([synthetic(5, (80, 96))[0]] * 3)
    predictor = make_predictor(brightness_runner, tile=64)
    for k in range(3):
        coloured = np.zeros_like(grey)
        coloured[..., k] = grey[..., 0]
        assert np.array_equal(predictor.probability(coloured), predictor.probability(grey))


@pytest.mark.parametrize("views", sorted(TTA_VIEWS))
def test_tta_maps_every_view_back_onto_the_image(views: int) -> None:
    """A runner whose output is its input's first channel, gate map the second: averaged over the
    flipped and turned views, both must come back exactly as the input (non-square, so a wrong
    turn also fails on shape), and the runner sees as many distinct views as asked for."""
    batch = np.random.default_rng(0).random((2, 3, 6, 9), dtype=np.float32)
    seen: set[bytes] = set()

    def identity(b: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        seen.add(b.tobytes() + bytes(b.shape))
        return b[:, :1], [b[:, 1:2]]

    probs, maps = run_views(identity, batch, TTA_VIEWS[views])
    np.testing.assert_allclose(probs, batch[:, :1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(maps[0], batch[:, 1:2], rtol=0, atol=1e-6)
    assert len(seen) == views


def test_auto_scale_probe_is_one_view_under_tta() -> None:
    """The half-size probe runs the network once per tile even with tta on (its thresholds were
    read off single-view probes); the full pass runs every view."""
    calls: list[tuple[int, ...]] = []

    def runner(b: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        calls.append(b.shape)
        return brightness_runner(b)

    image = np.dstack([synthetic(3, (96, 96))[0]] * 3)
    predictor = make_predictor(runner, "percentile", tile=128, tta=True, tta_views=4, scale="auto", min_area=1)
    predictor.policy.probed(image, predictor.network(data.normalisation_range(image, "percentile")), 0.5)
    assert len(calls) == 1
    predictor.probability(image)
    # auto scale's probes, one view each (half size, and 64 px a side: the image is under 128 px),
    # then the full pass's views
    assert len(calls) == 1 + 2 + 4 and calls[1:3] == [(1, 3, 48, 48), (1, 3, 64, 64)]


def he_like(sharp: bool, seed: int = 0) -> np.ndarray:
    """A 64 x 64 pink-and-purple image on a bright background: grainy (every pixel its own) or
    smooth (the same grain blurred)."""
    grain = np.random.default_rng(seed).normal(0, 30, (64, 64, 1))
    grain = grain if sharp else ndimage.gaussian_filter(grain, (3, 3, 0)) * 4
    return np.clip(np.array([200, 150, 200]) + grain * np.array([1.0, 1.3, 0.8]), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("image", "given", "smoothed"),
    [
        ("sharp stain", None, True),  # the model's rule: sharp stained tissue is smoothed
        ("smooth stain", None, False),
        ("sharp grey", None, False),  # fluorescence and brightfield never, however sharp
        ("sharp stain", 0.0, False),  # smoothing 0 turns the rule off
        ("sharp grey", 1.5, True),  # a given sigma smooths every image
    ],
)
def test_sharp_stained_tissue_is_smoothed_before_the_network(image: str, given: float | None, smoothed: bool) -> None:
    """The stand-in network returns its input's first channel, so the probability is the tile the
    network saw: the normalised image, or exactly its Gaussian smoothing by the model's sigma."""
    pixels = {
        "sharp stain": he_like(sharp=True),
        "smooth stain": he_like(sharp=False),
        "sharp grey": np.dstack([he_like(sharp=True)[..., 1]] * 3),
    }[image]
    predictor = make_predictor(brightness_runner, "polarity", tile=64, stain_smoothing=1.5, stain_sharpness=0.025)
    predictor = replace(predictor, smoothing=given)
    seen = data.normalise(pixels, "polarity")
    expected = ndimage.gaussian_filter(seen, (1.5, 1.5, 0)) if smoothed else seen
    np.testing.assert_allclose(predictor.probability(pixels), expected[..., 0], rtol=0, atol=1e-6)


def test_smoothing_shrinks_with_small_nuclei() -> None:
    """Smoothing is in proportion to the nuclei's size at the network's scale, up to the model's
    sigma at its learnt size (on H&E at 0.4x, sigma 1 cost TNBC's valid slide 0.015 F1; docs/experiments)."""
    predictor = make_predictor(brightness_runner, "polarity", stain_smoothing=1.2, target_diameter=16.0)
    image = he_like(sharp=True)
    sigma = [predictor.stain.sigma(image, data.normalisation_range(image, "polarity"), d) for d in (4, 8, 16, 40, None)]
    assert sigma == pytest.approx([0.3, 0.6, 1.2, 1.2, 1.2])


def test_smoothing_must_be_a_sensible_sigma(tmp_path: Path) -> None:
    from attention_unet.inference.engine import load_predictor

    with pytest.raises(InputError, match="stain_smoothing must be a Gaussian sigma"):
        InferenceSettings.from_metadata({"stain_smoothing": -1})
    with pytest.raises(InputError, match="^smoothing must be a Gaussian sigma from 0 to 8 pixels, not 20"):
        load_predictor(None, smoothing=20)


def test_a_model_file_listing_auto_scales_own_numbers_loads_as_before(tmp_path: Path) -> None:
    """Model files written before auto scale's numbers left the settings list them (the shipped
    ones did, at these values): they load, those keys unread, and auto scale runs on its own
    numbers; passed as a setting, such a name is refused."""
    from attention_unet.inference.engine import load_predictor
    from attention_unet.inference.plan import ScalePolicy

    old = {"scale": "auto", "h": 2.0, "fragments_ratio": 2.0, "fragments_count": 30, "fragments_solidity": 0.85}
    old |= {"shrink_above": 1.5, "shrink_margin": 0.01, "fragments_by_confidence": True}
    assert InferenceSettings.from_metadata(old) == InferenceSettings(scale="auto", h=2.0)
    save_model(AttentionUNet(ModelConfig(width=4, depth=2)).eval(), tmp_path / "old", {"inference": old})
    predictor = load_predictor(tmp_path / "old", engine="torch")
    assert predictor.settings == InferenceSettings(scale="auto", h=2.0)
    assert predictor.policy == ScalePolicy(predictor.settings)
    with pytest.raises(TypeError, match="unknown inference settings: shrink_above"):
        predictor.with_settings(shrink_above=0.0)


def test_tta_views_must_be_a_known_set() -> None:
    from attention_unet.inference.engine import load_predictor

    with pytest.raises(InputError, match="tta_views must be one of 2, 4, 8"):
        InferenceSettings.from_metadata({"tta": True, "tta_views": 3})
    with pytest.raises(InputError, match="tta_views must be one of 2, 4, 8, not 5"):
        load_predictor(None, tta_views=5)


@pytest.mark.parametrize(("radius", "expected"), [(8, 1.0), (32, factor_for_diameter(64, 16)), (3, 16 / 6)])
def test_auto_scale_brings_nuclei_to_the_learnt_size(radius: int, expected: float) -> None:
    centres = [
        (y, x)
        for y in range(radius + 4, 256 - radius, 2 * radius + 8)
        for x in range(radius + 4, 320 - radius, 2 * radius + 8)
    ]
    image = np.dstack([(disks((256, 320), centres, radius) > 0).astype(np.uint8) * 200] * 3)
    predictor = make_predictor(
        brightness_runner, "percentile", tile=128, scale="auto", target_diameter=16.0, min_area=1
    )
    factor = predictor.policy.sizing(image, predictor.network(data.normalisation_range(image, "percentile")))[0]
    assert factor == pytest.approx(expected, rel=0.15)
    assert predictor.probability(image).shape == (256, 320)


def test_auto_scale_factor_never_jumps() -> None:
    """Larger nuclei never get a larger factor, and a diameter read a little differently (int8
    against fp32, say) moves the factor a little: at most the steeper ramp's slope, ln 3 / ln 1.5,
    times the change (the jump at the dead band's edge it replaces was a factor of 2)."""
    diameters = np.geomspace(1.0, 500.0, 20_001)  # steps of 0.03%
    factors = np.array([factor_for_diameter(d, 16) for d in diameters])
    assert (np.diff(factors) <= 0).all()
    slopes = -np.diff(np.log(factors)) / np.diff(np.log(diameters))
    assert slopes.max() <= np.log(3) / np.log(1.5) + 1e-6
    assert factors[0] == 4.0 and factors[-1] == 0.125 and factor_for_diameter(16, 16) == 1.0


def test_size_statistics_see_the_nucleus_that_most_pixels_lie_in() -> None:
    """Ten fragments of 12 pixels and one nucleus of 2,000: the median is a fragment, the weighted
    diameter the large nucleus; empty input counts nothing."""
    stats = size_statistics(np.array([12] * 10 + [2000]))
    assert stats["count"] == 11
    assert stats["median"] == pytest.approx(2 * np.sqrt(12 / np.pi))
    assert stats["weighted"] == pytest.approx(2 * np.sqrt(2000 / np.pi))
    assert size_statistics(np.array([]))["count"] == 0


@pytest.mark.parametrize(
    ("specks", "ratio", "clumps", "solidity", "expected"),
    [(40, 2.0, False, 0.8, factor_for_diameter(64, 16)), (40, 0.0, False, 0.8, 1.0), (10, 2.0, False, 0.8, 1.0)]
    + [(40, 2.0, True, 0.8, 1.0), (40, 2.0, True, 0.0, factor_for_diameter(16 / 0.36, 16))],
)
def test_many_fragments_beside_large_nuclei_count_as_fragments(
    specks: int, ratio: float, clumps: bool, solidity: float, expected: float
) -> None:
    """With the fragments rule on and enough pieces, auto scale shrinks the image for the large
    convex nuclei that hold most of the foreground; off, with few pieces, or when the large pieces
    are clumps (not convex), the median (a speck, inside the range left alone) keeps scale 1; clumps
    pass for nuclei only with the solidity test off."""
    image = fragments_and_large_nuclei(specks, clumps)
    predictor = fragments_predictor(brightness_runner, fragments=FragmentsRule(ratio=ratio, solidity=solidity))
    factor = predictor.policy.sizing(image, predictor.network(data.normalisation_range(image, "percentile")))[0]
    assert factor == pytest.approx(expected, rel=0.1)


@pytest.mark.parametrize(("specks", "zoom", "offered"), [(3, 1, True), (40, 1, False), (0, 1, False), (3, 4, True)])
def test_an_undecided_fragments_rule_offers_the_large_pieces_size(specks: int, zoom: int, offered: bool) -> None:
    """Three specks beside two 64-px nuclei: too few pieces for the fragments rule to call the
    specks fragments, so the median (a speck) stands, and the large pieces' size is offered to
    :meth:`Predictor.choose` beside it. With 40 specks the
    rule decides (the large size, nothing offered); without specks the median is the large size.
    Four times larger too (the median, 40 px, then shrinks the image already: see
    :func:`test_auto_scale_keeps_the_large_pieces_size_where_its_nuclei_are_surer`)."""
    image = fragments_and_large_nuclei(specks).repeat(zoom, 0).repeat(zoom, 1)
    predictor = fragments_predictor(brightness_runner)
    factor, diameter, large = predictor.policy.sizing(
        image, predictor.network(data.normalisation_range(image, "percentile"))
    )
    assert diameter is not None
    assert diameter == pytest.approx((10 if specks == 3 else 64) * zoom, rel=0.1)
    assert factor == pytest.approx(factor_for_diameter(diameter, 16))
    assert (large is not None) == offered
    if offered:
        assert large == pytest.approx(64 * zoom, rel=0.1)


@pytest.mark.parametrize(("weak", "shrunk"), [(0.7, True), (1.0, False)])
def test_auto_scale_keeps_the_large_pieces_size_where_its_nuclei_are_surer(weak: float, shrunk: bool) -> None:
    """Three specks beside two 64-px nuclei, the fragments rule undecided: the image is also
    predicted for 64-px nuclei (0.33x), and that prediction is kept when its instances are surer:
    with a network that is weak on the whole image (as on textured nuclei cut into fragments), not
    with one sure of it (the specks are small nuclei of their own: shrunk, their rims blur and they
    lose confidence; the shrink margin of the half-size look plays no part)."""
    image = fragments_and_large_nuclei(3)
    value_range = data.normalisation_range(image, "percentile")
    predictor = fragments_predictor(sure_below(200, weak), tile=512, shrink_margin=0.5)
    factor, diameter, large = predictor.policy.sizing(image, predictor.network(value_range))
    assert factor == 1.0 and large is not None
    plan, (probs, _) = predictor.choose(image, value_range, (factor, diameter, large))
    chosen, kept = plan.factor, plan.diameter
    assert chosen == pytest.approx(factor_for_diameter(large, 16) if shrunk else 1.0)
    assert kept == (large if shrunk else diameter)
    assert predictor.probability(image) == pytest.approx(probs[0])  # what predict and evaluate get


def test_an_image_shrunk_already_is_not_shrunk_further_for_the_large_pieces() -> None:
    """The same image four times larger: the median piece (40 px) shrinks it already, so it is
    not predicted again for the large pieces (256 px), although the network is surer there (on
    train and valid, shrinking further lost; docs/experiments)."""
    image = fragments_and_large_nuclei(3).repeat(4, 0).repeat(4, 1)
    value_range = data.normalisation_range(image, "percentile")
    predictor = fragments_predictor(  # sure of the quarter-size probe (320 px wide), weak on 512-px tiles
        sure_below(400, 0.5), tile=512, probe=0.25
    )
    factor, diameter, large = predictor.policy.sizing(image, predictor.network(value_range))
    assert factor < 1 and large is not None
    plan, (probs, _) = predictor.choose(image, value_range, (factor, diameter, large))
    chosen, kept = plan.factor, plan.diameter
    assert (chosen, kept) == (factor, diameter)
    surer = predictor.predicted_at(image, value_range, factor_for_diameter(large, 16), large)[0]
    assert predictor.decoder.confidence(surer) > predictor.decoder.confidence(probs) + 0.1


@pytest.mark.parametrize(
    ("width", "shape", "measured"), [(200, (512, 640), 96), (10_000, (512, 640), 96), (200, (200, 640), None)]
)
def test_coarse_probes_see_nuclei_the_half_size_probe_cuts_into_pieces_of_one_size(
    width: int, shape: tuple[int, int], measured: float | None
) -> None:
    """Disks 96 px across, which a network cuts into pieces of one size on tiles wider than
    ``width`` (the half-size probe's 320 px; no larger piece, so the fragments rule sees nothing)
    and sees whole and surer at 1/4 and 1/8: the pyramid's size is taken. A network that sees them
    whole at half size measures them there already; in an image too small for a 64-px probe at 1/4
    the coarse probes are skipped and the pieces' size stands."""
    image = large_nuclei(48, shape)
    predictor = make_predictor(fragmenting(width), "percentile", tile=512, scale="auto", min_area=1)
    network = predictor.network(data.normalisation_range(image, "percentile"))
    labels, pixel_area, _ = predictor.policy.probed(image, network, 0.5)
    pieces = sizes_of(labels, pixel_area)["median"]
    assert (pieces < 40) == (width == 200)
    factor, diameter, large = predictor.policy.sizing(image, network)
    assert diameter == pytest.approx(measured or pieces, rel=0.15) and large is None
    assert factor == pytest.approx(factor_for_diameter(diameter, 16))


def test_pieces_far_from_the_learnt_size_set_no_bar_for_the_coarse_probes() -> None:
    """The half-size probe cuts the 96 px disks into hundreds of pieces 3-4 px across at its scale
    (far below the learnt size, so untrusted); the coarse probes find the 20 disks whole. The
    share test counts only probes near the learnt size, so those hundreds of pieces do not make
    the coarse probes' 20 nuclei look like vanishing ones: the disks' size is taken."""
    image = large_nuclei(48, (512, 640))
    predictor = make_predictor(fragmenting(200, every=8), "percentile", tile=512, scale="auto", min_area=1)
    network = predictor.network(data.normalisation_range(image, "percentile"))
    half = predictor.policy.probed(image, network, 0.5)
    assert half[0].max() > 10 * 20 and sizes_of(half[0], half[1])["median"] * 0.5 < 8
    assert predictor.policy.pyramid_diameter(image, network, half, 0.5) == pytest.approx(96, rel=0.15)
    assert predictor.policy.sizing(image, network)[1] == pytest.approx(96, rel=0.15)


def pairs_and_clumps(radius: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Masks of pairs of disks 2 px apart, and of the same pairs each joined into one clump."""
    rows = range(radius + 4, shape[0] - radius - 4, 3 * radius + 6)
    columns = range(radius + 4, shape[1] - 3 * radius - 8, 5 * radius + 10)
    centres = [(y, x + dx) for y in rows for x in columns for dx in (0, 2 * radius + 3)]
    pairs = disks(shape, centres, radius) > 0
    bridges = np.zeros(shape, bool)
    for y, x in centres[::2]:
        bridges[y - radius // 2 : y + radius // 2 + 1, x : x + 2 * radius + 4] = True
    return pairs, pairs | bridges


@pytest.mark.parametrize(
    ("radius", "largest", "fine"), [(3, 1_100_000, True), (3, 40_000, False), (8, 1_100_000, False)]
)
def test_a_fine_probe_measures_small_nuclei_the_half_size_probe_sees_in_clumps(
    radius: int, largest: int, fine: bool
) -> None:
    """A network that sees pairs of small nuclei as one clump below full size and apart above it:
    the half-size probe measures clumps, under the fine probe's trigger for disks 7 px across, and
    the probe at twice the size measures the disks, whose size is taken. Not in an image whose
    fine probe would be too large (above ``largest`` pixels), nor where the half-size probe's
    nuclei are not small."""
    shape = (128, 160) if radius == 3 else (256, 320)
    pairs, clumps = pairs_and_clumps(radius, shape)
    image = np.dstack([pairs.astype(np.uint8) * 200] * 3)

    def network(view: np.ndarray, sigma: float, views: bool) -> tuple[np.ndarray, list[np.ndarray]]:
        seen = clumps if view.shape[0] < shape[0] else pairs
        return data.resize(seen.astype(np.float32), view.shape[:2])[None], []

    predictor = make_predictor(brightness_runner, "percentile", scale="auto", min_area=1, h=50)
    policy = replace(predictor.policy, fine_max_pixels=largest)
    half = policy.probed(image, network, 0.5)
    clump = sizes_of(half[0], half[1])["median"]
    assert (clump * 0.5 < policy.fine_below * 16) == (radius == 3)
    assert (policy.fine_diameter(image, network, half, clump, 0.5) is not None) == fine
    diameter = policy.sizing(image, network)[1]
    assert diameter == pytest.approx(2 * radius + 1, rel=0.2) if fine else diameter == pytest.approx(clump)


@pytest.mark.parametrize(
    ("width", "above", "margin", "shrunk"),
    [
        (48, 1.5, 0.01, True),
        (200, 1.5, 0.01, False),
        (48, 0.0, 0.01, False),
        (48, 1.5, 0.2, False),
        (48, 2.0, 0.01, False),
    ],
)
def test_auto_scale_keeps_the_half_size_pass_where_its_nuclei_are_surer(
    width: int, above: float, margin: float, shrunk: bool
) -> None:
    """Disks 40 px across in a 128-px image: auto scale's ramp brings them to ~28 px (0.69x), 1.75
    times the learnt 16, so with ``shrink_above`` 1.5 the image is also predicted at half that
    factor (44 px wide), and that prediction is the answer when its instances are surer by more
    than the margin: with a network sure only of tiles up to 48 px, not with one sure up to 200
    px, nor with the second pass off, a margin above the gain (1.0 against 0.9) or a threshold
    above 1.75."""
    centres = [(y, x) for y in (24, 64, 104) for x in (24, 64, 104)]
    image = np.dstack([(disks((128, 128), centres, 20) > 0).astype(np.uint8) * 200] * 3)
    value_range = data.normalisation_range(image, "percentile")
    predictor = make_predictor(
        sure_below(width), "percentile", tile=128, scale="auto", min_area=1, shrink_above=above, shrink_margin=margin
    )
    factor, diameter, large = predictor.policy.sizing(image, predictor.network(value_range))
    assert factor == pytest.approx(factor_for_diameter(40, 16), rel=0.1) and 1.5 < diameter * factor / 16 < 2.0
    plan, (probs, _) = predictor.choose(image, value_range, (factor, diameter, large))
    chosen = plan.factor
    assert chosen == pytest.approx(factor / 2 if shrunk else factor)
    assert probs.shape == (1, 128, 128)
    inside = disks((128, 128), centres, 12) > 0  # away from the resampled rims
    sure = shrunk or width >= 128 * factor  # the pass kept is one the network was sure of
    assert probs[0][inside].mean() == pytest.approx(1.0 if sure else 0.9, abs=0.02)
    assert predictor.probability(image) == pytest.approx(probs[0])  # what predict and evaluate get


@pytest.mark.parametrize(("width", "threshold", "decoded"), [(48, 0.5, 2), (200, 0.5, 2), (48, 0.6, 3)])
def test_the_scale_kept_is_not_decoded_again(
    width: int, threshold: float, decoded: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Auto scale decodes both candidates of its second look to compare them; segment_image returns
    the kept one's labels from that (two watersheds, not three) and they are the labels decoded
    afresh; at another threshold than the comparison's, the kept one is decoded again."""
    from attention_unet.inference import decode
    from attention_unet.inference.pipeline import segment_image

    centres = [(y, x) for y in (24, 64, 104) for x in (24, 64, 104)]
    image = np.dstack([(disks((128, 128), centres, 20) > 0).astype(np.uint8) * 200] * 3)
    predictor = make_predictor(sure_below(width), "percentile", tile=128, scale="auto", min_area=1, min_confidence=0.5)
    calls = []
    monkeypatch.setattr(decode, "instances", lambda *a, **k: calls.append(1) or instances(*a, **k))
    probs, _, labels, plan = segment_image(predictor, image, threshold)
    assert len(calls) == decoded
    assert np.array_equal(labels, predictor.labels(probs, threshold)) and labels.max() == 9
    # the plan kept: the factor predicted at (half the ramp's where the second look won), and the
    # disks' diameter as auto scale measured it
    assert plan.factor == pytest.approx(factor_for_diameter(40, 16) / (2 if width == 48 else 1), rel=0.1)
    assert plan.diameter == pytest.approx(40, rel=0.15)


def test_summary_names_the_scale_and_the_diameter_auto_scale_measured(tmp_path: Path, tiny_model: Path) -> None:
    """summary.csv says at what scale each image was predicted and, under auto scale, the nucleus
    diameter it measured (the number to give --diameter where it is wrong); a given diameter is the
    scale that brings it to the learnt 16 px, with no measured diameter."""
    from attention_unet.commands.predict import summary_row
    from attention_unet.inference.plan import Plan

    row = summary_row("a", (10, 10), np.array([4, 6]), "m", Plan(0.5, 31.96))
    assert (row["scale"], row["auto_diameter_px"]) == (0.5, 32.0)
    assert "auto_diameter_px" not in summary_row("a", (10, 10), np.array([4]), "m", Plan(2.0))
    iio.imwrite(tmp_path / "a.png", synthetic(1)[0])
    assert (
        main(
            [
                "predict",
                str(tmp_path / "a.png"),
                "--out",
                str(tmp_path / "out"),
                "--model",
                str(tiny_model),
                "--diameter",
                "32",
            ]
        )
        == 0
    )
    with open(tmp_path / "out" / "summary.csv", newline="", encoding="utf-8-sig") as f:
        (written,) = list(csv.DictReader(f))
    assert float(written["scale"]) == 0.5 and not written.get("auto_diameter_px")


def test_a_fixed_scale_is_never_second_guessed() -> None:
    """--scale or --diameter: the user's factor is the one predicted at, one pass."""
    calls: list[tuple[int, ...]] = []

    def runner(b: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        calls.append(b.shape)
        return sure_below(48)(b)

    image = np.dstack([(disks((128, 128), [(64, 64)], 20) > 0).astype(np.uint8) * 200] * 3)
    predictor = make_predictor(runner, "percentile", tile=128, scale=0.7, min_area=1, shrink_above=1.5)
    assert not predictor.policy.tries_smaller(0.7, 40.0)
    predictor.probability(image)
    assert len(calls) == 1


def test_diameter_sets_the_scale_from_the_model_target(tmp_path: Path) -> None:
    from attention_unet.inference.engine import load_predictor

    save_model(AttentionUNet(ModelConfig(width=4, depth=2)).eval(), tmp_path, {"inference": {"target_diameter": 20.0}})
    assert load_predictor(tmp_path, diameter=80).settings.scale == pytest.approx(0.25)
    with pytest.raises(InputError, match="^diameter must be at least"):
        load_predictor(tmp_path, diameter=0)


def test_pictures_written_by_opencv_decode_to_the_same_pixels(tmp_path: Path) -> None:
    """write_png (OpenCV, fast) writes the pixels Pillow would: grey, and RGB in RGB order."""
    import imageio.v3 as iio

    from attention_unet.io.images import write_png

    rng = np.random.default_rng(0)
    for picture in (rng.integers(0, 256, (17, 23), dtype=np.uint8), rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)):
        write_png(tmp_path / "p.png", picture)
        np.testing.assert_array_equal(iio.imread(tmp_path / "p.png"), picture)


def test_a_tiny_image_is_measured_on_a_probe_large_enough_to_see_its_nuclei() -> None:
    """A 64 x 80 image of nuclei 5 px across, which a network sees merged into large clumps in any
    view smaller than the image: a half-size probe (32 x 40) would measure the clumps (no fine
    probe is tried for pieces that large) and leave the image at its size; the first probe is the
    image's own size, which sees the nuclei, and the fine probe confirms them."""
    shape = (64, 80)
    centres = [(y, x) for y in range(6, 60, 9) for x in range(6, 76, 9)]
    nuclei = disks(shape, centres, 2) > 0
    clumps = ndimage.binary_dilation(nuclei, iterations=3)
    image = np.dstack([nuclei.astype(np.uint8) * 200] * 3)

    def network(view: np.ndarray, sigma: float, views: bool) -> tuple[np.ndarray, list[np.ndarray]]:
        seen = clumps if view.shape[0] < shape[0] else nuclei
        return data.resize(seen.astype(np.float32), view.shape[:2])[None], []

    policy = make_predictor(brightness_runner, "percentile", scale="auto", min_area=1, h=50).policy
    half = policy.probed(image, network, 0.5)
    assert sizes_of(half[0], half[1])["median"] * 0.5 >= policy.fine_below * 16  # clumps: no fine probe
    assert policy.first_probed(image, network)[0] == 1.0
    factor, diameter, _ = policy.sizing(image, network)
    assert diameter == pytest.approx(5, rel=0.2)
    assert factor > 2

    def blind_at_full_size(view: np.ndarray, sigma: float, views: bool) -> tuple[np.ndarray, list[np.ndarray]]:
        found = network(view, sigma, views)[0]
        return (found * 0 if view.shape[0] == shape[0] else found), []

    # where the larger probe is less sure (here: it finds nothing), the half-size probe is kept
    assert policy.first_probed(image, blind_at_full_size)[0] == 0.5
    # an image of 128 px or more a side is measured at half size, as before
    large = np.dstack([disks((128, 160), [(y, x) for y in range(8, 120, 16) for x in range(8, 150, 16)], 4) > 0] * 3)
    assert policy.first_probed(large.astype(np.uint8) * 200, network)[0] == 0.5
