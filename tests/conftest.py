"""Shared fixtures: a tiny generated dataset in the flat layout, and stand-in runners."""

from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest

from attention_unet.inference.pipeline import Predictor, make_predictor
from attention_unet.inference.plan import FragmentsRule
from attention_unet.inference.tiles import Runner

ARCHIVE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dsb2018" / "stage1_train.zip"


def disks(shape: tuple[int, int], centres: list[tuple[int, int]], radius: int) -> np.ndarray:
    """Instance labels of disks (1..n) drawn at the given centres."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i
    return labels


def two_touching_boxes() -> np.ndarray:
    """Two 10 x 12 nuclei side by side: one connected component with no neck."""
    labels = np.zeros((20, 30), np.int32)
    labels[5:15, 3:15], labels[5:15, 15:27] = 1, 2
    return labels


def synthetic(seed: int, shape: tuple[int, int] = (48, 64)) -> tuple[np.ndarray, np.ndarray]:
    """A fluorescence-like image (bright disks on dark noise) and its instance labels."""
    rng = np.random.default_rng(seed)
    centres = [(int(rng.integers(8, shape[0] - 8)), int(rng.integers(8, shape[1] - 8))) for _ in range(3)]
    labels = disks(shape, centres, 6)
    image = (rng.normal(20, 5, shape) + 180 * (labels > 0)).clip(0, 255).astype(np.uint8)
    return image, labels


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten 48 x 64 grey images with 16-bit instance-label masks, flat layout."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i in range(10):
        image, labels = synthetic(i)
        iio.imwrite(root / "images" / f"img{i:02d}.png", image)
        iio.imwrite(root / "masks" / f"img{i:02d}.png", labels.astype(np.uint16))
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the decoded-dataset cache out of the user's home during tests."""
    monkeypatch.setenv("ATTENTION_UNET_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained width-4, depth-2 model (fast; its predictions are noise, its files are real)."""
    import torch

    from attention_unet.model import AttentionUNet, ModelConfig, save_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    save_model(AttentionUNet(ModelConfig(width=4, depth=2)).eval(), folder, {"train": {"norm": "percentile"}})
    return folder


def brightness_runner(batch: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """A stand-in network whose foreground probability is the normalised image's first channel."""
    return batch[:, :1].astype(np.float32), []


def sure_below(width: int, weak: float = 0.9) -> Runner:
    """A stand-in network that reads brightness (:func:`brightness_runner`) and is sure of it only
    on tiles at most ``width`` pixels wide: wider ones come out ``weak`` times as bright, as large
    textured nuclei come out as weak fragments at full size."""

    def run(batch: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        probs, maps = brightness_runner(batch)
        return probs * (1.0 if batch.shape[-1] <= width else weak), maps

    return run


def fragmenting(width: int, every: int = 24) -> Runner:
    """A stand-in network that reads brightness (:func:`brightness_runner`) and, on tiles wider
    than ``width``, cuts what it sees with dark lines every ``every`` pixels and is less sure (0.9):
    large textured nuclei come out as pieces of one size at fine scales and whole on coarse probes."""

    def run(batch: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        probs, maps = brightness_runner(batch)
        if batch.shape[-1] > width:
            probs = probs * 0.9
            for offset in (0, 1):
                probs[..., offset::every, :] = 0
                probs[..., :, offset::every] = 0
        return probs, maps

    return run


def large_nuclei(radius: int = 48, shape: tuple[int, int] = (512, 640)) -> np.ndarray:
    """An RGB image of bright disks of ``radius`` on black, in a grid 14 px apart."""
    step = 2 * radius + 14
    centres = [
        (y, x) for y in range(radius + 6, shape[0] - radius, step) for x in range(radius + 6, shape[1] - radius, step)
    ]
    return np.dstack([(disks(shape, centres, radius) > 0).astype(np.uint8) * 200] * 3)


def fragments_and_large_nuclei(specks: int, clumps: bool = False) -> np.ndarray:
    """Two 64-px nuclei beside ``specks`` 10-px specks (the probe's view of textured nuclei); with
    ``clumps`` each large nucleus is a cross of five 20-px discs instead (merged small nuclei)."""
    labels = disks((256, 320), [(70, 70), (180, 90)], 32)
    if clumps:
        arms = [(0, 0), (-19, 0), (19, 0), (0, -19), (0, 19)]
        labels = disks((256, 320), [(y + dy, x + dx) for y, x in [(70, 70), (180, 90)] for dy, dx in arms], 10)
    centres = [(y, x) for y in range(12, 250, 20) for x in (180, 210, 240, 270, 300)][:specks]
    return np.dstack([((labels + disks((256, 320), centres, 5)) > 0).astype(np.uint8) * 200] * 3)


def fragments_predictor(runner: Runner, **settings: Any) -> Predictor:
    """A Predictor for :func:`fragments_and_large_nuclei`: auto scale with the fragments rule on
    (ratio 2, solidity 0.8), no watershed cuts (h 50, so a clump stays one non-convex piece) and
    nothing dropped for size; ``settings`` replace or add to these."""
    defaults = {"tile": 128, "scale": "auto", "min_area": 1, "h": 50, "fragments": FragmentsRule(solidity=0.8)}
    return make_predictor(runner, "percentile", **(defaults | settings))
