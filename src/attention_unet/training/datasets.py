"""The training and validation datasets: records to tensors, the split, and the sampling weights
that balance rare (dataset, modality) groups."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError
from ..instances import targets
from ..io import data
from .augment import augmenter, pseudo_stain, scaled_crop, stain_grain, stain_jitter
from .config import TrainConfig

EVAL_SIZE = (256, 256)  # the report's resize256 protocol, used for validation


class TrainDataset(Dataset):
    """Training samples: resized 256 x 256 images (report) or scale-jittered native crops, augmented.

    Each sample's randomness comes from (the worker's torch seed, the index, a call counter), so a
    run is reproducible for a given seed and number of workers.
    """

    def __init__(self, records: list[data.Record], cfg: TrainConfig) -> None:
        self.crop = cfg.crop_size()
        self.scale = cfg.scale
        self.transform = augmenter(cfg.augment)
        self.length = cfg.samples_per_epoch or len(records)
        self.contour, self.distance = cfg.contour, cfg.distance
        self.norm = cfg.norm
        # robust: colour images are kept at fixed scale with their own range, so that the stain
        # jitter acts on the stains before the (polarity) normalisation turns them round
        modalities = [data.modality(r.image) for r in records]
        self.stain = [cfg.augment == "robust" and m == "stained" for m in modalities]
        # the chance that a crop of each image is rendered as H&E (fluorescence only)
        self.pseudo_stain = [cfg.pseudo_stain if m == "fluorescence" else 0.0 for m in modalities]
        self.grain, self.jitter = cfg.stain_grain, cfg.stain_jitter
        self.images, self.labels, self.ranges = [], [], []
        for r, stain in zip(records, self.stain):
            _, hi = data.normalisation_range(r.image, "fixed")
            value_range = tuple(v / hi for v in data.normalisation_range(r.image, cfg.norm)) if stain else None
            image, labels = data.normalise(r.image, "fixed" if stain else cfg.norm), data.compact_labels(r.labels)
            if self.crop is None:
                image, labels = data.resize(image, EVAL_SIZE), data.resize(labels, EVAL_SIZE, nearest=True)
            self.images.append(image)
            self.labels.append(labels)
            self.ranges.append(value_range)
        self.calls = 0

    def __len__(self) -> int:
        return self.length

    def _grain(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # no draw when off: runs without --stain-grain stay as before
        return stain_grain(image, rng) if self.grain and rng.random() < self.grain else image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        rng = np.random.default_rng([torch.initial_seed() % 2**63, index, self.calls])
        i = index % len(self.images)
        image, labels = self.images[i], self.labels[i]
        if self.crop is not None:
            image, labels = scaled_crop(image, labels, self.crop, self.scale, rng)
        if self.ranges[i] is not None:
            image = self._grain(stain_jitter(image, rng, self.jitter) if rng.random() < 0.7 else image, rng)
            image = data.normalise(image, self.norm, self.ranges[i])
        elif self.pseudo_stain[i] and rng.random() < self.pseudo_stain[i]:  # no draw when off: runs stay as before
            image = data.normalise(self._grain(pseudo_stain(image, rng), rng), self.norm)
        if self.transform is not None:
            self.transform.set_random_seed(int(rng.integers(2**31)))
            out = self.transform(image=image, mask=labels)
            image, labels = out["image"], out["mask"]
        return to_tensor(image), torch.from_numpy(targets(np.ascontiguousarray(labels), self.contour, self.distance))


class EvalDataset(Dataset):
    """Validation images under the resize256 protocol (or as they are, ``size=None``), normalised like training."""

    def __init__(
        self,
        records: list[data.Record],
        norm: str,
        contour: bool = False,
        distance: bool = False,
        size: tuple[int, int] | None = EVAL_SIZE,
    ) -> None:
        def view(array: np.ndarray, nearest: bool = False) -> np.ndarray:
            return array if size is None else data.resize(array, size, nearest=nearest)

        self.items = [
            (
                view(data.normalise(r.image, norm)),
                torch.from_numpy(targets(view(r.labels, nearest=True), contour, distance)),
            )
            for r in records
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.items[index]
        return to_tensor(image), target


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """H x W x C float32 -> C x H x W tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


def sample_weights(records: list[data.Record], length: int, sources: list[str] | None = None) -> torch.Tensor:
    """Weights that give each modality of each dataset (``sources``, one per record) a share
    proportional to the square root of its size."""
    kinds = [f"{source}:{data.modality(r.image)}" for source, r in zip(sources or [""] * len(records), records)]
    counts = data.count_by(kinds)
    per_record = torch.tensor([counts[k] ** -0.5 for k in kinds], dtype=torch.double)
    return per_record.repeat(math.ceil(length / len(records)))[:length]


# ------------------------------------------------------------------------------------------- fit


def prepare_splits(
    datasets: dict[str, list[data.Record]], cfg: TrainConfig, run_dir: Path
) -> dict[str, dict[str, list[str]]]:
    """Each dataset's split (--split-file, else all images with --valid-strip, else :func:`data.default_split`), written to
    ``split.json``: one dataset as {train, valid, test}, several as {dataset: {train, valid, test}}."""

    def split_of(name: str, ids: list[str]) -> dict[str, list[str]]:
        if cfg.split_file:
            return data.load_split(cfg.split_file, name if len(datasets) > 1 else None)
        # --valid-strip validates within the images, so every image can train
        return {"train": sorted(ids), "valid": [], "test": []} if cfg.valid_strip else data.default_split(ids)

    splits = {name: split_of(name, [r.id for r in records]) for name, records in datasets.items()}
    written = next(iter(splits.values())) if len(splits) == 1 else splits
    (run_dir / "split.json").write_text(json.dumps(written, indent=1) + "\n")
    return splits


def strip_parts(named: list[tuple[str, data.Record]], size: int) -> dict[str, list[tuple[str, data.Record]]]:
    """--valid-strip: every image of the train and valid parts split by :func:`data.strip_split`."""
    parts: dict[str, list[tuple[str, data.Record]]] = {"train": [], "valid": []}
    for name, record in named:
        train, valid = data.strip_split([record], size)
        parts["train"] += [(name, r) for r in train]
        parts["valid"] += [(name, r) for r in valid]
    if not parts["valid"]:
        largest = max((r.labels.shape for _, r in named), key=lambda s: min(s[0] // 4, s[1]))
        raise InputError(
            "each image keeps its bottom strip for validation, which takes one of at least 64 x 16 pixels "
            f"(the largest here is {largest[0]} x {largest[1]})"
        )
    return parts


def load_datasets(paths: list[str]) -> dict[str, list[data.Record]]:
    """Records of each dataset, by the path as given (the embedded sample when none is)."""
    paths = paths or [str(data.default_data())]
    if len(set(paths)) < len(paths):
        raise InputError(f"--data names a dataset twice: {' '.join(paths)}")
    return {path: data.load_records(path) for path in paths}
