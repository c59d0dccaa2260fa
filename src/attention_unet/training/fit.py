"""``fit``: training with Lightning, from the options to the exported best model.

Lightning provides the loop, checkpoints, early stopping, LR monitoring, CSV logging, devices and
DDP; nothing here re-implements them. The best checkpoint is exported as safetensors + JSON to
``RUN_DIR/model`` (rank 0 only), which ``evaluate``, ``predict`` and ``export`` read.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from .. import allocator
from ..errors import InputError
from ..io import data
from ..io.limits import machine_memory
from ..model import AttentionUNet
from .config import TrainConfig, init_path
from .datasets import EVAL_SIZE, EvalDataset, TrainDataset, load_datasets, prepare_splits, sample_weights, strip_parts
from .module import ExportBest, GlobalBatchNormSync, SegmentationTask, TrainReport, _jsonable

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
    total = machine_memory()
    if total is None:  # not POSIX: no estimate to compare with
        return
    need = training_memory(cfg) * max(1, int(cfg.devices) if str(cfg.devices).isdigit() else 1)
    if need > 0.9 * total and not cfg.force:
        raise InputError(
            f"this training needs about {need / 2**30:.1f} GiB (batch {cfg.batch_size}, {cfg.crop_size() or EVAL_SIZE[0]}^2 pixels, "
            f"width {cfg.model_config().width}) and the machine has {total / 2**30:.1f} GiB: lower --batch-size or the crop, or give --force"
        )


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


def fit(cfg: TrainConfig, callbacks: Sequence[L.Callback] = ()) -> Path:
    """Train as configured; returns the run folder (checkpoints, metrics.csv, model/).
    ``callbacks`` join the run's own (a progress display, a way to cancel)."""
    with quiet_lightning():
        return _fit(cfg, callbacks)


def _fit(cfg: TrainConfig, callbacks: Sequence[L.Callback] = ()) -> Path:
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
    trainer = _trainer(cfg, run_dir, callbacks)
    task = SegmentationTask(asdict(cfg.model_config()), _jsonable(asdict(cfg)))
    if cfg.init_from:
        from ..model import load_model

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
    import yaml

    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(_jsonable(asdict(cfg)), sort_keys=False))
    except OSError as exc:  # a read-only or full file system: one line, not a traceback
        raise InputError(f"out {run_dir}: cannot write there ({exc.strerror or exc})", "out") from None
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


def _trainer(cfg: TrainConfig, run_dir: Path, extra: Sequence[L.Callback] = ()) -> L.Trainer:
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
        *extra,
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
