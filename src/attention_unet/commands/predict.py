"""The ``predict`` command: the file loop and its outputs. Models are opened by
:mod:`attention_unet.inference.engine`, images by :mod:`images`."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..inference.blockwise import (
    BlockSettings,
    block_shapes,
    dask_client,
    model_fingerprint,
    open_lazy,
    predictor_shared,
    prepare,
    sample_mosaic,
    segment,
    zarr_plane,
)
from ..inference.choice import AUTO
from ..inference.engine import ENGINES, load_predictor
from ..inference.pipeline import Predictor, segment_image
from ..inference.plan import Plan
from ..io import data, limits
from ..io.images import check_pixel_size, find_inputs, heat_map, is_zarr, open_image, overlay, write_png
from ..io.measure import MeasureSettings, geojson_features, keep, measurements, outlines, write_geojson
from ..io.measure import rois as roi_set
from ..io.measure import write_table as write_measurement_csv
from ..io.outputs import OutputFolder, from_spreadsheet_cell, spreadsheet_cell, written_by_a_run
from ..io.reports import predict_index
from ..model import zoo
from ..model.zoo import licence_notes
from ..settings import check_threshold
from .jobs import JOBS, Admission, check_jobs, in_order

BLOCKWISE = ("auto", "always", "never")
__all__ = ["ENGINES", "PredictOptions", "load_predictor", "predict_files"]


@dataclass(frozen=True)
class PredictOptions:
    """What ``predict`` writes and how it reads files, beyond the model's inference settings."""

    threshold: float = 0.5  # foreground probability
    channel: str | int | None = None  # the nucleus channel: an index or an OME channel name
    axes: str | None = None  # overrides the axes a file declares
    pixel_size: float | None = None  # µm per pixel, overriding the file's
    diameter: str | None = None  # "12" (px) or "6um": the nuclei's typical diameter
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    rois: bool = False  # <name>_rois.zip, an ImageJ/Fiji ROI set
    geojson: bool = False  # <name>_nuclei.geojson, QuPath detections
    save_prob: bool = False
    attention: bool = False
    skip_existing: bool = False  # leave out inputs whose outputs an earlier run here completed
    blockwise: str = "auto"  # auto: zarr inputs and TIFF planes above blocks.above pixels; always; never
    blocks: BlockSettings = field(default_factory=BlockSettings)
    jobs: int = JOBS  # images predicted at once (.jobs: those above a block-wise window run alone)


def parse_diameter(text: str) -> tuple[float, str]:
    """(value, "px" or "um") from "12", "12px", "6um", "6 µm" or "6micron".

    >>> parse_diameter("6 µm"), parse_diameter("12")
    ((6.0, 'um'), (12.0, 'px'))
    """
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(px|um|µm|micron|microns)?\s*", str(text))
    try:
        value = float(match.group(1)) if match else float("nan")
    except ValueError:
        value = float("nan")
    if not value > 0 or not math.isfinite(value):
        raise InputError(f"--diameter must be a positive size in pixels (12) or µm (6um), not '{text}'")
    return value, "px" if not match.group(2) or match.group(2) == "px" else "um"


@dataclass
class Summary:
    rows: list[dict] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # input -> why it was not segmented
    skipped: int = 0  # inputs whose outputs an earlier run finished (--skip-existing)


def summarise(name: str, labels: np.ndarray, model: str = "", plan: Plan | None = None) -> dict:
    areas = np.bincount(labels.ravel())[1:]
    return summary_row(name, labels.shape, areas[areas > 0], model, plan)


def summary_row(
    name: str, shape: tuple[int, ...], areas: np.ndarray, model: str = "", plan: Plan | None = None
) -> dict:
    """summary.csv's row for an image of ``shape`` whose nuclei have these areas (pixels), the
    model used, and the plan it was predicted by: the scale, and the typical nucleus diameter
    auto scale measured (image pixels; blank where it measured none: a scale or diameter given)."""
    return {
        "file": name,
        "model": model,
        "height": shape[0],
        "width": shape[1],
        "nucleus_count": len(areas),
        "foreground_fraction": round(float(areas.sum()) / (shape[0] * shape[1]), 6),
        "mean_area_px": round(float(areas.mean()), 2) if len(areas) else 0.0,
        "median_area_px": float(np.median(areas)) if len(areas) else 0.0,
        **({"scale": round(plan.factor, 4)} if plan is not None else {}),
        **({"auto_diameter_px": round(plan.diameter, 1)} if plan is not None and plan.diameter else {}),
    }


