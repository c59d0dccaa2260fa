"""Inference: sliding-window probabilities, instance labels, and the ``predict`` command's outputs.

Tiles are evenly spaced with the last one flush to the image edge and blended with a Gaussian
weight map that has no zeros (as in nnU-Net); the normalisation range is computed once per image
so all tiles share it. Memory grows with tile and batch size, plus two float32 accumulators of the
image's size, not with the network's activations on the whole image.
"""

from __future__ import annotations

import csv
import glob
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from . import allocator, data
from .errors import InputError

Runner = Callable[[np.ndarray], tuple[np.ndarray, list[np.ndarray]]]


def tile_starts(length: int, tile: int, overlap: float = 0.25) -> list[int]:
    """Evenly spaced tile origins covering 0..length, the last flush with the end.

    >>> tile_starts(1000, 512)
    [0, 244, 488]
    >>> tile_starts(300, 512)
    [0]
    """
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / (tile * (1 - overlap))) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


@lru_cache(maxsize=8)
def gaussian_weights(height: int, width: int) -> np.ndarray:
    """Tile weights: a Gaussian with sigma = size / 8, floored at 1e-3 of its peak (never zero)."""
    y = np.exp(-0.5 * ((np.arange(height) - (height - 1) / 2) / (height / 8)) ** 2)
    x = np.exp(-0.5 * ((np.arange(width) - (width - 1) / 2) / (width / 8)) ** 2)
    return np.maximum(np.outer(y, x), 1e-3).astype(np.float32)


def torch_runner(model: torch.nn.Module, device: str = "cpu", attention: bool = False) -> Runner:  # noqa: F821
    """Wrap a model as a function: float32 NCHW batch -> (probabilities N x C x H x W, gate maps N x H x W)."""
    import torch
    import torch.nn.functional as F

    model = model.to(device).eval()

    def run(batch: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last)
            if not attention:
                return torch.sigmoid(model(x)).float().cpu().numpy(), []
            logits, maps = model.forward_with_attention(x)
            size = x.shape[-2:]
            maps = [F.interpolate(m.mean(1, keepdim=True), size=size, mode="bilinear")[:, 0].cpu().numpy() for m in maps]
            return torch.sigmoid(logits).float().cpu().numpy(), maps

    return run


