"""The ``predict`` command and the loading of a model for inference (:func:`load_predictor`).

The sliding-window engine is :mod:`tiling`, the instance step :mod:`instances`, image files
:mod:`images`.
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import data, limits
from .blockwise import BlockSettings, block_shapes, dask_client, open_lazy, predictor_shared, prepare, segment
from .errors import InputError
from .images import check_pixel_size, find_inputs, heat_map, is_zarr, open_image, overlay
from .measure import MeasureSettings, geojson_features, keep, measurements, outlines, write_geojson
from .measure import rois as roi_set
from .measure import write_table as write_measurement_csv
from .outputs import OutputFolder, written_by_a_run
from .reports import predict_index
from .settings import InferenceSettings, check_min_confidence, check_smoothing, check_threshold
from .tiling import Predictor, torch_runner

MAX_SCALE = 8.0  # a larger factor multiplies the work by its square for no nucleus size the model serves
BLOCKWISE = ("auto", "always", "never")
ENGINES = ("auto", "torch", "onnx")


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


def summarise(name: str, labels: np.ndarray) -> dict:
    areas = np.bincount(labels.ravel())[1:]
    return summary_row(name, labels.shape, areas[areas > 0])


def summary_row(name: str, shape: tuple[int, ...], areas: np.ndarray) -> dict:
    """summary.csv's row for an image of ``shape`` whose nuclei have these areas (pixels)."""
    return {
        "file": name,
        "height": shape[0],
        "width": shape[1],
        "nucleus_count": len(areas),
        "foreground_fraction": round(float(areas.sum()) / (shape[0] * shape[1]), 6),
        "mean_area_px": round(float(areas.mean()), 2) if len(areas) else 0.0,
        "median_area_px": float(np.median(areas)) if len(areas) else 0.0,
    }


def for_diameter(
    predictor: Predictor, diameter: tuple[float, str] | None, pixel_size: float | None, path: Path
) -> Predictor:
    """The predictor rescaled for ``--diameter`` (pixels, or µm with the file's pixel size)."""
    import dataclasses

    if diameter is None:
        return predictor
    value, unit = diameter
    if unit == "um" and pixel_size is None:
        raise InputError(
            f"{path}: --diameter {value:g}um needs the pixel size, which the file does not give: add --pixel-size UM"
        )
    pixels = value / pixel_size if unit == "um" else value
    return dataclasses.replace(predictor, scale=scale_for_diameter(predictor.target_diameter, pixels))


def scale_for_diameter(target_diameter: float, diameter: float) -> float:
    """The factor that brings nuclei of ``diameter`` pixels to the size the model learnt."""
    if not target_diameter / MAX_SCALE <= diameter < float("inf"):  # also refuses NaN
        raise InputError(
            f"--diameter must be at least {target_diameter / MAX_SCALE:g} pixels (at most {MAX_SCALE:g}x enlargement), not {diameter:g}"
        )
    return target_diameter / diameter


