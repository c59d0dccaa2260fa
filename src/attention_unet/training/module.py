"""The LightningModule around the network (loss, pixel scores), the global batch norm of
multi-process training, and the callbacks that export the best model and report the run."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.layer_sync import LayerSync

from ..model import AttentionUNet, ModelConfig, read_model_info, save_model
from .config import (
    TrainConfig,
    init_path,
    init_record,
)

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
            from ..io.reports import train_report

            if trainer.logger is not None:
                trainer.logger.save()  # the CSV log is flushed now, not at its next interval
            train_report(self.run_dir)

    def on_train_epoch_end(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        self._write(trainer)

    def on_fit_end(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        self._write(trainer)


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(values, default=str))