@dataclass
class Predictor:
    """Probability maps of whole images by sliding-window inference, with optional flip TTA and
    scale normalisation.

    ``scale`` resizes the image by a fixed factor before inference (the probability is mapped
    back); ``scale=None`` chooses it per image (:meth:`auto_scale`): a pass at half size measures
    the median nucleus diameter, and the image is predicted at the scale that brings it to
    ``target_diameter`` pixels (the size the model learnt best) when it is more than
    ``auto_range`` times too large (or too small).
    """

    run: Runner
    norm: str = "fixed"
    tile: int = 512
    batch_size: int = 4
    tta: bool = False
    overlap: float = 0.25
    scale: float | None = 1.0
    target_diameter: float = 16.0
    auto_range: tuple[float, float] = (0.5, 2.0)  # auto scale leaves diameters of these multiples of target_diameter alone
    probe: float = 0.5  # auto scale measures nuclei on the image at this size (a quarter of the work)
    max_pixels: int = 64_000_000  # a rescaled image never exceeds this many pixels
    outputs: tuple[str, ...] = ("mask", "contour", "distance")  # what each output channel holds, in order
    contours: bool = True  # a contour output shapes the instance watershed (see :func:`instances`)
    distances: bool = False  # a distance output is the watershed's relief and seeds (opt-in: h is then in its 0..1 units)
    contour_threshold: float = 0.5
    h: float = 1.0
    min_area: int = 8  # smaller components are dropped from the instances

    def probability(self, image: np.ndarray) -> np.ndarray:
        """H x W float32 foreground probability of an H x W x 3 image."""
        return self.probabilities(image)[0][0]

    def probabilities(self, image: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """(C x H x W float32 probabilities: foreground, then contours for a contour model; the
        gates' H x W attention maps when the runner returns them)."""
        with allocator.kept():  # the tiles' activations reuse one another's memory
            return self._probabilities(image)

    def _probabilities(self, image: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        value_range = data.normalisation_range(image, self.norm)
        factor = self.scale if self.scale is not None else self.auto_scale(image, value_range)
        height, width = image.shape[:2]
        factor = min(factor, math.sqrt(self.max_pixels / (height * width)))
        if abs(factor - 1.0) < 1e-3:
            return self._tiled(image, value_range)
        size = (max(8, round(height * factor)), max(8, round(width * factor)))
        prob, gates = self._tiled(data.resize(image, size), value_range)
        return np.stack([data.resize(c, (height, width)) for c in prob]), [data.resize(g, (height, width)) for g in gates]

    def labels(self, probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Instance labels from :meth:`probabilities`' output, using the model's contour and
        distance outputs when it has them and ``contours`` / ``distances`` are on."""
        def output(name: str, wanted: bool) -> np.ndarray | None:
            return probs[self.outputs.index(name)] if wanted and name in self.outputs[: len(probs)] else None

        return instances(probs[0], output("contour", self.contours), threshold, self.min_area, self.h, self.contour_threshold,
                         output("distance", self.distances))

    def auto_scale(self, image: np.ndarray, value_range: tuple[float, float]) -> float:
        """The factor that brings the median nucleus to ``target_diameter`` (clipped to 0.125..4),
        or 1.0 when its diameter lies within ``auto_range`` times the target or nothing was found.

        Measured on the image at ``probe`` size, not at full size: large textured nuclei that a
        full-size pass cuts into small bright fragments (which would ask for enlarging) are whole
        there, and the pass costs a quarter of a full one."""
        height, width = image.shape[:2]
        size = (max(8, round(height * self.probe)), max(8, round(width * self.probe)))
        probs, _ = self._tiled(data.resize(image, size), value_range)
        smallest = max(1, round(self.min_area * self.probe**2))
        areas = np.bincount(instances(probs[0], threshold=0.5, min_area=smallest, h=self.h).ravel())[1:]
        areas = areas[areas > 0]
        if not len(areas):
            return 1.0
        diameter = 2 * math.sqrt(float(np.median(areas)) / math.pi) * width / size[1]
        low, high = self.auto_range
        if low * self.target_diameter <= diameter <= high * self.target_diameter:
            return 1.0
        return float(np.clip(self.target_diameter / diameter, 0.125, 4.0))

    def _tiled(self, image: np.ndarray, value_range: tuple[float, float]) -> tuple[np.ndarray, list[np.ndarray]]:
        height, width = image.shape[:2]
        th, tw = min(self.tile, height), min(self.tile, width)
        weights = gaussian_weights(th, tw)
        origins = [(y, x) for y in tile_starts(height, th, self.overlap) for x in tile_starts(width, tw, self.overlap)]
        total: np.ndarray | None = None
        norm = np.zeros((height, width), np.float32)
        gates: list[np.ndarray] = []
        for start in range(0, len(origins), self.batch_size):
            chunk = origins[start : start + self.batch_size]
            batch = np.stack([data.normalise(image[y : y + th, x : x + tw], self.norm, value_range) for y, x in chunk])
            probs, maps = self._views(batch.transpose(0, 3, 1, 2).copy())
            if total is None:
                total = np.zeros((probs.shape[1], height, width), np.float32)
            if maps and not gates:
                gates = [np.zeros((height, width), np.float32) for _ in maps]
            for k, (y, x) in enumerate(chunk):
                total[:, y : y + th, x : x + tw] += probs[k] * weights
                norm[y : y + th, x : x + tw] += weights
                for acc, m in zip(gates, maps):
                    acc[y : y + th, x : x + tw] += m[k] * weights
        assert total is not None
        total /= norm  # in place: no second image-sized copy
        for g in gates:
            g /= norm
        return total, gates

    def _views(self, batch: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Probabilities (and gate maps) averaged over the 8 flips/rotations when tta is on."""
        if not self.tta:
            return self.run(batch)
        probs, maps = None, None
        for k in range(4):
            for flip in (False, True):
                view = np.rot90(batch, k, axes=(2, 3))
                view = view[..., ::-1] if flip else view
                p, m = self.run(np.ascontiguousarray(view))
                p, m = _undo_view(p, k, flip), [_undo_view(a, k, flip) for a in m]
                probs = p if probs is None else probs + p
                maps = m if maps is None else [s + a for s, a in zip(maps, m)]
        return probs / 8, [m / 8 for m in maps or []]


def _undo_view(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Map an output of a turned (k quarter turns) and maybe mirrored view back onto the image."""
    return np.rot90(a[..., ::-1] if flip else a, -k, axes=(a.ndim - 2, a.ndim - 1))


# ------------------------------------------------------------------------------------ instances


def instances(prob: np.ndarray, contour: np.ndarray | None = None, threshold: float = 0.5, min_area: int = 8, h: float = 1.0,
              contour_threshold: float = 0.5, distance: np.ndarray | None = None) -> np.ndarray:
    """Instance labels: connected components of prob > threshold, each split by a watershed on its
    distance transform seeded at h-maxima, so touching nuclei separate. With a contour probability
    (a contour model's output) the distance is measured to the predicted contours too
    (contour >= contour_threshold counts as outside), which cuts touching nuclei apart where the
    mask alone has no neck. With a distance output (each nucleus's predicted distance to its rim,
    0..1) that map replaces the distance transform, and h is in its units. Works per component, so
    memory stays proportional to the largest nucleus cluster, not to the image."""
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    components, _ = ndimage.label(prob > threshold)
    labels = np.zeros(prob.shape, np.int32)
    next_label = 1
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        box = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box)
        region = components[box] == index
        area = int(region.sum())
        if area < min_area:
            continue
        interior = region if contour is None else region & (contour[box] < contour_threshold)
        relief = ndimage.distance_transform_edt(interior) if distance is None else distance[box] * interior
        markers, n = ndimage.label(h_maxima(ndimage.gaussian_filter(relief, 1.0), h) & interior)
        if n > 1:
            split = watershed(-relief, markers, mask=region)
            labels[box][split > 0] = split[split > 0] + next_label - 1
            next_label += n
        else:
            labels[box][region] = next_label
            next_label += 1
    return labels


# ------------------------------------------------------------------------------------- the command


def find_inputs(inputs: list[str]) -> Iterator[tuple[Path, Path]]:
    """(file, path relative to its input root) for files, folders (recursive) and globs."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and f.suffix.lower() in data.IMAGE_SUFFIXES:
                    yield f, f.relative_to(path)
        elif path.is_file():
            yield path, Path(path.name)
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            base = Path(item.split("*")[0].split("?")[0].split("[")[0])
            base = base if base.is_dir() else base.parent
            for f in matches:
                yield f, f.relative_to(base)
        else:
            raise InputError(f"{item}: no such file or folder")


def read_pages(path: Path) -> list[np.ndarray]:
    """Pages of an image file as H x W x 3 arrays (multi-page TIFF: every page)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                pages = [p.asarray() for p in tif.pages]
        except Exception as exc:
            raise InputError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
    else:
        pages = [data.decode_image(path)]
    return [data.to_rgb(p, str(path)) for p in pages]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit RGB for display (percentile-stretched)."""
    return (data.normalise(image, "percentile") * 255).astype(np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Nucleus outlines (yellow) over the 8-bit image."""
    from skimage.segmentation import find_boundaries

    out = to_uint8(image).copy()
    out[find_boundaries(labels, mode="inner")] = (255, 255, 0)
    return out


def heat_map(image: np.ndarray, coeff: np.ndarray) -> np.ndarray:
    """Attention coefficients (0..1) as a black-red-yellow map blended 50/50 over the grey image."""
    grey = to_uint8(image).mean(axis=2, keepdims=True)
    a = np.clip(coeff, 0, 1)[..., None]
    colour = np.concatenate([np.minimum(1, 2 * a), np.clip(2 * a - 1, 0, 1), np.zeros_like(a)], axis=2) * 255
    return (0.5 * grey + 0.5 * colour).astype(np.uint8)


@dataclass
class Summary:
    rows: list[dict] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def summarise(name: str, labels: np.ndarray) -> dict:
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    return {
        "file": name,
        "height": labels.shape[0],
        "width": labels.shape[1],
        "nucleus_count": len(areas),
        "foreground_fraction": round(float((labels > 0).mean()), 6),
        "mean_area_px": round(float(areas.mean()), 2) if len(areas) else 0.0,
        "median_area_px": float(np.median(areas)) if len(areas) else 0.0,
    }


def scale_for_diameter(target_diameter: float, diameter: float) -> float:
    """The factor that brings nuclei of ``diameter`` pixels to the size the model learnt."""
    if not diameter > 0:
        raise InputError(f"--diameter must be a positive number of pixels, not {diameter}")
    return target_diameter / diameter


def load_predictor(model: str | Path | None = None, *, device: str = "cpu", tile: int = 512, batch_size: int = 4, tta: bool | None = None,
                   scale: str | float | None = None, diameter: float | None = None, engine: str = "torch", attention: bool = False) -> Predictor:
    """A Predictor for a model file, folder or run folder (None: the shipped model). An .onnx model
    runs on ONNX Runtime; any other on torch (BatchNorm folded) unless ``engine="onnx"`` asks for
    an export first. Normalisation and the defaults of ``tta`` and ``scale`` come from the model's
    own metadata; ``scale`` is a factor or "auto"; ``diameter`` (the nuclei's size in pixels, as
    Cellpose's) sets the factor that brings them to the size the model learnt, instead."""
    from .model import load_model, pretrained_path

    path = Path(model) if model else pretrained_path()
    if path.suffix == ".onnx" or engine == "onnx":
        from .export import export_onnx, onnx_info, onnx_runner

        if attention:
            raise InputError("--attention needs --engine torch (the ONNX graph returns logits only)")
        if path.suffix != ".onnx":
            import tempfile

            path = export_onnx(load_model(path), Path(tempfile.mkdtemp()) / "model.onnx")
        run, info = onnx_runner(path), onnx_info(path)
    else:
        from .export import fold_batchnorm

        network = load_model(path, device)
        run, info = torch_runner(network if attention else fold_batchnorm(network), device, attention), network.info
    inference, train = info.get("inference", {}), info.get("train", {})
    target_diameter = float(inference.get("target_diameter", 16.0))
    if diameter is not None:
        scale = scale_for_diameter(target_diameter, diameter)
    scale = scale if scale is not None else inference.get("scale", 1.0)
    if str(scale) == "auto":
        scale = None
    else:
        try:
            scale = float(scale)
        except ValueError:
            raise InputError(f"--scale must be 'auto' or a positive number, not '{scale}'") from None
        if scale <= 0:
            raise InputError(f"--scale must be 'auto' or a positive number, not '{scale}'")
    outputs = ("mask",) + ("contour",) * bool(train.get("contour")) + ("distance",) * bool(train.get("distance"))
    return Predictor(run, train.get("norm", "fixed"), tile, batch_size,
                     bool(inference.get("tta", False)) if tta is None else tta, scale=scale,
                     target_diameter=target_diameter,
                     outputs=outputs, contours=bool(inference.get("contours", True)), distances=bool(inference.get("distances", False)),
                     contour_threshold=float(inference.get("contour_threshold", 0.5)),
                     h=float(inference.get("h", 1.0)), min_area=int(inference.get("min_area", 8)))


def predict_command(args) -> int:
    import imageio.v3 as iio
    import tifffile
    from tqdm import tqdm

    predictor = load_predictor(args.model, device=args.device, tile=args.tile, batch_size=args.batch_size, tta=args.tta, scale=args.scale,
                               diameter=args.diameter, engine=args.engine, attention=args.attention)
    out = Path(args.out)
    files = list(find_inputs(args.inputs))
    if not files:
        raise InputError(f"no images found in {' '.join(args.inputs)}")
    summary = Summary()
    for path, rel in tqdm(files, desc="predict", unit="file", file=sys.stderr):
        try:
            pages = read_pages(path)
        except InputError as exc:
            print(f"warning: {exc}", file=sys.stderr)
            summary.failed.append(str(path))
            continue
        for page_index, image in enumerate(pages):
            stem = rel.with_suffix("").as_posix() + (f"_p{page_index}" if len(pages) > 1 else "")
            target = out / stem
            target.parent.mkdir(parents=True, exist_ok=True)
            probs, gates = predictor.probabilities(image)
            prob = probs[0]
            labels = predictor.labels(probs, args.threshold)
            iio.imwrite(f"{target}_mask.png", ((prob > args.threshold) * 255).astype(np.uint8))
            tifffile.imwrite(f"{target}_labels.tif", labels.astype(np.uint16 if labels.max() < 2**16 else np.uint32), compression="zlib")
            iio.imwrite(f"{target}_overlay.png", overlay(image, labels))
            if args.save_prob:
                tifffile.imwrite(f"{target}_prob.tif", prob.astype(np.float32), compression="zlib")
            for k, gate in enumerate(gates, start=1):
                iio.imwrite(f"{target}_attention{k}.png", heat_map(image, gate))
            summary.rows.append(summarise(stem, labels))
    if summary.rows:
        with open(out / "summary.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(summary.rows[0]))
            writer.writeheader()
            writer.writerows(summary.rows)
    print(f"{len(summary.rows)} image(s) segmented, outputs in {out}", file=sys.stderr)
    if summary.failed:
        print(f"{len(summary.failed)} file(s) failed: " + ", ".join(summary.failed), file=sys.stderr)
        return 1
    return 0
