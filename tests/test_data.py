"""Dataset layouts, image kinds, the reference split, normalisation."""

import json
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from scipy import ndimage
from sklearn.model_selection import train_test_split

from attention_unet.errors import InputError
from attention_unet.io import data, images

from .conftest import ARCHIVE, disks


def make_flat(root: Path, items: dict[str, tuple[np.ndarray, np.ndarray, str, str]]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for stem, (image, mask, image_ext, mask_ext) in items.items():
        for folder, array, ext in (("images", image, image_ext), ("masks", mask, mask_ext)):
            target = root / folder / f"{stem}{ext}"
            tifffile.imwrite(target, array) if ext == ".tif" else iio.imwrite(target, array)
    return root


def test_flat_layout_pairs_by_stem_and_reads_every_kind(tmp_path: Path) -> None:
    labels = disks((32, 40), [(10, 10), (20, 28)], 5)
    binary = ((labels > 0) * 255).astype(np.uint8)
    rgba = np.dstack([np.full((32, 40, 3), 90, np.uint8), np.full((32, 40), 255, np.uint8)])
    grey16 = (labels * 1000).astype(np.uint16)
    root = make_flat(
        tmp_path,
        {
            "b": (rgba, binary, ".png", ".png"),  # 'b' before 'c' by stem; masks sorted differently on disk
            "c": (grey16, labels.astype(np.uint16), ".tif", ".tif"),
            "a": (np.full((32, 40, 3), 50, np.uint8), binary, ".jpg", ".jpg"),
        },
    )
    records = data.load_records(root)
    assert [r.id for r in records] == ["a", "b", "c"]
    assert all(r.image.shape == (32, 40, 3) for r in records)
    assert records[2].image.dtype == np.uint16
    np.testing.assert_array_equal(records[1].labels > 0, labels > 0)  # 8-bit masks: binary, components
    assert records[1].labels.max() == 2
    np.testing.assert_array_equal(records[2].labels, labels)  # 16-bit masks: instance labels
    assert abs(int((records[0].labels > 0).sum()) - int((labels > 0).sum())) < 20  # JPG thresholded at 127


def test_unmatched_files_are_named(tmp_path: Path) -> None:
    root = make_flat(tmp_path, {"x": (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), ".png", ".png")})
    iio.imwrite(root / "images" / "lonely.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match="lonely.png"):
        data.load_records(root)


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    root = make_flat(tmp_path, {"x": (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), ".png", ".png")})
    (root / "images" / "x.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"x\.png: cannot read image"):
        data.load_records(root)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_empty_and_truncated_files_say_so(tmp_path: Path, suffix: str) -> None:
    """A 0-byte file says it is empty; a cut-off PNG gives Pillow's reason, not imageio's wrapper."""
    (tmp_path / f"empty{suffix}").write_bytes(b"")
    with pytest.raises(InputError, match=rf"empty\{suffix}: cannot read image \(the file is empty: 0 bytes\)"):
        images.open_image(tmp_path / f"empty{suffix}")
    with pytest.raises(InputError, match=r"the file is empty"):
        data.decode_image(b"", f"x{suffix}")
    noise = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)  # incompressible
    iio.imwrite(tmp_path / "full.png", noise)
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:2000])
    with pytest.raises(InputError, match=r"cut\.png: cannot read image \(OSError: .*[Tt]runcated"):
        images.open_image(tmp_path / "cut.png")
    (tmp_path / "text.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"text\.png: cannot read image \(\w+: Pillow can not read"):
        images.open_image(tmp_path / "text.png")


def write_raw(root: Path) -> None:
    for i in range(3):
        labels = disks((24, 24), [(6, 6), (16, 16)][: i + 1], 4)
        (root / f"id{i}" / "images").mkdir(parents=True)
        (root / f"id{i}" / "masks").mkdir()
        iio.imwrite(root / f"id{i}" / "images" / f"id{i}.png", np.full((24, 24, 4), 100, np.uint8))
        for k in range(1, labels.max() + 1):
            iio.imwrite(root / f"id{i}" / "masks" / f"m{k}.png", ((labels == k) * 255).astype(np.uint8))


def test_raw_layout_from_folder_and_zip_agree(tmp_path: Path) -> None:
    write_raw(tmp_path / "raw")
    with zipfile.ZipFile(tmp_path / "raw.zip", "w") as z:
        for f in sorted((tmp_path / "raw").rglob("*.png")):
            z.write(f, f.relative_to(tmp_path / "raw"))
    from_folder, from_zip = data.load_records(tmp_path / "raw"), data.load_records(tmp_path / "raw.zip")
    assert [r.id for r in from_zip] == ["id0", "id1", "id2"]
    for a, b in zip(from_folder, from_zip):
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.image.shape == (24, 24, 3)
    assert [r.labels.max() for r in from_zip] == [1, 2, 2]
    # the cache returns the same records
    again = data.load_records(tmp_path / "raw.zip")
    np.testing.assert_array_equal(again[1].labels, from_zip[1].labels)


def test_reference_split_follows_the_report() -> None:
    ids = [f"{i:03d}" for i in range(57)][::-1]
    split = data.reference_split(ids)
    n = int(0.2 * 57)
    train, valid = train_test_split(sorted(ids), test_size=n, random_state=42)
    train, test = train_test_split(train, test_size=n, random_state=42)
    assert split == {"train": train, "valid": valid, "test": test}
    assert sorted(split["train"] + split["valid"] + split["test"]) == sorted(ids)


def test_split_file_round_trip_and_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"train": []}')
    with pytest.raises(InputError, match="bad.json"):
        data.load_split(tmp_path / "bad.json")


def test_normalisations() -> None:
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)[..., None].repeat(3, 2)
    np.testing.assert_allclose(data.normalise(image, "fixed"), image / 255.0, atol=1e-6)
    out = data.normalise((image.astype(np.uint16) * 200), "percentile")
    assert out.min() == 0.0 and out.max() == pytest.approx(1.0) and out.dtype == np.float32
    dark_nuclei = np.full((16, 16, 3), 200, np.uint8)
    dark_nuclei[4:8, 4:8] = 30
    turned = data.normalise(dark_nuclei, "polarity")  # brightfield-like: nuclei come out bright
    assert turned[5, 5].min() == pytest.approx(1.0) and turned[0, 0].max() == pytest.approx(0.0)
    assert np.array_equal(
        data.normalise(255 - dark_nuclei, "polarity"), data.normalise(255 - dark_nuclei, "percentile")
    )