def for_diameter(
    predictor: Predictor, diameter: tuple[float, str] | None, pixel_size: float | None, path: Path
) -> Predictor:
    """The predictor rescaled for ``--diameter`` (pixels, or µm with the file's pixel size)."""
    if diameter is None:
        return predictor
    value, unit = diameter
    if unit == "um" and pixel_size is None:
        raise InputError(
            f"{path}: --diameter {value:g}um needs the pixel size, which the file does not give: add --pixel-size UM"
        )
    pixels = value / pixel_size if unit == "um" else value
    return predictor.for_diameter(pixels)


def predict_files(
    inputs: list[str],
    *,
    out: str | Path,
    predictor: Predictor,
    options: PredictOptions,
    recipe: dict | None = None,
) -> int:
    """Segment every image in ``inputs`` (files, folders, globs) into ``out``; returns the exit
    code: 0, 1 when some files failed (each named on stderr, the others finished), 2 when all did.
    ``recipe`` is :func:`load_predictor`'s keywords for ``predictor``: how the workers of a
    dask.distributed cluster load it (``options.blocks.scheduler``)."""
    if options.blocks.scheduler and recipe is None:
        raise InputError("a dask.distributed scheduler needs the predictor's recipe (load_predictor's keywords)")
    recipe = recipe if recipe is not None else {"local": id(predictor)}
    # local workers use this predictor instead of loading it again
    with predictor_shared(recipe, predictor), dask_client(options.blocks) as client:
        return _predict_files(inputs, out=out, predictor=predictor, options=options, recipe=recipe, client=client)


def check_options(options: PredictOptions, predictor: Predictor) -> tuple[float, str] | None:
    """One line for a bad option before any file is read; the parsed --diameter."""
    check_threshold(options.threshold, "--threshold")
    check_jobs(options.jobs, "--jobs")
    if options.blockwise not in BLOCKWISE:
        raise InputError(f"--blockwise must be one of {', '.join(BLOCKWISE)}, not {options.blockwise}")
    options.blocks.check()
    check_pixel_size(options.pixel_size)
    diameter = parse_diameter(options.diameter) if options.diameter is not None else None
    if diameter is not None and diameter[1] == "px":  # a bad size in pixels is one line before any file
        predictor.for_diameter(diameter[0])
    return diameter


def inputs_to_do(inputs: list[str], folder: OutputFolder) -> list[tuple[Path, Path]]:
    """The input files, less those an earlier run of ours wrote (outputs are not inputs)."""
    found, manifests = list(find_inputs(inputs)), {}
    files = [(p, rel) for p, rel in found if not (folder.is_ours(p) or written_by_a_run(p, manifests))]
    if len(files) < len(found):
        print(f"left out {len(found) - len(files)} file(s) that earlier attention-unet runs wrote", file=sys.stderr)
    if not files:
        raise InputError(f"no images found in {' '.join(inputs)}")
    return files


def _predict_files(
    inputs: list[str], *, out: str | Path, predictor: Predictor, options: PredictOptions, recipe: dict, client: object
) -> int:
    from tqdm import tqdm

    diameter = check_options(options, predictor)
    folder = OutputFolder(out)
    files = inputs_to_do(inputs, folder)
    folder.lock()
    try:
        summary = Summary()
        earlier = earlier_rows(folder) if options.skip_existing else {}
        if not folder.made_with(run_stamp(predictor, options, recipe)) and earlier:
            print(f"note: {out} holds outputs made with another model or other options; --skip-existing redoes them")
            earlier = {}
        given = {"folder": folder, "predictor": predictor, "options": options, "diameter": diameter}
        job = FileJob(given, earlier, recipe, client, Admission(options.blocks.window))
        unwritten = False  # summary rows not yet in summary.csv
        items = list(zip(files, unique_stems([r for _, r in files])))
        with contextlib.closing(in_order(job.run, items, options.jobs)) as outcomes:
            progress = tqdm(zip(items, outcomes), total=len(items), desc="predict", unit="file")
            for k, (((path, _), _), (outcome, found)) in enumerate(progress, start=1):
                if outcome == "failed":
                    summary.failed[str(path)] = found
                    unwritten = bool(summary.rows)  # the index lists it, once there is an index
                    continue
                summary.rows += found
                summary.skipped += outcome == "skipped"
                unwritten = True
                if outcome == "done" and due(k, len(files)):  # as images finish: a stopped run keeps what it did
                    write_summary(folder, summary.rows, summary.failed)
                    unwritten = False
        if unwritten:  # rows since the last write, --skip-existing's, or a failure after the last one done
            write_summary(folder, summary.rows, summary.failed)
    finally:
        folder.release()  # also when interrupted: a rerun in this process may lock it again
    return report_run(summary, len(files), out)