def check_device(device: str) -> None:
    """One line when ``device`` does not exist here (e.g. cuda on a CPU-only torch)."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise InputError(f"--device {device}: not a device name (cpu, cuda, cuda:1, mps)") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}.get(
        kind, False
    )
    if not available:
        raise InputError(f"--device {device}: not available on this machine (torch {torch.__version__} sees no {kind})")


def load_predictor(
    model: str | Path | None = None,
    *,
    device: str = "cpu",
    tile: int = 512,
    batch_size: int | None = None,
    tta: bool | None = None,
    tta_views: int | None = None,
    scale: str | float | None = None,
    diameter: float | None = None,
    engine: str = "torch",
    attention: bool = False,
    min_confidence: float | None = None,
    smoothing: float | None = None,
) -> Predictor:
    """A Predictor for a model file, folder or run folder (None: the shipped model). An .onnx model
    runs on ONNX Runtime; any other on torch (BatchNorm folded) unless ``engine="onnx"`` asks for
    an export first. ``engine="auto"`` (predict's default) runs the shipped model's int8 ONNX
    (:func:`shipped_int8`) on a CPU when there is one for these weights, else torch. Normalisation and the defaults of ``tta``, ``tta_views`` and ``scale`` come from the model's
    own metadata; ``scale`` is a factor or "auto"; ``diameter`` (the nuclei's size in pixels, as
    Cellpose's) sets the factor that brings them to the size the model learnt, instead;
    ``min_confidence`` replaces the model's weakest instance kept (mean probability; 0 keeps all);
    ``smoothing`` smooths every image by this Gaussian sigma (0: none) instead of the model's rule
    for sharp stained tissue (:meth:`Predictor.smoothing_of`)."""
    from .model import load_model, pretrained_path

    check_device(device)
    if min_confidence is not None:
        check_min_confidence(min_confidence, "--min-confidence")
    if smoothing is not None:
        check_smoothing(smoothing, "--smoothing")
    if not (isinstance(tile, int) and 32 <= tile <= 8192):
        raise InputError(f"--tile must be a whole number of pixels from 32 to 8192, not {tile}")
    if batch_size is None:
        # on a CPU, 4 tiles of 512 per batch are no faster than 1 and hold twice the memory (a 3072²
        # window: 1554 against 701 MiB peak, 15.1 against 14.9 s, int8 ONNX; BENCHMARKS.md)
        batch_size = 1 if device == "cpu" else 4
    if not (isinstance(batch_size, int) and 1 <= batch_size <= 1024):
        raise InputError(f"--batch-size must be a whole number from 1 to 1024, not {batch_size}")
    path = Path(model) if model else pretrained_path()
    if engine not in ENGINES:
        raise InputError(f"--engine must be one of {', '.join(ENGINES)}, not {engine}")
    if engine == "auto":
        int8 = shipped_int8() if not model and device == "cpu" and not attention else None
        path, engine = (int8, "onnx") if int8 else (path, "torch")
    if path.suffix == ".onnx" or engine == "onnx":
        from .export import export_onnx, onnx_info, onnx_runner

        if attention:
            raise InputError("--attention needs --engine torch (the ONNX graph returns logits only)")
        if path.suffix != ".onnx":
            import tempfile

            path = export_onnx(load_model(path), Path(tempfile.mkdtemp()) / "model.onnx")
        info = onnx_info(path)  # first: a file that is no model is one line, before a session is built
        run = onnx_runner(path)
    else:
        from .export import fold_batchnorm

        network = load_model(path, device)
        run, info = torch_runner(network if attention else fold_batchnorm(network), device, attention), network.info
    settings, train = InferenceSettings.from_metadata(info.get("inference", {})), info.get("train", {})
    if diameter is not None:
        scale = scale_for_diameter(settings.target_diameter, diameter)
    scale = scale if scale is not None else settings.scale
    if str(scale) == "auto":
        scale = None
    else:
        try:
            scale = float(scale)
        except ValueError:
            raise InputError(f"--scale must be 'auto' or a positive number, not '{scale}'") from None
        if not 0 < scale <= MAX_SCALE:
            raise InputError(f"--scale must be 'auto' or a number above 0 and at most {MAX_SCALE:g}, not '{scale}'")
    outputs = ("mask",) + ("contour",) * bool(train.get("contour")) + ("distance",) * bool(train.get("distance"))
    return Predictor(
        run,
        train.get("norm", "fixed"),
        tile,
        batch_size,
        settings.tta if tta is None else tta,
        settings.tta_views if tta_views is None else tta_views,
        scale=scale,
        target_diameter=settings.target_diameter,
        outputs=outputs,
        contours=settings.contours,
        distances=settings.distances,
        contour_threshold=settings.contour_threshold,
        h=settings.h,
        min_area=settings.min_area,
        min_confidence=settings.min_confidence if min_confidence is None else min_confidence,
        stain_smoothing=settings.stain_smoothing,
        stain_sharpness=settings.stain_sharpness,
        smoothing=smoothing,
        fragments_ratio=settings.fragments_ratio,
        fragments_count=settings.fragments_count,
        fragments_solidity=settings.fragments_solidity,
        shrink_above=settings.shrink_above,
        shrink_margin=settings.shrink_margin,
        fragments_by_confidence=settings.fragments_by_confidence,
    )


def shipped_int8() -> Path | None:
    """The shipped model's int8 ONNX (tools/ship_model.py writes it beside the weights), when it
    was quantised from the weights shipped now (their sha256 in its metadata)."""
    import hashlib
    import importlib.util

    from .export import onnx_info
    from .model import pretrained_path

    path = pretrained_path().with_suffix(".int8.onnx")
    if not path.is_file() or importlib.util.find_spec("onnxruntime") is None:
        return None
    made_from = onnx_info(path).get("quantised_from", "")
    current = hashlib.sha256(pretrained_path().read_bytes()).hexdigest()
    if made_from != current:
        print(f"warning: {path} was quantised from other weights than the shipped ones; running torch", file=sys.stderr)
        return None
    return path


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


def _predict_files(
    inputs: list[str], *, out: str | Path, predictor: Predictor, options: PredictOptions, recipe: dict, client: object
) -> int:
    from tqdm import tqdm

    check_threshold(options.threshold, "--threshold")
    if options.blockwise not in BLOCKWISE:
        raise InputError(f"--blockwise must be one of {', '.join(BLOCKWISE)}, not {options.blockwise}")
    options.blocks.check()
    check_pixel_size(options.pixel_size)
    diameter = parse_diameter(options.diameter) if options.diameter is not None else None
    if diameter is not None and diameter[1] == "px":
        scale_for_diameter(predictor.target_diameter, diameter[0])  # a bad size in pixels is one line before any file
    folder = OutputFolder(out)
    found, manifests = list(find_inputs(inputs)), {}
    files = [(p, rel) for p, rel in found if not (folder.is_ours(p) or written_by_a_run(p, manifests))]
    if len(files) < len(found):
        print(f"left out {len(found) - len(files)} file(s) that earlier attention-unet runs wrote", file=sys.stderr)
    if not files:
        raise InputError(f"no images found in {' '.join(inputs)}")
    folder.lock()
    try:
        stems = unique_stems([rel for _, rel in files])
        summary = Summary()
        earlier = earlier_rows(folder) if options.skip_existing else {}
        unwritten = False  # summary rows not yet in summary.csv
        for (path, _), stem in tqdm(list(zip(files, stems)), desc="predict", unit="file", file=sys.stderr):
            if options.skip_existing and folder.done(folder.root / f"{stem}_nuclei.csv") and str(path) in earlier:
                summary.rows += earlier[str(path)]  # the nuclei table is written last: the file was finished
                unwritten = True
                continue
            try:
                if wants_blocks(path, options):
                    rows = predict_blockwise(
                        path,
                        folder=folder,
                        stem=stem,
                        predictor=predictor,
                        options=options,
                        diameter=diameter,
                        recipe=recipe,
                        client=client,
                    )
                else:
                    rows = predict_file(
                        path, folder=folder, stem=stem, predictor=predictor, options=options, diameter=diameter
                    )
            except InputError as exc:
                tqdm.write(f"warning: {exc}", file=sys.stderr)  # on its own line, not after the bar
                summary.failed[str(path)] = str(exc)
                unwritten = bool(summary.rows)  # the index lists it, once there is an index
                continue
            summary.rows += [{"input": str(path), **row} for row in rows]
            write_summary(folder, summary.rows, summary.failed)  # as images finish: a stopped run keeps what it did
            unwritten = False
        if unwritten:
            write_summary(
                folder, summary.rows, summary.failed
            )  # rows --skip-existing kept, or a failure, after the last one done
    finally:
        folder.release()  # also when interrupted: a rerun in this process may lock it again
    print(f"{len(files) - len(summary.failed)} file(s) segmented, outputs in {out}", file=sys.stderr)
    if summary.failed:
        print(f"{len(summary.failed)} file(s) failed: " + ", ".join(summary.failed), file=sys.stderr)
        return 2 if len(summary.failed) == len(files) else 1  # nothing done: as a bad option; else partly done
    return 0


def earlier_rows(folder: OutputFolder) -> dict[str, list[dict]]:
    """An earlier run's summary rows by input path (for --skip-existing)."""
    import csv

    path = folder.root / "summary.csv"
    if not folder.done(path):
        return {}
    rows: dict[str, list[dict]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.setdefault(row["input"], []).append(row)
    return rows


def unique_stems(paths: list[Path]) -> list[str]:
    """Output stems for input paths: the path without its suffix, and where two inputs share one
    (x.png beside x.tif, or the same name in two input folders) the later ones get _2, _3, ...

    >>> unique_stems([Path("a/x.png"), Path("a/x.tif"), Path("y.ome.tif"), Path("a/x.png")])
    ['a/x', 'a/x_2', 'y', 'a/x_3']
    """
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        stem = path.with_suffix("").as_posix().removesuffix(".ome")
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return stems


def write_summary(folder: OutputFolder, rows: list[dict], failed: dict[str, str] | None = None) -> None:
    """summary.csv and the index.html of thumbnails."""
    import csv

    columns = list(dict.fromkeys(k for row in rows for k in row))

    def write(path: Path) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)

    folder.write(folder.root / "summary.csv", write)
    index = predict_index(folder.root, rows, failed or {})
    folder.write(folder.root / "index.html", lambda t: t.write_text(index, encoding="utf-8"))


def predict_file(
    path: Path,
    *,
    folder: OutputFolder,
    stem: str,
    predictor: Predictor,
    options: PredictOptions,
    diameter: tuple[float, str] | None,
) -> list[dict]:
    """Segment one file (every plane of a stack) and write its outputs; its summary rows."""

    source = open_image(path, axes=options.axes, pixel_size=options.pixel_size)
    channel = source.channel_index(options.channel)
    if channel is None and source.n_channels > 1 and not source.rgb:
        names = f" ({', '.join(source.channel_names)})" if any(source.channel_names) else ""
        raise InputError(f"{path}: {source.n_channels} channels{names}: give --channel (the one that holds the nuclei)")
    predictor = for_diameter(predictor, diameter, source.pixel_size, path)
    names = (
        [n or f"ch{c}" for c, n in enumerate(source.channel_names)]
        if len(source.channel_names) == source.n_channels
        else None
    )
    stack = bool(source.stack_axes)
    target = folder.root / stem
    rows, tables, features, rois = [], [], [], []
    probs_writer = None

    def segmented() -> Iterator[np.ndarray]:
        nonlocal probs_writer
        for k, plane in enumerate(source.planes()):
            image = data.to_rgb(plane.channels[..., channel] if channel is not None else plane.channels, str(path))
            if k == 0 and channel is None and data.several_colours(image):
                from tqdm import tqdm

                tqdm.write(
                    f"note: {path}: fluorescence in several colours; if one holds the nuclei, "
                    "--channel N segments it (0 red, 1 green, 2 blue)",
                    file=sys.stderr,
                )
            probs, gates = predictor.probabilities(image)
            labels = keep(
                predictor.labels(probs, options.threshold),
                min_size=options.measure.min_size,
                exclude_edges=options.measure.exclude_edges,
            )
            where = {"plane": k, **{axis.lower(): v for axis, v in plane.position.items()}} if stack else {}
            table = measurements(labels, plane.channels, channel_names=names, pixel_size=source.pixel_size)
            tables.append((where, table))
            shapes = outlines(labels) if options.rois or options.geojson else {}
            if options.rois:
                rois.extend(roi_set(shapes, plane=k + 1 if stack else None))
            if options.geojson:
                features.extend(geojson_features(shapes, table, where))
            rows.append({**summarise(stem, labels), **({"plane": k} if stack else {})})
            if not stack:
                write_picture_outputs(folder, target, image, probs[0], labels, gates, options, source.pixel_size)
            elif options.save_prob:
                probs_writer.write(probs[0].astype(np.float32), contiguous=True)
            yield labels

    if stack:
        import tifffile

        with contextlib.ExitStack() as stack_files:
            if options.save_prob:
                probs_path = stack_files.enter_context(folder.writing(Path(f"{target}_prob.tif")))
                probs_writer = stack_files.enter_context(tifffile.TiffWriter(probs_path))
            shape = (*source.stack_shape, *source.shape_yx)
            planes = (labels_dtype(labels, path) for labels in segmented())
            folder.write(
                Path(f"{target}_labels.tif"),
                lambda t: write_labels(t, planes, shape, source.pixel_size, source.stack_axes),
            )
    else:
        for labels in segmented():
            folder.write(
                Path(f"{target}_labels.tif"),
                lambda t, labels=labels: write_labels(t, labels, labels.shape, source.pixel_size, ""),
            )
    write_shapes(folder, target, rois, features, options)
    # last: its presence marks the file as finished (--skip-existing)
    folder.write(Path(f"{target}_nuclei.csv"), lambda t: write_measurement_csv(t, tables))
    return rows


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

    if is_zarr(path):
        text = "" if options.channel is None else str(options.channel)
        if text and not text.isdigit():
            raise InputError(f"{path}: --channel {text}: a zarr image's channels are numbered from 0")
        source = open_lazy(path, channel=int(text) if text else None, axes=options.axes)
        pixel_size = options.pixel_size or source.pixel_size
    else:
        info = open_image(path, axes=options.axes, pixel_size=options.pixel_size, limit=False)
        source = open_lazy(path, channel=info.channel_index(options.channel), axes=info.axes)
        pixel_size = info.pixel_size
    limits.check_pixels(*source.shape_yx, str(path), limit=limits.BLOCKWISE_MAX_PIXELS)
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
        rois = (roi for shapes in block_shapes(job, kept) for roi in roi_set(shapes))
        features = (
            feature
            for shapes in block_shapes(job, kept)
            for feature in geojson_features(shapes, {k: v[np.fromiter(shapes, np.int64) - 1] for k, v in table.items()})
        )
        write_shapes(folder, target, rois, features, options)
    folder.write(Path(f"{target}_nuclei.csv"), lambda t: write_measurement_csv(t, [({}, table)]))
    shutil.rmtree(work, ignore_errors=True)
    return [summary_row(stem, source.shape_yx, table["area"])]


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
    import imageio.v3 as iio
    import tifffile

    folder.write(
        Path(f"{target}_mask.png"), lambda t: iio.imwrite(t, ((prob > options.threshold) * 255).astype(np.uint8))
    )
    folder.write(Path(f"{target}_overlay.png"), lambda t: iio.imwrite(t, overlay(image, labels)))
    if options.save_prob:
        folder.write(
            Path(f"{target}_prob.tif"), lambda t: tifffile.imwrite(t, prob.astype(np.float32), compression="zlib")
        )
    for k, gate in enumerate(gates, start=1):
        folder.write(Path(f"{target}_attention{k}.png"), lambda t, gate=gate: iio.imwrite(t, heat_map(image, gate)))