def test_protocol_views_keep_native_and_resize_labels_without_mixing_them() -> None:
    labels = np.zeros((100, 300), np.int32)
    labels[10:60, 20:120], labels[10:60, 120:200] = 7, 9  # two touching nuclei
    record = data.Record("r", np.zeros((100, 300, 3), np.uint8), labels)
    image, native = data.protocol_view(record, "native")
    assert image is record.image and native is labels
    image, small = data.protocol_view(record, "resize256")
    assert image.shape == (256, 256, 3) and small.shape == (256, 256)
    assert set(np.unique(small)) == {0, 7, 9}  # nearest neighbour: no blended label values


@pytest.mark.parametrize("factor", [0.3, 0.4, 0.7, 2.5])
def test_resized_labels_stay_on_the_resized_image(factor: float) -> None:
    """Labels resized by nearest neighbour keep their centroid where the bilinear image's blob is
    (within a tenth of a pixel; OpenCV's INTER_NEAREST moved them by 0.2-0.6 pixels at these factors)."""
    yy, xx = np.mgrid[:120, :160]
    blob = ((yy - 57.5) ** 2 + (xx - 77.5) ** 2 <= 20**2).astype(np.float32)
    size = (round(120 * factor), round(160 * factor))
    image, labels = data.resize(blob, size), data.resize(blob.astype(np.int32), size, nearest=True)
    grid = np.mgrid[: size[0], : size[1]]
    centre_of = [(grid * weights).sum(axis=(1, 2)) / weights.sum() for weights in (image, labels.astype(float))]
    np.testing.assert_allclose(centre_of[1], centre_of[0], atol=0.1)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16"])
def test_every_integer_and_float_type_resizes_and_keeps_its_type(dtype: str) -> None:
    """OpenCV resizes only some pixel types; an int64 array (numpy's default integer) or a uint32
    TIFF failed with OpenCV's assertion instead of being segmented."""
    image = np.arange(12 * 16).reshape(12, 16).astype(dtype) % 100
    for nearest in (False, True):
        out = data.resize(image, (6, 8), nearest=nearest)
        assert out.shape == (6, 8) and out.dtype == image.dtype
    np.testing.assert_array_equal(data.resize(image, (24, 32), nearest=True)[::2, ::2], image)
    big = np.array([[2**40 + 1, 7], [7, 2**40 + 1]], np.int64)  # labels beyond float32's integers
    assert set(np.unique(data.resize(big, (4, 4), nearest=True))) == {7, 2**40 + 1}


