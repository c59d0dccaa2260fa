"""Training with Lightning: the datasets, a thin LightningModule around the network, and ``fit``.

Lightning provides the loop, checkpoints, early stopping, LR monitoring, CSV logging, devices and
DDP; nothing here re-implements them. The best checkpoint is exported as safetensors + JSON to
``RUN_DIR/model`` (rank 0 only), which ``evaluate``, ``predict`` and ``export`` read.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.layer_sync import LayerSync
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from . import allocator, data
from .errors import InputError
from .instances import targets
from .model import AttentionUNet, ModelConfig, read_model_info, save_model
from .training.config import (  # noqa: F401 - also train's public names, as before the move
    AUGMENTS,
    FINETUNE,
    INIT_KEYS,
    LOSSES,
    OPTIMIZERS,
    RESUME_MAY_CHANGE,
    SCHEDULERS,
    TrainConfig,
    init_defaults,
    init_path,
    init_record,
    resumed_options,
)

EVAL_SIZE = (256, 256)  # the report's resize256 protocol, used for validation
# Peak training memory per batch pixel and unit of width, measured: the presets at 256 x 256, batch 8
# (BENCHMARKS.md, train RSS 5.49 / 2.83 / 1.53 GB for widths 64 / 32 / 16): 164-182 bytes.
TRAIN_BYTES_PER_PIXEL_WIDTH = 180


def training_memory(cfg: TrainConfig) -> float:
    """Estimated peak bytes of a training step: activations ~ batch x pixels x width (the deeper
    levels add at most as much again, included in the measured constant), plus weights, gradients
    and Adam's two moments, plus the process's own ~0.5 GB."""
    config = cfg.model_config()
    side = cfg.crop_size() or EVAL_SIZE[0]
    with torch.device("meta"):
        weights = sum(p.numel() for p in AttentionUNet(config).parameters())
    return TRAIN_BYTES_PER_PIXEL_WIDTH * cfg.batch_size * side * side * config.width + 16 * weights + 0.5e9


def check_training_memory(cfg: TrainConfig) -> None:
    """One line, before anything is built, when the estimate exceeds this machine's memory."""
    import os

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no estimate to compare with
        return
    need = training_memory(cfg) * max(1, int(cfg.devices) if str(cfg.devices).isdigit() else 1)
    if need > 0.9 * total and not cfg.force:
        raise InputError(
            f"this training needs about {need / 2**30:.1f} GiB (batch {cfg.batch_size}, {cfg.crop_size() or EVAL_SIZE[0]}^2 pixels, "
            f"width {cfg.model_config().width}) and the machine has {total / 2**30:.1f} GiB: lower --batch-size or the crop, or give --force"
        )


# ------------------------------------------------------------------------------------- datasets


def augmenter(kind: str) -> Any:
    """The albumentations pipeline on float32 [0, 1] images (None for 'none')."""
    import albumentations as A

    if kind == "none":
        return None
    steps = [A.HorizontalFlip(), A.VerticalFlip(), A.RandomRotate90()]
    if kind in ("full", "robust"):
        steps += [
            A.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.3, hue=0.08, p=0.6),
            A.ToGray(p=0.15),
            A.InvertImg(p=0.15),
            A.GaussianBlur(blur_limit=(3, 5), p=0.1),
        ]
    if kind == "robust":  # texture and noise of dim, large nuclei; out-of-focus planes
        steps += [A.GaussNoise(std_range=(0.02, 0.1), p=0.25), A.Defocus(radius=(1, 3), p=0.05)]
    return A.Compose(steps)