@dataclass(frozen=True)
class FileJob:
    """One input file of a batch, run beside others (:func:`.jobs.in_order`): ``given`` are the
    keywords every file's prediction takes; ``earlier`` the summary rows of files an earlier run
    finished (--skip-existing)."""

    given: dict
    earlier: dict[str, list[dict]]
    recipe: dict
    client: object
    admission: Admission

    def run(self, item: tuple[tuple[Path, Path], str]) -> tuple[str, Any]:
        """("done", its summary rows), ("skipped", the earlier run's rows) or ("failed", why)."""
        from tqdm import tqdm

        (path, _), stem = item
        folder, options = self.given["folder"], self.given["options"]
        if options.skip_existing and folder.done(folder.root / f"{stem}_nuclei.csv") and str(path) in self.earlier:
            return "skipped", self.earlier[str(path)]  # the nuclei table is written last: the file was finished
        try:
            if wants_blocks(path, options):
                with self.admission.admit(math.inf):  # alone: its blocks run on --workers threads
                    rows = predict_blockwise(path, stem=stem, **self.given, recipe=self.recipe, client=self.client)
            else:
                source = open_image(path, axes=options.axes, pixel_size=options.pixel_size)
                with self.admission.admit(math.prod(source.shape_yx)):  # small images run side by side
                    rows = predict_file(source, stem=stem, **self.given)
        except (InputError, OSError) as exc:  # OSError: an output name too long, a full disk
            reason = str(exc) if isinstance(exc, InputError) else f"{path}: cannot write its outputs ({exc.strerror})"
            tqdm.write(f"warning: {reason}", file=sys.stderr)  # on its own line, not after the bar
            return "failed", reason
        return "done", [{"input": str(path), **row} for row in rows]


def run_stamp(predictor: Predictor, options: PredictOptions, recipe: dict) -> str:
    """What a file's outputs depend on besides the file: the model (each weights file's sha256), its
    settings and predict's options (not where or how fast it runs)."""
    model = recipe.get("model") if "local" not in recipe else predictor.name
    names = list(zoo.entries()) if str(model) == AUTO else [model]
    given = dataclasses.asdict(options)
    given.pop("skip_existing")
    given.pop("jobs")
    for key in ("workers", "scheduler"):
        given["blocks"].pop(key, None)
    recipe = {k: v for k, v in recipe.items() if k not in ("local", "device", "batch_size")}
    weights = [model_fingerprint(str(n) if n is not None else None) for n in names]
    settings = dataclasses.asdict(predictor.settings)
    return json.dumps({"weights": weights, "recipe": recipe, "settings": settings, "options": given}, default=str)