def test_an_empty_array_is_named_not_an_index_error() -> None:
    with pytest.raises(InputError, match=r"x.tif: the image is empty \(shape \(0, 10\)\)"):
        data.to_rgb(np.zeros((0, 10), np.uint8), "x.tif")


def test_modality_rules() -> None:
    dark = np.zeros((8, 8, 3), np.uint8)
    bright = np.full((8, 8, 3), 200, np.uint8)
    colour = np.dstack([bright[..., 0], dark[..., 0], bright[..., 0]])
    # a colour composite on a dark background (nuclei in blue, say) is fluorescence, not stain
    composite = np.dstack([dark[..., 0], dark[..., 0], np.eye(8, dtype=np.uint8) * 250])
    assert [data.modality(x) for x in (dark, bright, colour, composite)] == [
        "fluorescence",
        "brightfield",
        "stained",
        "fluorescence",
    ]


def test_sharpness_reads_fine_texture_not_brightness() -> None:
    rng = np.random.default_rng(0)
    flat = np.full((64, 64, 3), 180, np.uint8)
    noisy = np.clip(flat + rng.normal(0, 25, flat.shape), 0, 255).astype(np.uint8)
    smooth = np.clip(flat + ndimage.gaussian_filter(rng.normal(0, 25, flat.shape), (3, 3, 0)) * 8, 0, 255)
    fixed = data.normalise(noisy, "fixed")
    assert data.sharpness(flat, "fixed") == 0
    assert data.sharpness(noisy, "fixed") == pytest.approx(
        np.median(np.abs(ndimage.laplace(fixed.mean(axis=-1)))), rel=1e-6
    )
    assert data.sharpness(smooth.astype(np.uint8), "fixed") < data.sharpness(noisy, "fixed") / 4
    assert data.central(np.zeros((3000, 10, 3)), 1024).shape == (1024, 10, 3)


def test_embedded_sample_is_complete() -> None:
    records = data.load_records(data.default_data())
    assert len(records) == 39
    assert data.count_by(data.modality(r.image) for r in records) == {
        "brightfield": 2,
        "fluorescence": 28,
        "stained": 9,
    }
    assert (data.SAMPLE_DIR / "NOTICE").is_file()


@pytest.mark.skipif(not ARCHIVE.is_file(), reason="DSB-2018 archive not in ../shared")
def test_real_archive_and_sample_lies_in_its_test_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATTENTION_UNET_CACHE")  # decode the 29k mask PNGs once per machine, not per run
    records = data.load_records(ARCHIVE)
    assert len(records) == 664
    split = data.reference_split([r.id for r in records])
    assert [len(split[k]) for k in ("train", "valid", "test")] == [400, 132, 132]
    sample_ids = {r.id for r in data.load_records(data.default_data())}
    assert sample_ids <= set(split["test"])
    first = records[0]
    assert first.image.shape[2] == 3 and first.labels.max() > 1
    # the data survey's modality counts, and polarity turns exactly the dark-nuclei ones round
    kinds = []
    for r in records:
        low, high = data.normalisation_range(r.image, "polarity")
        kinds.append(f"{data.modality(r.image)}{' turned' if low > high else ''}")
    assert data.count_by(kinds) == {"brightfield turned": 16, "fluorescence": 541, "stained turned": 107}


@pytest.mark.parametrize(
    ("value", "expected"), [("", Path.home() / ".cache" / "attention-unet"), ("/tmp/x", Path("/tmp/x"))]
)
def test_cache_dir_treats_an_empty_variable_as_unset(monkeypatch, value: str, expected: Path) -> None:
    monkeypatch.setenv("ATTENTION_UNET_CACHE", value)
    assert data.cache_dir() == expected