def stain_jitter(image: np.ndarray, rng: np.random.Generator, sigma: float = 0.1) -> np.ndarray:
    """H&E stain variation (Tellez et al. 2018): in haematoxylin-eosin-DAB space each stain's
    amount is scaled by U(1 - sigma, 1 + sigma) and shifted by U(-sigma, sigma) of its range.
    ``image`` is RGB in 0..1."""
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(np.clip(image, 1e-6, 1.0))
    span = np.maximum(hed.reshape(-1, 3).max(0) - hed.reshape(-1, 3).min(0), 1e-3)
    hed = hed * rng.uniform(1 - sigma, 1 + sigma, 3) + rng.uniform(-sigma, sigma, 3) * span
    return np.clip(hed2rgb(hed), 0.0, 1.0).astype(np.float32)


def pseudo_stain(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fluorescence image (0..1, nuclei bright) rendered as an H&E section: its intensity becomes
    the haematoxylin amount (nuclei dark purple), on eosin and a little haematoxylin that vary
    smoothly like tissue. The stain amounts span what skimage's rgb2hed measures on TNBC's slides
    (haematoxylin: nuclei 0.02-0.10, background 0.005-0.04; DAB channel about 0.015). Returns RGB 0..1."""
    import cv2
    from skimage.color import hed2rgb

    grey = image.mean(axis=2) if image.ndim == 3 else image
    h, w = grey.shape

    def field(low: float, high: float) -> np.ndarray:  # random tissue texture, low..high: coarse + fine
        grids = (int(rng.integers(3, 12)), int(rng.integers(16, 64)))
        layers = [cv2.resize(rng.uniform(0, 1, (n, n)).astype(np.float32), (w, h)) for n in grids]
        return low + (high - low) * (0.6 * layers[0] + 0.4 * layers[1])

    texture = grey * rng.uniform(0.8, 1.2, grey.shape).astype(np.float32)  # chromatin grain
    nucleus, ground = rng.uniform(0.035, 0.09), field(0.004, rng.uniform(0.01, 0.035))
    hed = np.stack(
        [
            ground + (nucleus - ground) * np.clip(texture, 0, 1),
            field(0.0, rng.uniform(0.003, 0.03)),
            field(0.005, 0.025),
        ],
        axis=-1,
    )
    return np.clip(hed2rgb(hed), 0.0, 1.0).astype(np.float32)


def stain_grain(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A stained crop (RGB 0..1) as a scanner of another sharpness would give it: half the time
    blurred (Gaussian sigma 0.5-1.5 px), half the time grainy: each stain's amount (rgb2hed) times
    1 + a * n, n unit noise correlated over 0.5-1 px, a 0.05-0.25. The DSB archive's stained images
    are smooth (median |Laplacian|, data.sharpness, 0.005-0.022), TNBC's 40x H&E crops grainy
    (0.032-0.111); the grain takes DSB-2018's stained crops to about 0.03-0.15 (checked on five),
    and unsharp masking would not (0.013 -> 0.018 at most: they have no fine texture to amplify)."""
    import cv2
    from skimage.color import hed2rgb, rgb2hed

    if rng.random() < 0.5:
        return cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.5)).astype(np.float32)
    noise = cv2.GaussianBlur(rng.standard_normal(image.shape).astype(np.float32), (0, 0), rng.uniform(0.5, 1.0))
    noise /= np.maximum(noise.std(axis=(0, 1), keepdims=True), 1e-6)
    hed = rgb2hed(np.clip(image, 1e-6, 1.0)) * (1 + rng.uniform(0.05, 0.25) * noise)
    return np.clip(hed2rgb(hed), 0.0, 1.0).astype(np.float32)