def due(done: int, total: int) -> bool:
    """Whether summary.csv and index.html are rewritten after ``done`` of ``total`` files: after
    each of the first 20, then every 1% of the batch, at least every 10 files (a rewrite of 20,000 rows takes 0.2 s: after
    every file, a batch of 20,000 spent half an hour rewriting). A file finished after the last
    rewrite is redone by --skip-existing, never lost.

    >>> [n for n in range(1, 20_001) if due(n, 20_000)][18:23]
    [19, 20, 200, 400, 600]
    """
    return done <= 20 or done % max(10, total // 100) == 0


def report_run(summary: Summary, n_files: int, out: str | Path) -> int:
    """The run's closing lines (outputs, each model's licence, the files that failed) and its exit code."""
    done = n_files - len(summary.failed) - summary.skipped
    skipped = f" ({summary.skipped} skipped: done by an earlier run)" if summary.skipped else ""
    print(f"{done} file(s) segmented{skipped}, outputs in {out}", file=sys.stderr)
    for line in licence_notes({str(row.get("model", "")) for row in summary.rows}):
        print(line, file=sys.stderr)
    if summary.failed:
        print(f"{len(summary.failed)} file(s) failed: " + ", ".join(summary.failed), file=sys.stderr)
        return 2 if len(summary.failed) == n_files else 1  # nothing done: as a bad option; else partly done
    return 0


def earlier_rows(folder: OutputFolder) -> dict[str, list[dict]]:
    """An earlier run's summary rows by input path (for --skip-existing)."""
    import csv

    path = folder.root / "summary.csv"
    if not folder.done(path):
        return {}
    rows: dict[str, list[dict]] = {}
    # -sig: saved by a spreadsheet; surrogateescape: a file name that is not UTF-8 reads back as written
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        for row in csv.DictReader(f):
            row = {k: from_spreadsheet_cell(v) for k, v in row.items() if isinstance(k, str) and isinstance(v, str)}
            if "input" not in row:  # not a summary of ours: nothing is taken from it, every file is redone
                return {}
            rows.setdefault(row["input"], []).append(row)
    return rows


CONTROL = re.compile("[\x00-\x1f\x7f]")


def unique_stems(paths: list[Path]) -> list[str]:
    """Output stems for input paths: the path without its suffix, and where two inputs share one
    (x.png beside x.tif, or the same name in two input folders) the later ones get _2, _3, ...,
    skipping any stem that another input has as its own (x_2.png beside x.png and x.tif).

    >>> unique_stems([Path("a/x.png"), Path("a/x.tif"), Path("y.ome.tif"), Path("a/x.png")])
    ['a/x', 'a/x_2', 'y', 'a/x_3']
    >>> unique_stems([Path("x.png"), Path("x.tif"), Path("x_2.png")])
    ['x', 'x_3', 'x_2']

    Control characters (a newline, a tab) become ``_`` in output names, which lists and tables hold
    one per line:

    >>> unique_stems([Path("a\\nb.png"), Path("a_b.png")])
    ['a_b', 'a_b_2']
    """
    plain = [CONTROL.sub("_", path.with_suffix("").as_posix().removesuffix(".ome")) for path in paths]
    taken = set(plain)
    used: set[str] = set()
    stems: list[str] = []
    for stem in plain:
        chosen, k = stem, 1
        while chosen in used:
            k += 1
            chosen = f"{stem}_{k}"
            chosen = chosen if chosen not in taken else stem  # another input's own stem: try the next
        used.add(chosen)
        stems.append(chosen)
    return stems


def write_summary(folder: OutputFolder, rows: list[dict], failed: dict[str, str] | None = None) -> None:
    """summary.csv and the index.html of thumbnails."""
    import csv

    columns = list(dict.fromkeys(k for row in rows for k in row))

    def write(path: Path) -> None:
        # a file name that is not UTF-8 (Latin-1 from an old system, say) is written as its bytes
        with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows({k: spreadsheet_cell(v) for k, v in row.items()} for row in rows)

    folder.write(folder.root / "summary.csv", write)
    index = predict_index(folder.root, rows, failed or {})
    folder.write(folder.root / "index.html", lambda t: t.write_text(index, encoding="utf-8", errors="replace"))


@dataclass
class Collected:
    """What one file's planes add up to: summary rows, measurement tables, ROIs, GeoJSON features."""

    rows: list[dict] = field(default_factory=list)
    tables: list = field(default_factory=list)
    rois: list = field(default_factory=list)
    features: list = field(default_factory=list)

    def add(self, k: int, where: dict, labels: np.ndarray, table: dict, options: PredictOptions) -> None:
        stack = bool(where)
        self.tables.append((where, table))
        shapes = outlines(labels) if options.rois or options.geojson else {}
        if options.rois:
            self.rois.extend(roi_set(shapes, plane=k + 1 if stack else None))
        if options.geojson:
            self.features.extend(geojson_features(shapes, table, where))


def nuclei_channel(source: Any, path: Path, options: PredictOptions) -> int | None:
    """The channel that holds the nuclei (None: the image's colour); one line when it must be given."""
    channel = source.channel_index(options.channel)
    if channel is None and source.n_channels > 1 and not source.rgb:
        names = f" ({', '.join(source.channel_names)})" if any(source.channel_names) else ""
        raise InputError(f"{path}: {source.n_channels} channels{names}: give --channel (the one that holds the nuclei)")
    return channel


def distinct(names: list[str]) -> list[str]:
    """Channel names made distinct for the table's columns (two channels named DAPI wrote one
    column over the other): the later ones get _2, _3, ...

    >>> distinct(["DAPI", "GFP", "DAPI", "dapi"])
    ['DAPI', 'GFP', 'DAPI_2', 'dapi_3']
    """
    used: set[str] = set()
    out = []
    for name in names:
        chosen, k = name, 1
        while chosen.lower() in used:
            k += 1
            chosen = f"{name}_{k}"
        used.add(chosen.lower())
        out.append(chosen)
    return out


def plane_image(plane: Any, channel: int | None, path: Path, first: bool) -> np.ndarray:
    """The RGB image the network sees of one plane; on the first, a note for a composite of colours."""
    image = data.to_rgb(plane.channels[..., channel] if channel is not None else plane.channels, str(path))
    if first and channel is None and data.several_colours(image):
        from tqdm import tqdm

        tqdm.write(
            f"note: {path}: fluorescence in several colours; if one holds the nuclei, "
            "--channel N segments it (0 red, 1 green, 2 blue)",
            file=sys.stderr,
        )
    return image


def predict_file(
    source: Any,
    *,
    folder: OutputFolder,
    stem: str,
    predictor: Predictor,
    options: PredictOptions,
    diameter: tuple[float, str] | None,
) -> list[dict]:
    """Segment one file opened as ``source`` (:func:`open_image`; every plane of a stack) and write
    its outputs; its summary rows."""
    path = source.path
    channel = nuclei_channel(source, path, options)
    names = distinct([n or f"ch{c}" for c, n in enumerate(source.channel_names)])
    names = names if len(source.channel_names) == source.n_channels else None
    stack = bool(source.stack_axes)
    target = folder.root / stem
    collected, writers = Collected(), {}

    def segmented() -> Iterator[np.ndarray]:
        for k, plane in enumerate(source.planes()):
            image = plane_image(plane, channel, path, first=k == 0)
            chosen = for_diameter(predictor.for_image(image), diameter, source.pixel_size, path)
            probs, gates, labels, plan = segment_image(chosen, image, options.threshold)
            measure = options.measure
            labels = keep(labels, min_size=measure.min_size, exclude_edges=measure.exclude_edges)
            where = {"plane": k, **{axis.lower(): v for axis, v in plane.position.items()}} if stack else {}
            table = measurements(labels, plane.channels, channel_names=names, pixel_size=source.pixel_size)
            collected.add(k, where, labels, table, options)
            collected.rows.append({**summarise(stem, labels, chosen.name, plan), **({"plane": k} if stack else {})})
            if not stack:
                write_picture_outputs(folder, target, image, probs[0], labels, gates, options, source.pixel_size)
            elif options.save_prob:
                writers["prob"].write(probs[0].astype(np.float32), contiguous=True)
            yield labels

    write_label_planes(folder, target, source, segmented, writers, options, path)
    write_shapes(folder, target, collected.rois, collected.features, options)
    # last: its presence marks the file as finished (--skip-existing)
    folder.write(Path(f"{target}_nuclei.csv"), lambda t: write_measurement_csv(t, collected.tables))
    return collected.rows


def write_label_planes(
    folder: OutputFolder,
    target: Path,
    source: Any,
    segmented: Any,
    writers: dict,
    options: PredictOptions,
    path: Path,
) -> None:
    """``<target>_labels.tif`` as the planes are segmented: one ImageJ hyperstack for a stack (with
    ``<target>_prob.tif`` beside it when asked), else the one plane."""
    if not source.stack_axes:
        for labels in segmented():
            folder.write(
                Path(f"{target}_labels.tif"),
                lambda t, labels=labels: write_labels(t, labels, labels.shape, source.pixel_size, ""),
            )
        return
    import tifffile

    with contextlib.ExitStack() as stack_files:
        if options.save_prob:
            probs_path = stack_files.enter_context(folder.writing(Path(f"{target}_prob.tif")))
            writers["prob"] = stack_files.enter_context(tifffile.TiffWriter(probs_path))
        shape = (*source.stack_shape, *source.shape_yx)
        planes = (labels_dtype(labels, path) for labels in segmented())
        folder.write(
            Path(f"{target}_labels.tif"), lambda t: write_labels(t, planes, shape, source.pixel_size, source.stack_axes)
        )


def write_shapes(
    folder: OutputFolder, target: Path, rois: Iterable, features: Iterable[dict], options: PredictOptions
) -> None:
    """``<target>_rois.zip`` (ImageJ/Fiji) and ``<target>_nuclei.geojson`` (QuPath), as asked
    (``rois`` and ``features`` may be generators: written as they come)."""
    if options.rois:
        import roifile

        def write_rois(path: Path) -> None:
            _empty_zip(path)  # a set with no nuclei is still a zip
            roifile.roiwrite(path, rois, mode="a")

        folder.write(Path(f"{target}_rois.zip"), write_rois)
    if options.geojson:
        folder.write(Path(f"{target}_nuclei.geojson"), lambda t: write_geojson(t, features))


def wants_blocks(path: Path, options: PredictOptions) -> bool:
    """Whether ``path`` is predicted block-wise: zarr always; a TIFF plane above
    ``options.blocks.above`` pixels unless ``blockwise`` is "never", any TIFF when "always"."""
    if is_zarr(path):
        if options.blockwise != "always":  # chunks never written read as zeros: a bomb of any size
            limits.check_compression(path, *zarr_plane(path))
        return True
    if options.blockwise == "never" or path.suffix.lower() not in (".tif", ".tiff"):
        return False
    info = open_image(path, axes=options.axes, limit=False)
    if math.prod(info.stack_shape) > 1:
        return False  # stacks go plane by plane (each plane under the pixel limit)
    if options.blockwise == "always":
        return True
    if math.prod(info.shape_yx) <= options.blocks.above:
        return False
    import tifffile

    with tifffile.TiffFile(path) as tif:
        itemsize = tif.series[0].dtype.itemsize * max(1, math.prod(info.shape) // math.prod(info.shape_yx))
    limits.check_compression(path, *info.shape_yx, itemsize)
    return True


def predict_blockwise(
    path: Path,
    *,
    folder: OutputFolder,
    stem: str,
    predictor: Predictor,
    options: PredictOptions,
    diameter: tuple[float, str] | None,
    recipe: dict,
    client: object = None,
) -> list[dict]:
    """Segment one large 2-D image block by block (:mod:`blockwise`): ``<stem>_labels.zarr``
    (OME-Zarr, uint32), ``<stem>_nuclei.csv`` and with ``save_prob`` ``<stem>_prob.zarr``; its
    summary row. An interrupted run's blocks (``<stem>.partial``) are kept and continued."""
    import shutil

    source, pixel_size = lazy_source(path, options)
    limits.check_pixels(*source.shape_yx, str(path), limit=limits.BLOCKWISE_MAX_PIXELS)
    predictor = predictor.for_image(sample_mosaic(source)) if predictor.name == AUTO else predictor
    recipe = {**recipe, "model": predictor.name} if recipe.get("model") == AUTO else recipe
    predictor = for_diameter(predictor, diameter, pixel_size, path)
    target = folder.root / stem
    work = folder.claim(Path(f"{target}.partial"))
    job = prepare(
        source,
        work=work,
        predictor=predictor,
        loader=load_predictor,
        recipe=recipe,
        settings=options.blocks,
        threshold=options.threshold,
        pixel_size=pixel_size,
        shapes=options.rois or options.geojson,
    )
    table, cut, kept = segment(
        job, min_size=options.measure.min_size, exclude_edges=options.measure.exclude_edges, client=client
    )
    if cut:
        from tqdm import tqdm

        tqdm.write(
            f"warning: {path}: {cut} clump(s) of nuclei wider than the halo ({options.blocks.halo} px) may be cut at block edges; "
            "raise --halo",
            file=sys.stderr,
        )
    folder.place(work / "labels.zarr", Path(f"{target}_labels.zarr"))
    if options.save_prob:
        folder.place(work / "prob.zarr", Path(f"{target}_prob.zarr"))
    if options.rois or options.geojson:  # one block's outlines in memory at a time
        write_block_shapes(folder, target, job, kept, table, options)
    folder.write(Path(f"{target}_nuclei.csv"), lambda t: write_measurement_csv(t, [({}, table)]))
    shutil.rmtree(work, ignore_errors=True)
    return [summary_row(stem, source.shape_yx, table["area"], predictor.name, Plan(job.factor))]


def lazy_source(path: Path, options: PredictOptions) -> tuple[Any, float | None]:
    """A large image opened for block-wise reading (zarr or TIFF) and its pixel size."""
    if is_zarr(path):
        text = "" if options.channel is None else str(options.channel)
        if text and not (text.isascii() and text.isdecimal()):
            raise InputError(f"{path}: --channel {text}: a zarr image's channels are numbered from 0")
        source = open_lazy(path, channel=int(text) if text else None, axes=options.axes)
        return source, options.pixel_size or source.pixel_size
    info = open_image(path, axes=options.axes, pixel_size=options.pixel_size, limit=False)
    return open_lazy(path, channel=info.channel_index(options.channel), axes=info.axes), info.pixel_size


def write_block_shapes(
    folder: OutputFolder, target: Path, job: Any, kept: Any, table: dict, options: PredictOptions
) -> None:
    """ROIs and GeoJSON of a block-wise prediction, one block's outlines in memory at a time."""
    rois = (roi for shapes in block_shapes(job, kept) for roi in roi_set(shapes))
    features = (
        feature
        for shapes in block_shapes(job, kept)
        for feature in geojson_features(shapes, {k: v[np.fromiter(shapes, np.int64) - 1] for k, v in table.items()})
    )
    write_shapes(folder, target, rois, features, options)


def _empty_zip(path: Path) -> None:
    import zipfile

    zipfile.ZipFile(path, "w").close()


def labels_dtype(labels: np.ndarray, path: Path) -> np.ndarray:
    """A stack plane's labels as uint16, the type ImageJ reads."""
    if labels.max() >= 2**16:
        raise InputError(f"{path}: a plane has {int(labels.max())} nuclei, more than a 16-bit label stack holds")
    return labels.astype(np.uint16)


def write_labels(
    path: Path,
    labels: np.ndarray | Iterator[np.ndarray],
    shape: tuple[int, ...],
    pixel_size: float | None,
    stack_axes: str,
) -> None:
    """Labels as an ImageJ TIFF (16-bit; 32-bit plain TIFF above 65535 nuclei) with the pixel size
    as its resolution when known; a stack from an iterator of planes, written as they come."""
    import tifffile

    extra: dict = {"resolution": (1 / pixel_size, 1 / pixel_size)} if pixel_size else {}
    if isinstance(labels, np.ndarray) and labels.max() >= 2**16:
        tifffile.imwrite(
            path,
            labels.astype(np.uint32),
            compression="zlib",
            resolutionunit="CENTIMETER" if pixel_size else None,
            **({"resolution": (1e4 / pixel_size, 1e4 / pixel_size)} if pixel_size else {}),
        )
        return
    axes, stack_shape = imagej_layout(stack_axes, shape[:-2])
    planes = labels.astype(np.uint16) if isinstance(labels, np.ndarray) else labels
    metadata = {"axes": axes + "YX", **({"unit": "um"} if pixel_size else {})}
    tifffile.imwrite(
        path, planes, shape=(*stack_shape, *shape[-2:]), dtype=np.uint16, imagej=True, metadata=metadata, **extra
    )


def imagej_layout(stack_axes: str, stack_shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """The axes and shape ImageJ reads a label stack with: T and Z as they are, any other stack
    (I, Q, or Z before T) as one run of Z planes in file order.

    >>> imagej_layout("TZ", (2, 3)), imagej_layout("ZT", (3, 2)), imagej_layout("", ())
    (('TZ', (2, 3)), ('Z', (6,)), ('', ()))
    """
    if stack_axes in ("", "T", "Z", "TZ"):
        return stack_axes, stack_shape
    return "Z", (int(np.prod(stack_shape)),)


def write_picture_outputs(
    folder: OutputFolder,
    target: Path,
    image: np.ndarray,
    prob: np.ndarray,
    labels: np.ndarray,
    gates: list[np.ndarray],
    options: PredictOptions,
    pixel_size: float | None,
) -> None:
    """A 2-D image's mask, overlay, probability and attention pictures."""
    import tifffile

    folder.write(
        Path(f"{target}_mask.png"), lambda t: write_png(t, ((prob > options.threshold) * 255).astype(np.uint8))
    )
    folder.write(Path(f"{target}_overlay.png"), lambda t: write_png(t, overlay(image, labels)))
    if options.save_prob:
        folder.write(
            Path(f"{target}_prob.tif"), lambda t: tifffile.imwrite(t, prob.astype(np.float32), compression="zlib")
        )
    for k, gate in enumerate(gates, start=1):
        folder.write(Path(f"{target}_attention{k}.png"), lambda t, gate=gate: write_png(t, heat_map(image, gate)))