def test_default_split_keeps_each_slide_in_one_part() -> None:
    ids = [f"{slide:02d}_{crop}" for slide in range(1, 11) for crop in range(1, 5)]
    split = data.default_split(ids)
    assert sorted(i for names in split.values() for i in names) == sorted(ids)
    parts = {part: {i.split("_")[0] for i in names} for part, names in split.items()}
    assert [len(parts[p]) for p in ("train", "valid", "test")] == [6, 2, 2]
    assert not (parts["train"] & parts["valid"] or parts["train"] & parts["test"] or parts["valid"] & parts["test"])
    assert data.default_split(ids) == split  # seeded
    hashes = [f"{i:04x}" for i in range(20)]
    assert data.default_split(hashes) == data.reference_split(hashes)  # no groups: the report's split


def test_several_dataset_split_file_is_read_per_dataset(tmp_path: Path) -> None:
    split = {"train": ["a"], "valid": ["b"], "test": ["c"]}
    path = tmp_path / "split.json"
    path.write_text(json.dumps({str(tmp_path / "one"): split, str(tmp_path / "two"): {**split, "train": ["d"]}}))
    assert data.load_split(path, str(tmp_path / "two"))["train"] == ["d"]
    with pytest.raises(InputError, match="no split for dataset"):
        data.load_split(path, str(tmp_path / "three"))
    # read from another folder (a run folder copied, data elsewhere): the one dataset of that name
    assert data.load_split(path, str(tmp_path / "elsewhere" / "two"))["train"] == ["d"]
    path.write_text(json.dumps({"a/two": split, "b/two": {**split, "train": ["d"]}}))
    with pytest.raises(InputError, match="no split for dataset"):  # two of that name: which is unknown
        data.load_split(path, str(tmp_path / "two"))


def test_raw_mask_of_another_size_is_named(tmp_path: Path) -> None:
    write_raw(tmp_path / "raw")
    iio.imwrite(tmp_path / "raw" / "id1" / "masks" / "m2.png", np.zeros((20, 24), np.uint8))
    with zipfile.ZipFile(tmp_path / "raw.zip", "w") as z:
        for f in sorted((tmp_path / "raw").rglob("*.png")):
            z.write(f, f.relative_to(tmp_path / "raw"))
    for source in (tmp_path / "raw", tmp_path / "raw.zip"):
        with pytest.raises(InputError, match=r"id1/masks/m2.png: mask is \(20, 24\), its image is \(24, 24\)"):
            data.load_records(source, use_cache=False)


def test_cellpose_layout_pairs_each_image_with_its_masks_file(tmp_path: Path) -> None:
    labels = disks((24, 32), [(8, 8), (14, 22)], 4).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", np.full((24, 32), 50, np.uint8))
    tifffile.imwrite(tmp_path / "a_masks.tif", labels)
    iio.imwrite(tmp_path / "b.png", np.full((24, 32, 3), 50, np.uint8))
    iio.imwrite(tmp_path / "b_masks.png", labels)
    records = data.load_records(tmp_path, use_cache=False)
    assert [r.id for r in records] == ["a", "b"]
    assert all(r.labels.max() == 2 and r.image.shape == (24, 32, 3) for r in records)
    iio.imwrite(tmp_path / "c_masks.png", labels)
    with pytest.raises(InputError, match="c_masks.png"):
        data.load_records(tmp_path, use_cache=False)


def test_signal_channel_finds_a_fluorescence_image_shown_in_one_colour() -> None:
    """Nuclei in one colour on black (DAPI exported in blue) name that channel; grey images,
    composites of two stains and stained tissue (bright background) name none."""
    from .conftest import synthetic

    grey = synthetic(0, (64, 64))[0]
    for k in range(3):
        coloured = np.zeros((64, 64, 3), np.uint8)
        coloured[..., k] = grey
        assert data.signal_channel(coloured) == k
        assert data.signal_channel(coloured.astype(np.uint16) * 200) == k  # 16-bit too
    assert data.signal_channel(np.dstack([grey] * 3)) is None  # grey
    assert data.signal_channel(grey) is None
    composite = np.dstack([np.zeros_like(grey), grey[::-1] // 2, grey])  # a second stain at half
    assert data.signal_channel(composite) is None and data.several_colours(composite)
    assert not data.several_colours(np.dstack([grey] * 3)) and not data.several_colours(coloured)
    faint = np.dstack([np.zeros_like(grey), grey // 20, grey])  # another channel a twentieth as bright
    assert data.signal_channel(faint) == 2
    tissue = np.dstack([255 - grey, 255 - grey, np.full_like(grey, 230)])  # bright background
    assert data.modality(tissue) != "fluorescence" and data.signal_channel(tissue) is None