def scaled_crop(
    image: np.ndarray, labels: np.ndarray, size: int, scale: tuple[float, float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A size x size crop showing the image at a random scale (log-uniform, +-15% aspect jitter):
    a region of (size / sy, size / sx) pixels, resized (labels by nearest neighbour); padded by
    reflection where it runs out."""
    import cv2

    s = math.exp(rng.uniform(math.log(scale[0]), math.log(scale[1])))
    aspect = math.exp(rng.uniform(-0.15, 0.15))
    sy, sx = s * aspect, s / aspect
    h, w = image.shape[:2]
    ch, cw = max(1, round(size / sy)), max(1, round(size / sx))
    pad_h, pad_w = max(0, ch - h), max(0, cw - w)
    if pad_h or pad_w:
        image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)
        labels = cv2.copyMakeBorder(labels, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)
        h, w = image.shape[:2]
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    image, labels = image[y : y + ch, x : x + cw], labels[y : y + ch, x : x + cw]
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    # centred nearest neighbour, as data.resize (INTER_NEAREST would shift labels against the image)
    return image, cv2.resize(labels, (size, size), interpolation=cv2.INTER_NEAREST_EXACT)


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


# ---------------------------------------------------------------------------------------- module


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """BCE, soft Dice per output channel (averaged), or their sum. "dice" pools the batch;
    "image-dice" scores each image on its own, like the per-image F1 the model is judged by, so
    an image with few nuclei weighs as much as a crowded one."""
    loss = logits.new_zeros(())
    if "bce" in kind:
        loss = loss + F.binary_cross_entropy_with_logits(logits, target)
    if "dice" in kind:
        p, dims = torch.sigmoid(logits), (2, 3) if "image-dice" in kind else (0, 2, 3)
        loss = loss + (1 - (2 * (p * target).sum(dims) + 1) / (p.sum(dims) + target.sum(dims) + 1)).mean()
    return loss


def batch_pixel_scores(logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image F1, Jaccard, recall, precision at threshold 0.5 (sklearn's zero-division rule)."""
    pred, true = (logits > 0).flatten(1), target.flatten(1) > 0.5
    tp = (pred & true).sum(1).double()
    fp, fn = pred.sum(1) - tp, true.sum(1) - tp

    def ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(b > 0, a / b.clamp(min=1), torch.zeros_like(a))

    return {
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "iou": ratio(tp, tp + fp + fn),
        "recall": ratio(tp, tp + fn),
        "precision": ratio(tp, tp + fp),
    }


class SegmentationTask(L.LightningModule):
    """Loss, optimiser, schedule and metric logging around an :class:`AttentionUNet`."""

    def __init__(self, model_config: dict[str, Any], train_config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg = TrainConfig.from_dict(train_config)
        self.model = AttentionUNet(ModelConfig(**model_config))
        if self.cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        from torchmetrics import MeanMetric

        self.metrics = torch.nn.ModuleDict(
            {
                f"{stage}_{name}": MeanMetric()
                for stage in ("train", "val")
                for name in ("f1", "iou", "recall", "precision")
            }
        )
        self.started = time.monotonic()
        if self.cfg.freeze_encoder:
            for part in self.frozen():
                part.requires_grad_(False)

    def frozen(self) -> list[torch.nn.Module]:
        """The parts --freeze-encoder keeps: the encoder blocks and the bridge."""
        return [self.model.encoders, self.model.bridge] if self.cfg.freeze_encoder else []

    def on_train_epoch_start(self) -> None:
        for part in self.frozen():
            part.eval()  # BatchNorm keeps the statistics it started with

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = segmentation_loss(logits, y, self.cfg.loss)
        self.log(
            f"{stage}_loss",
            loss,
            prog_bar=True,
            on_step=stage == "train",
            on_epoch=True,
            batch_size=len(x),
            sync_dist=True,
        )
        for name, values in batch_pixel_scores(logits.detach()[:, :1], y[:, :1]).items():
            metric = self.metrics[f"{stage}_{name}"]
            metric.update(values)
            self.log(f"{stage}_{name}", metric, on_step=False, on_epoch=True, prog_bar=stage == "val" and name == "f1")
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self.log("minutes", (time.monotonic() - self.started) / 60, sync_dist=False, rank_zero_only=True)

    def configure_optimizers(self) -> Any:
        trained = [p for p in self.parameters() if p.requires_grad]
        if self.cfg.optimizer == "sgd":
            optimizer = torch.optim.SGD(trained, lr=self.cfg.lr, momentum=0.9)
        elif self.cfg.optimizer == "adamw":
            optimizer = torch.optim.AdamW(trained, lr=self.cfg.lr, weight_decay=1e-4)
        else:
            optimizer = torch.optim.Adam(trained, lr=self.cfg.lr)
        if self.cfg.scheduler == "cosine":
            steps = self.trainer.estimated_stepping_batches
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(1, int(steps)), eta_min=self.cfg.lr / 100
            )
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
        schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=5, min_lr=1e-7)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "monitor": "val_loss"}}


