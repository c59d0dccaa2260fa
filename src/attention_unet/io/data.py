"""Reading images and masks, the two dataset layouts, the reference split, normalisation, augmentation.

Layouts:

* raw (Kaggle/BBBC038): ``<id>/images/<id>.png`` and ``<id>/masks/*.png`` (one PNG per nucleus),
  as a folder or straight from the ``.zip``;
* flat ("processed"): ``images/`` and ``masks/`` with matching file stems, paired by stem. 8-bit
  masks are binary (JPG thresholded at 127, others at > 0); 16/32-bit integer masks are instance labels;
* Cellpose's: ``<name>.tif`` (or .png, ...) beside ``<name>_masks.tif`` (or .png) in one folder,
  masks read as in the flat layout (label images saved from napari or Fiji).

Decoded datasets are cached as ``.npz`` (no pickle) under ``$ATTENTION_UNET_CACHE`` or
``~/.cache/attention-unet`` so that the 29k mask PNGs of DSB-2018 are decoded once.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import InputError, unreadable
from ..settings import NORMALISATIONS
from . import limits

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
CELLPOSE_MASK = "_masks"  # Cellpose's layout: <name>.tif beside <name>_masks.tif
SAMPLE_DIR = Path(__file__).parents[1] / "sample"


@dataclass
class Record:
    """One image with its instance labels (0 = background, 1..n = nuclei)."""

    id: str
    image: np.ndarray  # H x W x 3, uint8 or uint16
    labels: np.ndarray  # H x W, int32

    @property
    def mask(self) -> np.ndarray:
        return self.labels > 0


# ---------------------------------------------------------------------------------------- reading


def decode_image(data: bytes | str | Path, name: str = "") -> np.ndarray:
    """Decode PNG/JPG/BMP/TIFF (first page) from bytes or a path; raise InputError if unreadable."""
    name = name or str(data)
    limits.check_image_header(data, name)
    try:
        if name.lower().endswith((".tif", ".tiff")):
            import tifffile

            source = io.BytesIO(data) if isinstance(data, bytes) else data
            return tifffile.imread(source, key=0)
        import imageio.v3 as iio

        # Pillow for PNG/JPG/BMP (imageio's choice for them anyway), so that a broken file says so
        # instead of imageio's advice to install video plugins
        return iio.imread(data, plugin="pillow", extension=Path(name).suffix.lower() or None)
    except Exception as exc:  # noqa: BLE001 - the decoders raise many types; the user needs the file name
        raise unreadable(name, exc, data) from None


def to_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    """H x W x 3 of the input dtype: grey is repeated, alpha dropped; 1-bit images become 0/255
    uint8, and NaN or infinite pixels of a float image the lowest / highest finite value (one NaN
    must not blank the whole normalisation).

    >>> to_rgb(np.array([[np.nan, 1.0], [np.inf, 3.0]]))[..., 0].tolist()
    [[1.0, 1.0], [3.0, 3.0]]
    """
    if image.size == 0:
        raise InputError(f"{name}: the image is empty (shape {image.shape})")
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif np.iscomplexobj(image) or not (
        np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
    ):
        raise InputError(f"{name}: pixels of type {image.dtype} are not an image's (expected integers or floats)")
    elif np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        finite = image[np.isfinite(image)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        image = np.nan_to_num(image, nan=low, posinf=high, neginf=low)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return np.ascontiguousarray(image[:, :, :3])
    if image.ndim == 3 and image.shape[2] in (1, 2):
        return np.repeat(image[:, :, :1], 3, axis=2)
    raise InputError(f"{name}: unsupported image shape {image.shape} (expected H x W, H x W x 3 or H x W x 4)")


def mask_to_labels(mask: np.ndarray, name: str) -> np.ndarray:
    """Instance labels from a mask file: integer masks other than 8-bit unsigned are labels (int8,
    int16, uint64 included; ids beyond int32 renumbered, not wrapped); uint8 ones are binary and
    split into connected components; JPG masks are thresholded at 127. Negative ids are refused.

    >>> mask_to_labels(np.array([[0, 2**40], [2**33, 2**40]], np.uint64), "m.tif").tolist()
    [[0, 2], [1, 2]]
    """
    if mask.ndim == 3:
        mask = mask[..., :3].max(axis=2)
    if np.issubdtype(mask.dtype, np.integer) and mask.dtype != np.uint8 and mask.size and mask.max() > 1:
        if mask.min() < 0:
            raise InputError(f"{name}: a label mask with negative ids ({int(mask.min())}); labels are 0 or more")
        if mask.max() > np.iinfo(np.int32).max:
            return np.unique(mask, return_inverse=True)[1].reshape(mask.shape).astype(np.int32)
        return mask.astype(np.int32)
    threshold = 127 if name.lower().endswith((".jpg", ".jpeg")) else 0
    return ndimage.label(mask > threshold)[0].astype(np.int32)


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """Labels in the smallest type that holds them without merging any: uint16 (ids renumbered
    when they exceed 65535 but fit in number), else int32.

    >>> compact_labels(np.array([[0, 1], [65536, 65537]])).tolist()
    [[0, 1], [2, 3]]
    """
    if labels.max(initial=0) <= np.iinfo(np.uint16).max:
        return labels.astype(np.uint16)
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    return inverse.astype(np.uint16 if len(ids) <= np.iinfo(np.uint16).max + 1 else np.int32)


# --------------------------------------------------------------------------------------- layouts


def _raw_items_from_zip(path: Path) -> Iterable[Record]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        images = {n.split("/")[-3]: n for n in names if "/images/" in n and n.lower().endswith(IMAGE_SUFFIXES)}
        masks: dict[str, list[str]] = {}
        for n in names:
            parts = n.split("/")
            if len(parts) >= 3 and parts[-2] == "masks" and n.lower().endswith(IMAGE_SUFFIXES):
                masks.setdefault(parts[-3], []).append(n)
        if not images:
            raise InputError(f"{path}: no '<id>/images/<id>.png' entries in this archive")
        for image_id in sorted(images):
            image = to_rgb(
                decode_image(limits.read_zip_entry(archive, images[image_id], path), f"{path}:{images[image_id]}")
            )
            names = sorted(masks.get(image_id, []))
            labels = _stack_instance_masks(
                [decode_image(limits.read_zip_entry(archive, m, path), f"{path}:{m}") for m in names],
                image.shape[:2],
                [f"{path}:{m}" for m in names],
            )
            yield Record(image_id, image, labels)


def _raw_items_from_folder(path: Path) -> Iterable[Record]:
    folders = sorted(p for p in path.iterdir() if (p / "images").is_dir())
    for folder in folders:
        files = sorted(f for f in (folder / "images").iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{folder / 'images'}: no image file")
        image = to_rgb(decode_image(files[0]), str(files[0]))
        mask_files = sorted(f for f in (folder / "masks").glob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        labels = _stack_instance_masks(
            [decode_image(m) for m in mask_files], image.shape[:2], [str(m) for m in mask_files]
        )
        yield Record(folder.name, image, labels)


def _stack_instance_masks(masks: Sequence[np.ndarray], shape: tuple[int, ...], names: Sequence[str]) -> np.ndarray:
    labels = np.zeros(shape, np.int32)
    for index, (mask, name) in enumerate(zip(masks, names), start=1):
        if mask.ndim == 3:
            mask = mask.max(axis=2)
        if mask.shape != tuple(shape):
            raise InputError(f"{name}: mask is {mask.shape}, its image is {tuple(shape)}")
        labels[mask > 0] = index
    return labels


def _flat_items(path: Path) -> Iterable[Record]:
    def by_stem(folder: Path) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for f in sorted(folder.rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                stem = str(f.relative_to(folder).with_suffix(""))
                if stem in found:
                    raise InputError(f"{f}: two files with the stem '{stem}' ({found[stem].name}, {f.name})")
                found[stem] = f
        return found

    return _paired_items(path, by_stem(path / "images"), by_stem(path / "masks"))


def _cellpose_items(path: Path) -> Iterable[Record]:
    """Cellpose's layout: ``<name>.tif`` beside ``<name>_masks.tif`` (or .png) in one folder."""
    files = [f for f in sorted(path.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    for f in files:
        found, stem = (
            (masks, f.stem.removesuffix(CELLPOSE_MASK)) if f.stem.endswith(CELLPOSE_MASK) else (images, f.stem)
        )
        if stem in found:
            raise InputError(f"{f}: two files for '{stem}' ({found[stem].name}, {f.name})")
        found[stem] = f
    return _paired_items(path, images, masks)


def _paired_items(path: Path, images: dict[str, Path], masks: dict[str, Path]) -> Iterable[Record]:
    unmatched = sorted(set(images) ^ set(masks))
    if unmatched:
        shown = ", ".join(str(images.get(s) or masks.get(s)) for s in unmatched[:5])
        more = f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
        raise InputError(f"{path}: image without mask or mask without image: {shown}{more}")
    for stem in sorted(images):
        image = to_rgb(decode_image(images[stem]), str(images[stem]))
        labels = mask_to_labels(decode_image(masks[stem]), str(masks[stem]))
        if labels.shape != image.shape[:2]:
            raise InputError(f"{masks[stem]}: mask is {labels.shape}, image {images[stem].name} is {image.shape[:2]}")
        yield Record(stem, image, labels)


def iter_records(data: str | Path) -> Iterable[Record]:
    """Records of a dataset in either layout (folder or .zip), sorted by id."""
    path = Path(data)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise InputError(f"{path}: not a .zip archive or a dataset folder")
        return _raw_items_from_zip(path)
    if (path / "images").is_dir() and (path / "masks").is_dir():
        return _flat_items(path)
    if any(p.stem.endswith(CELLPOSE_MASK) and p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
        return _cellpose_items(path)
    if any((p / "images").is_dir() for p in path.iterdir()):
        return _raw_items_from_folder(path)
    raise InputError(f"{path}: neither 'images/' + 'masks/', '<id>/images/' folders nor '<name>_masks' files inside")


def cache_dir() -> Path:
    """``$ATTENTION_UNET_CACHE``, or ``~/.cache/attention-unet`` when unset or empty (an empty value
    must not mean the current directory)."""
    return Path(os.environ.get("ATTENTION_UNET_CACHE") or Path.home() / ".cache" / "attention-unet")


def _fingerprint(path: Path) -> str:
    """Cheap identity of a dataset: path, sizes and modification times of its files."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256(str(path.resolve()).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_records(data: str | Path, use_cache: bool = True) -> list[Record]:
    """All records of a dataset, decoded once and cached as .npz (the package sample is never cached)."""
    path = Path(data)
    if not use_cache or not path.exists() or path.resolve().is_relative_to(SAMPLE_DIR.resolve()):
        return list(iter_records(path))
    cache = cache_dir() / f"{path.name}-{_fingerprint(path)}.npz"
    if cache.is_file():
        try:
            return _read_cache(cache)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            print(
                f"warning: {cache}: damaged dataset cache ({type(exc).__name__}: {exc}); decoding {path} again",
                file=sys.stderr,
            )
    records = list(iter_records(path))
    try:
        _write_cache(cache, records)
    except OSError as exc:  # a speed-up only: a read-only or full disk must not stop the command
        print(
            f"warning: cannot write the dataset cache {cache} ({type(exc).__name__}: {exc}); going on without it "
            "(ATTENTION_UNET_CACHE names another folder)",
            file=sys.stderr,
        )
    return records


def _write_cache(cache: Path, records: list[Record]) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"ids": np.array(json.dumps([r.id for r in records]))}
    for r in records:
        arrays[f"{r.id}/image"], arrays[f"{r.id}/labels"] = r.image, r.labels
    # a name of its own: two runs decoding the same dataset at once must not write into one file
    fd, tmp_name = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.stem}-", suffix=".npz")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        tmp.with_suffix(".sha256").write_text(_sha256(tmp))
        tmp.with_suffix(".sha256").replace(cache.with_suffix(".sha256"))
        tmp.replace(cache)
    finally:  # a disk that filled up keeps no partial file
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".sha256").unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_cache(cache: Path) -> list[Record]:
    """The records in a cache file whose checksum matches the one written beside it."""
    expected = cache.with_suffix(".sha256")
    if not expected.is_file() or expected.read_text().strip() != _sha256(cache):
        raise ValueError("its checksum does not match")
    with np.load(cache, allow_pickle=False) as z:
        ids = json.loads(str(z["ids"]))
        return [Record(i, z[f"{i}/image"], z[f"{i}/labels"]) for i in ids]


def default_data() -> Path:
    """The embedded DSB-2018 sample: the default dataset of every command."""
    return SAMPLE_DIR


# ----------------------------------------------------------------------------------------- split


def reference_split(ids: Sequence[str]) -> dict[str, list[str]]:
    """The report's 60/20/20 split: sorted ids, n = int(0.2 N), train_test_split(random_state=42) twice."""
    from sklearn.model_selection import train_test_split

    ids = sorted(ids)
    n = int(0.2 * len(ids))
    if n < 1:
        raise InputError(f"need at least 5 images for a train/valid/test split, got {len(ids)}")
    train, valid = train_test_split(ids, test_size=n, random_state=42)
    train, test = train_test_split(train, test_size=n, random_state=42)
    return {"train": list(train), "valid": list(valid), "test": list(test)}


def groups_of(ids: Sequence[str]) -> dict[str, str] | None:
    """Each id's group when the ids name one (``<slide>_<crop>``, as TNBC's ``01_3``): the text
    before the first underscore, used only when it gives at least 3 groups and at most half as
    many groups as ids. None otherwise (DSB ids are hashes; BBBC039's all start ``IXMtest_``).

    >>> groups_of(["01_1", "01_2", "02_1", "02_2", "03_1", "03_2"])["02_2"]
    '02'
    >>> groups_of(["IXMtest_A02_s1", "IXMtest_A06_s6"]) is None
    True
    """
    groups = {i: i.split("_", 1)[0] for i in ids if "_" in i}
    n = len(set(groups.values()))
    return groups if len(groups) == len(ids) and 3 <= n <= len(ids) / 2 else None


def default_split(ids: Sequence[str]) -> dict[str, list[str]]:
    """The split a dataset gets unless a split file says otherwise: whole groups (slides) 60/20/20
    when :func:`groups_of` finds them, so no slide is in two parts (seeded, as the reference split);
    else the report's :func:`reference_split`."""
    groups = groups_of(ids)
    if groups is None:
        return reference_split(ids)
    by_group = reference_split(sorted(set(groups.values())))
    return {part: sorted(i for i in ids if groups[i] in set(names)) for part, names in by_group.items()}


def load_split(path: str | Path, dataset: str | None = None) -> dict[str, list[str]]:
    """A split file's {train, valid, test} lists; in a several-dataset file ({dataset: {train,
    valid, test}}, as multi-dataset training writes), those of ``dataset``: matched by resolved path,
    else by name where one dataset has it (the file read from another folder or machine; the ids
    are still checked by :func:`select`)."""
    try:
        split = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not text at all (UnicodeDecodeError)
        raise InputError(f"{path}: cannot read split file ({type(exc).__name__}: {exc})") from None
    if isinstance(split, dict) and not {"train", "valid", "test"} <= set(split) and dataset is not None:
        matches = [v for k, v in split.items() if Path(k).resolve() == Path(dataset).resolve()]
        if not matches:
            named = [v for k, v in split.items() if Path(k).name == Path(dataset).name]
            matches = named if len(named) == 1 else []
        if not matches:
            raise InputError(f"{path}: no split for dataset {dataset} (it has {', '.join(split)})")
        split = matches[0]
    if not isinstance(split, dict) or not {"train", "valid", "test"} <= set(split):
        raise InputError(f"{path}: a split file needs 'train', 'valid' and 'test' lists")
    return {k: list(split[k]) for k in ("train", "valid", "test")}


def select(records: Sequence[Record], split: dict[str, list[str]], part: str) -> list[Record]:
    """The records of one split part ('all' for every record); unknown ids are an error."""
    if part == "all":
        return list(records)
    wanted = split[part]
    by_id = {r.id: r for r in records}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise InputError(f"split part '{part}' names {len(missing)} ids not in the data, e.g. {missing[0]}")
    return [by_id[i] for i in wanted]


def strip_split(records: Sequence[Record], size: int) -> tuple[list[Record], list[Record]]:
    """A split within images, for a handful of them (fine-tuning): each image's bottom strip, cut
    into squares, validates; the rows above train. The strip is ``size`` rows, or a quarter of the
    image's height when that is less; an image whose quarter is under 16 rows trains whole.

    >>> r = Record("a", np.zeros((600, 260, 3), np.uint8), np.zeros((600, 260), np.int32))
    >>> train, valid = strip_split([r], 128)
    >>> train[0].image.shape[:2], [v.id for v in valid], valid[0].image.shape[:2]
    ((472, 260), ['a@0', 'a@1'], (128, 128))
    >>> [v.image.shape[:2] for v in strip_split([Record("b", r.image[:200], r.labels[:200])], 128)[1]][:1]
    [(50, 50)]
    """
    train: list[Record] = []
    valid: list[Record] = []
    for r in records:
        h, w = r.labels.shape
        strip = min(size, h // 4, w)
        if strip < 16:
            train.append(r)
            continue
        train.append(Record(r.id, r.image[: h - strip], r.labels[: h - strip]))
        for k, x in enumerate(range(0, w - strip + 1, strip)):
            valid.append(
                Record(f"{r.id}@{k}", r.image[h - strip :, x : x + strip], r.labels[h - strip :, x : x + strip])
            )
    return train, valid


# ------------------------------------------------------------------------------- normalisation


def normalisation_range(image: np.ndarray, mode: str = "percentile") -> tuple[float, float]:
    """(low, high) mapped to 0..1: 'fixed' is 0..dtype maximum (the report's /255 for 8-bit);
    'percentile' the image's 1st..99.8th percentile (robust to exposure), from ~1M pixels at most;
    'polarity' is 'percentile' turned round (high, low) when the median pixel is in the upper half,
    so dark nuclei on a bright background (brightfield, stained tissue) come out bright on dark like
    fluorescence. 'stain' is 'polarity' that also turns round every colour image of bright mean
    (:func:`modality` 'stained'): H&E nuclei are dark even where tissue fills the field (MoNuSeg's
    median pixel sits at 0.31-0.74 of the range, so polarity left half its tiles unturned).
    Computed once per image, so tiles of one image share it.

    >>> normalisation_range(np.array([[[0], [0], [0], [200]]], np.uint8), "polarity")[0] < 1
    True
    >>> normalisation_range(np.array([[[200], [200], [200], [0]]], np.uint8), "polarity")[0] > 100
    True
    """
    step = sample_step(image.shape[0], image.shape[1])
    return range_of_sample(image[::step, ::step], mode)


def sample_step(height: int, width: int) -> int:
    """The stride of the (at most ~1M) pixels :func:`normalisation_range` looks at."""
    return max(1, int(math.sqrt(height * width / 1e6)))


def range_of_sample(pixels: np.ndarray, mode: str) -> tuple[float, float]:
    """:func:`normalisation_range` from the image's pixels at :func:`sample_step`'s stride (a block-wise
    prediction gathers them block by block, so that it normalises exactly as the whole image would)."""
    if mode == "fixed":
        return 0.0, float(np.iinfo(pixels.dtype).max) if np.issubdtype(pixels.dtype, np.integer) else 1.0
    if mode not in NORMALISATIONS:
        raise InputError(f"unknown normalisation '{mode}' (choose from {', '.join(NORMALISATIONS)})")
    lo, hi = np.percentile(pixels, (1.0, 99.8))
    lo, hi = float(lo), float(max(hi, lo + 1e-6))
    if (
        mode in ("polarity", "stain")
        and float(np.median(pixels.mean(axis=-1) if pixels.ndim == 3 else pixels)) > (lo + hi) / 2
    ):
        return hi, lo
    if mode == "stain" and pixels.ndim == 3 and modality(pixels) == "stained":
        return hi, lo  # dense tissue with no white background: its median is purple, its nuclei still dark
    return lo, hi


def normalise(
    image: np.ndarray, mode: str = "percentile", value_range: tuple[float, float] | None = None
) -> np.ndarray:
    """float32 image mapped by :func:`normalisation_range` (or the given range); all but 'fixed' clip to 0..1."""
    lo, hi = value_range or normalisation_range(image, mode)
    out = (image.astype(np.float32) - lo) / np.float32(hi - lo)
    return out if mode == "fixed" else np.clip(out, 0.0, 1.0, out=out)


def resize(array: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize to (height, width): bilinear for images, nearest for labels, both with pixel centres
    mapped onto pixel centres. (OpenCV's INTER_NEAREST samples floor(x / factor) instead, which moves
    labels by up to about half a pixel against the bilinear image: at zoom 0.4 on 6 BBBC039
    valid images, the shipped model's pixel F1 was 0.940 against those labels, 0.959 against
    centred ones, and a mirrored view of the image scored 0.905 instead of 0.940; docs/experiments.)"""
    import cv2

    if array.shape[:2] == tuple(size):
        return array
    interp = cv2.INTER_NEAREST_EXACT if nearest else cv2.INTER_LINEAR
    native = array.dtype in (np.uint8, np.uint16, np.int16, np.float32, np.float64)
    if native:
        return cv2.resize(array, (size[1], size[0]), interpolation=interp)
    # OpenCV resizes those types only. Integers that fit 8 or 16 bits go through that type, so an
    # int32 or int64 TIFF of 8-bit pixels gives what the uint8 file gives; the rest (uint32 and
    # int64 labels, float16) through float64, exact below 2**53, rounded back, never truncated
    if np.issubdtype(array.dtype, np.integer) and array.size and array.min() >= 0:
        for small in (np.uint8, np.uint16):
            if array.max() <= np.iinfo(small).max:
                out = cv2.resize(array.astype(small), (size[1], size[0]), interpolation=interp)
                return out.astype(array.dtype)
    out = cv2.resize(array.astype(np.float64), (size[1], size[0]), interpolation=interp)
    return np.rint(out).astype(array.dtype) if np.issubdtype(array.dtype, np.integer) else out.astype(array.dtype)


def protocol_view(record: Record, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """The image and instance labels an evaluation protocol scores: ``resize256`` (the report's:
    both resized to 256 x 256, labels by nearest neighbour) or ``native`` (as stored)."""
    if protocol == "resize256":
        size = protocol_shape(record, protocol)
        return resize(record.image, size), resize(record.labels, size, nearest=True)
    return record.image, record.labels


def protocol_shape(record: Record, protocol: str) -> tuple[int, int]:
    """The height and width of what :func:`protocol_view` gives, without resizing anything."""
    return (256, 256) if protocol == "resize256" else (record.image.shape[0], record.image.shape[1])


def modality(image: np.ndarray) -> str:
    """'fluorescence' (dark background, grey or a colour composite), 'brightfield' (grey, bright
    background) or 'stained' (colour, bright background): channel spread and mean brightness of
    the 8-bit-scaled image."""
    x = normalise(image, "fixed")
    if float(x.mean()) <= 0.3:
        return "fluorescence"
    colour = float(np.abs(x - x.mean(axis=2, keepdims=True)).mean()) > 0.01
    return "stained" if colour else "brightfield"


def signal_channel(image: np.ndarray) -> int | None:
    """The one channel that holds a fluorescence image's signal when the image is coloured so (DAPI
    exported in blue, say): a dark background, and every other channel at most a tenth as bright
    (99.5th percentile above the 0.5th, on :func:`sample_step`'s pixels). None for grey images,
    composites of several stains and stained tissue. The network learnt fluorescence in grey only
    (DSB-2018's 541 fluorescence images are all grey): the sample's nuclei shown in blue gave no
    nucleus at all (highest probability 0.04), in red or green 23, in grey 24 (docs/experiments)."""
    signal = _colour_signals(image)
    if signal is None or signal.max() <= 0 or np.sort(signal)[-2] > 0.1 * signal.max():
        return None
    return int(np.argmax(signal))


def several_colours(image: np.ndarray) -> bool:
    """Whether ``image`` is a fluorescence composite: two channels or more carry signal (at least a
    tenth of the brightest's), so that which one holds the nuclei is the user's to say (--channel)."""
    signal = _colour_signals(image)
    return signal is not None and signal.max() > 0 and np.sort(signal)[-2] > 0.1 * signal.max()


def _colour_signals(image: np.ndarray) -> np.ndarray | None:
    """Each colour's 99.5th percentile above its 0.5th on :func:`sample_step`'s pixels, for a
    fluorescence image in colour; None for grey images and everything else."""
    if image.ndim != 3 or image.shape[2] < 3:
        return None
    step = sample_step(image.shape[0], image.shape[1])
    sample = image[::step, ::step, :3]
    if (sample[..., :1] == sample[..., 1:]).all() or modality(sample) != "fluorescence":
        return None  # grey (the common case, decided at once), or not fluorescence
    low, high = np.percentile(sample.reshape(-1, 3).astype(np.float64), (0.5, 99.5), axis=0)
    return high - low


def sharpness(image: np.ndarray, mode: str, value_range: tuple[float, float] | None = None) -> float:
    """Median |Laplacian| of the image normalised as the network sees it (channels averaged): how
    much fine texture it carries per pixel. TNBC's H&E crops read 0.025-0.11, the DSB archive's
    stained tissue 0.007-0.022 (docs/experiments)."""
    from scipy import ndimage

    grey = normalise(image, mode, value_range).mean(axis=-1)  # H x W x C, as everywhere here
    return float(np.median(np.abs(ndimage.laplace(grey))))


def central(image: np.ndarray, size: int = 1024) -> np.ndarray:
    """The image's central size x size window (all of it when smaller): a bounded sample of a
    large image for measures that need neighbouring pixels."""
    y, x = max(0, (image.shape[0] - size) // 2), max(0, (image.shape[1] - size) // 2)
    return image[y : y + size, x : x + size]


def count_by(values: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))
