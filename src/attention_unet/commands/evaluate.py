"""Scoring a model on a dataset split (the ``evaluate`` command) and the offline ``demo``.

Protocols: ``resize256`` (the report's: image and mask resized to 256 x 256, threshold 0.5) and
``native`` (prediction at the image's own size against its own mask). Pixel metrics are per image,
then the mean over images; object metrics compare instance labels (see :mod:`metrics`).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import metrics
from ..errors import InputError
from ..inference.engine import load_predictor
from ..inference.pipeline import Predictor, segment_image
from ..io import data, limits
from ..io.images import to_uint8
from ..io.outputs import OutputFolder, spreadsheet_cell
from .jobs import JOBS, in_order

OBJECT_METRICS = ("dsb_score", "tp_fp_fn_ratio_at_0.5", "relative_count_error", "f1d", "aji", "pq")


def choose_split(
    model_path: str | None, data_path: str | Path, records: list[data.Record], split_file: str | None
) -> dict[str, list[str]]:
    """--split-file, else the training run's split.json when it trained on this data (one of its
    datasets), else this data's :func:`data.default_split`."""
    if split_file:
        return data.load_split(split_file, str(data_path))
    if model_path:
        run = Path(model_path)
        run = run if run.is_dir() else run.parent
        for folder in (run, run.parent):
            config = folder / "config.yaml"
            if (folder / "split.json").is_file() and config.is_file():
                import yaml

                trained_on = (yaml.safe_load(config.read_text()) or {}).get("data") or [str(data.default_data())]
                trained_on = [trained_on] if isinstance(trained_on, str) else trained_on
                if any(Path(t).resolve() == Path(data_path).resolve() for t in trained_on):
                    return data.load_split(folder / "split.json", str(data_path))
    return data.default_split([r.id for r in records])


def strip(image: np.ndarray, true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The report's figure: image | ground truth | prediction, side by side (8-bit RGB)."""
    grey = lambda m: np.repeat((m > 0).astype(np.uint8)[..., None] * 255, 3, axis=2)
    gap = np.full((image.shape[0], 4, 3), 128, np.uint8)
    return np.concatenate([to_uint8(image), gap, grey(true), gap, grey(pred)], axis=1)


def zoomed_size(shape: tuple[int, ...], zoom: float) -> tuple[int, int]:
    return max(8, round(shape[0] * zoom)), max(8, round(shape[1] * zoom))


def check_zoom(records: list[data.Record], protocol: str, zoom: float) -> None:
    """Every image within the pixel limit at ``zoom``, before any is predicted: --zoom 100 on a
    256 x 256 image had made 25,600² pixels, and the process was killed for memory."""
    for r in records:
        limits.check_pixels(*zoomed_size(data.protocol_shape(r, protocol), zoom), f"{r.id} at --zoom {zoom:g}")


def zoomed(image: np.ndarray, labels: np.ndarray, zoom: float) -> tuple[np.ndarray, np.ndarray]:
    """Image and labels resized by ``zoom`` (labels by nearest neighbour): the same nuclei at
    another size, to measure how prediction copes with nucleus sizes a dataset does not have."""
    if zoom == 1.0:
        return image, labels
    size = zoomed_size(image.shape, zoom)
    return data.resize(image, size), data.resize(labels, size, nearest=True)


def score_records(
    predictor: Predictor,
    records: list[data.Record],
    protocol: str,
    save_strip: Callable[[str, np.ndarray], None] | None,
    zoom: float = 1.0,
) -> list[dict[str, Any]]:
    """Per-image rows: id, modality, size, pixel metrics and object metrics; ``save_strip(id,
    picture)`` takes each image | truth | prediction strip when given."""
    from tqdm import tqdm

    def score(r: data.Record) -> dict[str, Any]:
        image, labels = zoomed(*data.protocol_view(r, protocol), zoom)
        chosen = predictor.for_image(image)
        probs, _, labelled, _ = segment_image(chosen, image)
        pred = probs[0] > 0.5
        row: dict[str, Any] = {
            "id": r.id,
            "modality": data.modality(r.image),
            "height": r.image.shape[0],
            "width": r.image.shape[1],
        }
        row.update(metrics.pixel_scores(pred, labels > 0))
        row.update(metrics.object_scores(labels, labelled))
        row["model"] = chosen.name
        if save_strip is not None:
            save_strip(r.id, strip(image, labels, pred))
        return row

    scored = in_order(score, records, JOBS)  # images side by side, rows in the records' order
    return list(tqdm(scored, total=len(records), desc=f"evaluate ({protocol})", unit="image", file=sys.stderr))


def summarise(rows: list[dict[str, Any]], protocol: str) -> dict[str, Any]:
    summary: dict[str, Any] = {"protocol": protocol, "n_images": len(rows)}
    summary.update(metrics.mean_scores(rows, metrics.PIXEL_METRICS + OBJECT_METRICS))
    by_kind = {}
    for kind in sorted({r["modality"] for r in rows}):
        group = [r for r in rows if r["modality"] == kind]
        by_kind[kind] = {"n_images": len(group), **metrics.mean_scores(group, ("f1", "jaccard", "dsb_score"))}
    summary["by_modality"] = by_kind
    return summary


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"protocol {summary['protocol']}, {summary['n_images']} images, mean per image", ""]
    lines.append("| metric | value |")
    lines.append("|---|---|")
    for key in metrics.PIXEL_METRICS + OBJECT_METRICS:
        lines.append(f"| {key} | {summary[key]:.3f} |")
    lines.append("")
    for kind, values in summary["by_modality"].items():
        lines.append(
            f"{kind}: {values['n_images']} images, F1 {values['f1']:.3f}, Jaccard {values['jaccard']:.3f}, DSB score {values['dsb_score']:.3f}"
        )
    return "\n".join(lines)