class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm whose training statistics are summed over all processes by a differentiable
    all-reduce. ``torch.nn.SyncBatchNorm`` refuses CPU tensors; this one works with gloo too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        total = all_reduce(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), x.new_full((1,), x.numel() / c)]))
        count, mean = total[-1], total[:c] / total[-1]
        var = total[c : 2 * c] / count - mean * mean
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * count / (count - 1), self.momentum)
        scale = self.weight * torch.rsqrt(var + self.eps)
        return x * scale[None, :, None, None] + (self.bias - mean * scale)[None, :, None, None]


class GlobalBatchNormSync(LayerSync):
    """Lightning layer-sync plugin that swaps every BatchNorm2d for :class:`GlobalBatchNorm2d`."""

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        for name, child in model.named_children():
            if type(child) is torch.nn.BatchNorm2d:
                synced = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum)
                synced.load_state_dict(child.state_dict())
                setattr(model, name, synced)
            else:
                self.apply(child)
        return model

    def revert(self, model: torch.nn.Module) -> torch.nn.Module:
        return model  # GlobalBatchNorm2d is a BatchNorm2d outside distributed training


class ExportBest(L.Callback):
    """At the end of fitting, write the best checkpoint's network as safetensors + JSON (rank 0)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def on_fit_end(self, trainer: L.Trainer, task: SegmentationTask) -> None:
        if not trainer.is_global_zero:
            return
        ckpt = trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", "") if ckpt else ""
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"] if best else task.state_dict()
        model = AttentionUNet(task.model.config)
        model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
        score = float(ckpt.best_model_score) if ckpt is not None and ckpt.best_model_score is not None else None
        metadata = {
            "train": _jsonable(asdict(task.cfg)),
            "best": {"monitor": task.cfg.monitor, "score": score, "checkpoint": Path(best).name},
        }
        if task.cfg.init_from:
            metadata["init"] = init_record(task.cfg.init_from)
            parent = read_model_info(init_path(task.cfg.init_from))
            if "inference" in parent:  # the settings tuned for the parent hold until tuned again
                metadata["inference"] = parent["inference"]
        save_model(model, self.run_dir / "model", metadata)


class TrainReport(L.Callback):
    """The run's report.html (:func:`reports.train_report`), rewritten after every epoch (rank 0)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def _write(self, trainer: L.Trainer) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            from .reports import train_report

            if trainer.logger is not None:
                trainer.logger.save()  # the CSV log is flushed now, not at its next interval
            train_report(self.run_dir)

    def on_train_epoch_end(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        self._write(trainer)

    def on_fit_end(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        self._write(trainer)


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(values, default=str))


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


# Lightning's talk about itself, not about the run: an advertisement for its cloud logger, the TPU
# line, notes on defaults this module sets on purpose. Matched by their wording: if it changes, they
# are merely shown again.
LIGHTNING_CHATTER = (
    "Tip: For seamless cloud logging",
    "TPU available:",
    "` was configured so",
    "Loading `train_dataloader`",
)


class _DropChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(words in record.getMessage() for words in LIGHTNING_CHATTER)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Training's output without Lightning's chatter, and without three warnings that mislead here:
    the CSV logger's "Previous log files in this directory will be deleted" reads as data loss, but
    fit() has checked the folder (empty, or this run's own on --resume, whose metrics.csv is set
    aside and merged back); "fewer training batches than the logging interval" on a small dataset,
    whose metrics are logged per epoch all the same; and Lightning's own use of a torch API that
    torch deprecates."""
    chatter = _DropChatter()
    loggers = [logging.getLogger(f"lightning.{part}.utilities.rank_zero") for part in ("pytorch", "fabric")]
    for logger in loggers:
        logger.addFilter(chatter)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
            warnings.filterwarnings("ignore", message=r"The number of training batches .* logging interval")
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(chatter)


def fit(cfg: TrainConfig) -> Path:
    """Train as configured; returns the run folder (checkpoints, metrics.csv, model/)."""
    with quiet_lightning():
        return _fit(cfg)


def _fit(cfg: TrainConfig) -> Path:
    cfg.validate()
    check_training_memory(cfg)
    allocator.keep_freed_memory()  # for the whole process: every step reuses the last one's memory
    run_dir, resume, created = _run_folder(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    try:
        train_loader, valid_loader = _loaders(cfg, run_dir)
    except InputError:
        if created:  # bad data: no half-made run folder that the fixed rerun would refuse
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    trainer = _trainer(cfg, run_dir)
    task = SegmentationTask(asdict(cfg.model_config()), _jsonable(asdict(cfg)))
    if cfg.init_from:
        from .model import load_model

        task.model.load_state_dict(load_model(init_path(cfg.init_from)).state_dict())
    earlier = _set_aside_log(run_dir) if resume and trainer.is_global_zero else None
    trainer.fit(task, train_loader, valid_loader, ckpt_path=resume, weights_only=True)
    if earlier is not None:
        _merge_log(earlier, run_dir / "metrics.csv", into=run_dir / "metrics.csv")
    return run_dir


def _run_folder(cfg: TrainConfig) -> tuple[Path, str | None, bool]:
    """The run folder, made, with the resolved options in it; the checkpoint to resume from; whether
    this call made the folder. Checked before anything is written: a failed --resume must not leave
    a folder that a new run refuses."""
    run_dir = Path(cfg.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    # an earlier run's model, or the user's own files, are not written over; checked where the run
    # is launched only (the processes a distributed run starts find the folder filled by it)
    launching = not any(os.environ.get(k) for k in ("LOCAL_RANK", "RANK", "NODE_RANK"))
    resume = newest_checkpoint(run_dir) if cfg.resume == "last" else (cfg.resume or None)
    if resume and not Path(resume).is_file():
        raise InputError(f"{resume}: no checkpoint to resume from")
    if launching and not cfg.resume and run_dir.is_dir() and any(run_dir.iterdir()):
        raise InputError(
            f"--out {run_dir}: holds files already; choose another --out (or continue a train run there with --resume last)"
        )
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    import yaml

    (run_dir / "config.yaml").write_text(yaml.safe_dump(_jsonable(asdict(cfg)), sort_keys=False))
    return run_dir, resume, created


def _loaders(cfg: TrainConfig, run_dir: Path) -> tuple[DataLoader, DataLoader]:
    """The training loader (balanced when asked) and the validation loader, from every dataset's split."""
    datasets = load_datasets(cfg.data)
    splits = prepare_splits(datasets, cfg, run_dir)
    parts = {
        part: [(name, r) for name, records in datasets.items() for r in data.select(records, splits[name], part)]
        for part in ("train", "valid")
    }
    if cfg.valid_strip:
        parts = strip_parts(parts["train"] + parts["valid"], cfg.valid_strip)
    train_records, valid_records = [r for _, r in parts["train"]], [r for _, r in parts["valid"]]
    train_set = TrainDataset(train_records, cfg)
    weights = sample_weights(train_records, len(train_set), [name for name, _ in parts["train"]])
    sampler = WeightedRandomSampler(weights, len(train_set)) if cfg.balance else None
    loader_args = {"num_workers": cfg.workers, "persistent_workers": cfg.workers > 0}
    train_loader = DataLoader(
        train_set,
        cfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=len(train_set) > cfg.batch_size,
        **loader_args,
    )
    size = None if cfg.valid_strip else EVAL_SIZE
    valid_set = EvalDataset(valid_records, cfg.norm, cfg.contour, cfg.distance, size=size)
    # strips differ in size: one at a time
    return train_loader, DataLoader(valid_set, 1 if cfg.valid_strip else cfg.batch_size, **loader_args)


def _trainer(cfg: TrainConfig, run_dir: Path) -> L.Trainer:
    """Lightning's Trainer with the run's checkpoints, early stopping, LR log, export and report."""
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger

    mode = "min" if cfg.monitor == "val_loss" else "max"
    checkpoint = ModelCheckpoint(run_dir / "checkpoints", filename="best-{epoch:03d}", monitor=cfg.monitor, mode=mode)
    # last.ckpt after every epoch: Lightning 2.6's save_last writes it only when a best one is saved,
    # so --resume last would repeat every epoch since the best (measured: a 3-epoch CPU run kept epoch 0)
    latest = ModelCheckpoint(run_dir / "checkpoints", filename="last", enable_version_counter=False)
    callbacks = [
        checkpoint,  # first: trainer.checkpoint_callback, the best one, is what ExportBest exports
        latest,
        EarlyStopping(cfg.monitor, patience=cfg.early_stopping, mode=mode),
        LearningRateMonitor("epoch"),
        TQDMProgressBar(),
        ExportBest(run_dir),
        TrainReport(run_dir),
    ]
    on_gpu = cfg.accelerator in ("gpu", "cuda") or (cfg.accelerator == "auto" and torch.cuda.is_available())
    return L.Trainer(
        max_epochs=cfg.epochs,
        max_time={"minutes": cfg.max_minutes} if cfg.max_minutes else None,
        accelerator=cfg.accelerator,
        devices=int(cfg.devices) if str(cfg.devices).isdigit() else cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        # torch's SyncBatchNorm is GPU-only: use it there, and the all-reduce version elsewhere
        sync_batchnorm=cfg.sync_bn and on_gpu,
        plugins=[GlobalBatchNormSync()] if cfg.sync_bn and not on_gpu else None,
        precision=cfg.precision,
        callbacks=callbacks,
        logger=CSVLogger(run_dir, name="", version=""),
        default_root_dir=run_dir,
        limit_train_batches=cfg.limit_batches,
        log_every_n_steps=10,
        deterministic=False,
        enable_model_summary=False,
    )


def newest_checkpoint(run_dir: Path) -> str:
    """The run's newest ``last*.ckpt`` (Lightning writes last-v1.ckpt beside a last.ckpt it did
    not write, e.g. in a copied run folder)."""
    found = sorted((run_dir / "checkpoints").glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else str(run_dir / "checkpoints" / "last.ckpt")


def _set_aside_log(run_dir: Path) -> Path | None:
    """Lightning's CSV logger starts metrics.csv afresh; keep the earlier epochs to merge back. An
    earlier resume that was itself interrupted left its rows set aside: this run's go after them."""
    log, earlier = run_dir / "metrics.csv", run_dir / "metrics.before-resume.csv"
    if earlier.is_file():
        if log.is_file():
            _merge_log(earlier, log, into=earlier)  # the interrupted resume's rows after the others
        return earlier
    if not log.is_file():
        return None
    return log.rename(earlier)


def _merge_log(first: Path, second: Path, into: Path) -> None:
    """``into`` = ``first``'s rows, then ``second``'s, over the union of columns; the other file is removed."""
    import csv

    old = list(csv.DictReader(first.open()))
    new = list(csv.DictReader(second.open())) if second.is_file() else []
    columns = list(dict.fromkeys([*(old[0] if old else {}), *(new[0] if new else {})]))
    with into.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(old + new)
    (second if into == first else first).unlink(missing_ok=True)