def evaluate(
    model: str | None,
    data_path: str | Path | None,
    *,
    split: str = "test",
    protocol: str = "resize256",
    out: str | Path = "evaluation",
    split_file: str | None = None,
    strips: bool = True,
    zoom: float = 1.0,
    **predictor: Any,
) -> dict[str, Any]:
    """Score a model; writes score.csv, summary.json and strips/ under ``out``; returns the summary.
    ``zoom`` resizes each image and its labels first (see :func:`zoomed`); ``predictor`` holds
    :func:`~attention_unet.inference.engine.load_predictor`'s keywords (device, tile, tta, scale, ...)."""
    if not (zoom > 0 and math.isfinite(zoom)):
        raise InputError(f"--zoom must be a positive factor, not {zoom}")
    data_path = data_path or data.default_data()
    records = data.load_records(data_path)
    # 'all' needs no split, so a user's own handful of annotated images (fewer than a split's 5) scores
    chosen = (
        list(records)
        if split == "all"
        else data.select(records, choose_split(model, data_path, records, split_file), split)
    )
    if not chosen:
        raise InputError(f"{data_path}: the '{split}' part is empty")
    check_zoom(chosen, protocol, zoom)
    loaded = load_predictor(model, **predictor)
    # the user's own files in --out are never replaced (outputs.OutputFolder); our earlier ones are
    folder = OutputFolder(out)
    for name in ("score.csv", "summary.json", "report.html"):  # before the predictions, not after
        folder.check(folder.root / name)
    folder.lock()
    try:
        rows = score_records(loaded, chosen, protocol, strip_writer(folder) if strips else None, zoom)
        summary = {**summarise(rows, protocol), "data": str(data_path), "split": split, "zoom": zoom}
        write_scores(folder, rows, summary, strips)
    finally:
        folder.release()
    return summary


def strip_writer(folder: OutputFolder) -> Callable[[str, np.ndarray], None]:
    """Where each image | truth | prediction strip goes: ``strips/<id>.png``."""
    import imageio.v3 as iio

    def save_strip(name: str, picture: np.ndarray) -> None:
        folder.write(folder.root / "strips" / f"{name}.png", lambda t: iio.imwrite(t, picture, extension=".png"))

    return save_strip


def write_scores(folder: OutputFolder, rows: list[dict[str, Any]], summary: dict[str, Any], strips: bool) -> None:
    """score.csv (a row per image, spreadsheet-safe), summary.json and report.html."""
    from ..io.reports import evaluate_report

    def write_rows(path: Path) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: spreadsheet_cell(v) for k, v in row.items()} for row in rows)

    folder.write(folder.root / "score.csv", write_rows)
    folder.write(folder.root / "summary.json", lambda t: t.write_text(json.dumps(summary, indent=2) + "\n"))
    report = evaluate_report(summary, rows, strips)
    folder.write(folder.root / "report.html", lambda t: t.write_text(report, encoding="utf-8"))


def evaluate_datasets(
    model: str | None, datasets: list[str] | None, *, out: str | None = None, json_lines: bool = False, **options: Any
) -> int:
    """``evaluate`` over each dataset in turn (into OUT/<dataset name>/ when there are several),
    printing each one's table (or a JSON line), then one line per dataset; ``options`` are
    :func:`evaluate`'s keywords."""
    paths = datasets or [None]
    root = Path(out or "evaluation")
    summaries = []
    for path in paths:
        folder = root / Path(path).stem if len(paths) > 1 else root
        summary = evaluate(model, path, out=folder, **options)
        summaries.append(summary)
        if json_lines:
            print(
                json.dumps(
                    {k: summary[k] for k in ("data", "protocol", "n_images", *metrics.PIXEL_METRICS, *OBJECT_METRICS)}
                )
            )
        else:
            print(f"{summary['data']}, {options.get('split', 'test')}:\n" + format_table(summary))
            strips = f"; strips: {folder / 'strips'}" if options.get("strips", True) else ""
            print(f"\nper-image scores: {folder / 'score.csv'}{strips}\n")
    if len(summaries) > 1 and not json_lines:
        print("| dataset | images | F1 | Jaccard | DSB score |\n|---|---|---|---|---|")
        for s in summaries:
            print(f"| {s['data']} | {s['n_images']} | {s['f1']:.3f} | {s['jaccard']:.3f} | {s['dsb_score']:.3f} |")
    return 0


def demo(out: str | None, minutes: float) -> int:
    """Train the small preset on the embedded sample for a few minutes, then evaluate its test part."""
    import time

    from ..training.config import TrainConfig
    from ..training.fit import fit

    out = out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"

    run = fit(
        TrainConfig(
            preset="small",
            input="crop:128",
            augment="full",
            norm="percentile",
            loss="bce+dice",
            lr=1e-3,
            scheduler="cosine",
            samples_per_epoch=400,
            epochs=12,
            monitor="val_f1",
            max_minutes=minutes,
            out=out,
        )
    )
    summary = evaluate(str(run), None, split="test", protocol="resize256", out=Path(out) / "evaluation")
    print(format_table(summary))
    from .predict import PredictOptions, predict_files

    predictions = Path(out) / "predictions"
    predict_files(
        [str(data.SAMPLE_DIR / "images")], out=predictions, predictor=load_predictor(str(run)), options=PredictOptions()
    )
    print(f"\nstrips (image | ground truth | prediction): {Path(out) / 'evaluation' / 'strips'}")
    print(
        f"reports: {Path(run) / 'report.html'}, {Path(out) / 'evaluation' / 'report.html'}, {predictions / 'index.html'}"
    )
    return 0
