"""Microscopy files in, per-nucleus tables and Fiji/QuPath outlines out (the shipped model on
real nuclei from the embedded sample, placed in synthetic OME-TIFFs)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import roifile
import tifffile

from attention_unet.cli import main
from attention_unet.io.data import SAMPLE_DIR
from attention_unet.io.images import open_image
from attention_unet.io.measure import keep, measurements, outlines, polygon_area

SAMPLE = SAMPLE_DIR / "images" / "05040e2e959c3f5632558fc9683fec88f0010026c555b499066346f67fdd0e13.png"


def nuclei() -> np.ndarray:
    """A 256 x 256 grey fluorescence image of real nuclei, 16-bit."""
    image = iio.imread(SAMPLE)
    return ((image if image.ndim == 2 else image[..., :3].mean(axis=2)) * 50.0).astype(np.uint16)


@pytest.fixture(scope="module")
def two_channel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A GFP + DAPI OME-TIFF (nuclei in channel 1, named DAPI) at 0.65 µm per pixel, predicted
    with every export; (the file, the output folder)."""
    folder = tmp_path_factory.mktemp("two")
    dapi = nuclei()
    gfp = np.full_like(dapi, 1000)
    gfp[:, 128:] = 3000  # a known intensity per half
    path = folder / "cells.ome.tif"
    tifffile.imwrite(
        path,
        np.stack([gfp, dapi]),
        metadata={"axes": "CYX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65, "Channel": {"Name": ["GFP", "DAPI"]}},
    )
    out = folder / "out"
    assert main(["predict", str(path), "--out", str(out), "--channel", "DAPI", "--rois", "--geojson"]) == 0
    return path, out


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_chosen_channel_is_segmented_once_and_both_are_measured(two_channel: tuple[Path, Path]) -> None:
    _, out = two_channel
    labels = tifffile.imread(out / "cells_labels.tif")
    assert labels.shape == (256, 256) and labels.max() > 10  # one image, not one per channel
    assert not list(out.glob("*_p1*"))
    rows = read_rows(out / "cells_nuclei.csv")
    assert [int(r["label"]) for r in rows] == list(range(1, labels.max() + 1))
    areas = np.bincount(labels.ravel())[1:]
    for row in rows:
        assert int(row["area"]) == areas[int(row["label"]) - 1]
        assert float(row["area_um2"]) == pytest.approx(int(row["area"]) * 0.65**2, rel=1e-4)
        assert float(row["mean_GFP"]) in (1000.0, 3000.0) or 1000 < float(row["mean_GFP"]) < 3000
        assert float(row["integrated_DAPI"]) == pytest.approx(float(row["mean_DAPI"]) * int(row["area"]), rel=1e-4)
    # ImageJ resolution: pixels per µm
    with tifffile.TiffFile(out / "cells_labels.tif") as tif:
        numerator, denominator = tif.pages[0].tags["XResolution"].value
        assert numerator / denominator == pytest.approx(1 / 0.65, rel=1e-3) and tif.imagej_metadata["unit"] == "um"


def test_rois_and_geojson_have_one_polygon_per_nucleus_of_its_area(two_channel: tuple[Path, Path]) -> None:
    _, out = two_channel
    labels = tifffile.imread(out / "cells_labels.tif")
    areas = np.bincount(labels.ravel())[1:]
    rois = roifile.roiread(out / "cells_rois.zip")
    assert len(rois) == labels.max()
    for roi in rois:
        label = int(roi.name.split("-")[-1])
        assert polygon_area(roi.coordinates()) == pytest.approx(areas[label - 1], rel=0.05)
    collection = json.loads((out / "cells_nuclei.geojson").read_text())
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == labels.max()
    for feature in collection["features"]:
        ring = np.array(feature["geometry"]["coordinates"][0])
        assert feature["geometry"]["type"] == "Polygon" and (ring[0] == ring[-1]).all()
        assert polygon_area(ring[:-1]) == pytest.approx(areas[feature["properties"]["label"] - 1], rel=0.05)
        assert feature["properties"]["measurements"]["area"] == areas[feature["properties"]["label"] - 1]


def test_outline_coordinates_are_imagejs() -> None:
    """Pixel (row 2, column 3) covers x 3..4, y 2..3 in ImageJ and QuPath."""
    labels = np.zeros((8, 8), np.int32)
    labels[2:5, 3:7] = 1
    ring = outlines(labels)[1]
    assert ring[:, 0].min() == 3 and ring[:, 0].max() == 7 and ring[:, 1].min() == 2 and ring[:, 1].max() == 5
    assert polygon_area(ring) == pytest.approx(12 - 4 / 8)  # four outer corners cut by 1/8 pixel each


def test_a_z_stack_gives_one_label_stack(tmp_path: Path) -> None:
    image = nuclei()
    tifffile.imwrite(
        tmp_path / "z.tif",
        np.stack([image, image[::-1], image]),
        imagej=True,
        metadata={"axes": "ZYX", "unit": "um"},
        resolution=(2.0, 2.0),
    )
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "z.tif"), "--out", str(out), "--rois"]) == 0
    with tifffile.TiffFile(out / "z_labels.tif") as tif:
        labels = tif.asarray()
        assert tif.series[0].axes == "ZYX" and labels.shape == (3, 256, 256)
    flipped = labels[1][::-1] > 0  # the middle plane is the image upside down
    assert (labels[0] == labels[2]).all() and (flipped & (labels[0] > 0)).sum() / (
        flipped | (labels[0] > 0)
    ).sum() > 0.9
    rows = read_rows(out / "z_nuclei.csv")
    assert {r["z"] for r in rows} == {"0", "1", "2"} and "area_um2" in rows[0]  # 0.5 µm from the ImageJ resolution
    assert sorted({roi.position for roi in roifile.roiread(out / "z_rois.zip")}) == [1, 2, 3]
    assert not list(out.glob("*.png"))


def test_planes_are_read_one_at_a_time(tmp_path: Path) -> None:
    stack = np.arange(4 * 2 * 6 * 5, dtype=np.uint16).reshape(4, 2, 6, 5)
    tifffile.imwrite(tmp_path / "s.ome.tif", stack, metadata={"axes": "ZCYX"})
    source = open_image(tmp_path / "s.ome.tif")
    assert (source.stack_axes, source.n_channels, source.shape_yx) == ("Z", 2, (6, 5))
    planes = list(source.planes())
    assert [p.position for p in planes] == [{"Z": z} for z in range(4)]
    assert all((p.channels == np.moveaxis(stack[z], 0, 2)).all() for z, p in enumerate(planes))


def test_exclude_edges_and_min_size(tmp_path: Path) -> None:
    labels = np.zeros((20, 20), np.int32)
    labels[0:3, 5:8] = 1  # touches the border
    labels[8:12, 8:12] = 2
    labels[15:16, 15:17] = 3  # 2 pixels
    kept = keep(labels, min_size=3, exclude_edges=True)
    assert kept.max() == 1 and (kept == 1).sum() == 16
    assert measurements(labels)["touches_border"].tolist() == [True, False, False]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--channel", "2"], "--channel 2: the file has 2 channel(s)"),
        (["--channel", "RFP"], "no channel of that name (channel names: GFP, DAPI)"),
        ([], "2 channels (GFP, DAPI): give --channel"),
        (["--channel", "1", "--axes", "YXC"], "--axes YXC must keep Y and X where the file has them"),
        (["--channel", "1", "--axes", "CYXQ"], "--axes CYXQ does not describe its 3 axes"),
        (["--channel", "1", "--pixel-size", "0"], "--pixel-size must be a number of µm from"),
        (["--channel", "1", "--pixel-size", "1e154"], "--pixel-size must be a number of µm from"),
        (["--channel", "1", "--diameter", "-3"], "--diameter must be a positive size"),
        (["--channel", "1", "--diameter", "5um"], "needs the pixel size"),
    ],
)
def test_bad_microscopy_options_are_one_line_exit_2_and_write_nothing(
    tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    path = tmp_path / "two.ome.tif"
    image = nuclei()[:64, :64]
    tifffile.imwrite(path, np.stack([image, image]), metadata={"axes": "CYX", "Channel": {"Name": ["GFP", "DAPI"]}})
    out = tmp_path / "out"
    assert main(["predict", str(path), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()  # nothing half-written


def test_intensities_equal_regionprops() -> None:
    """scipy.ndimage's per-label statistics give regionprops' intensity_mean/min/max (and mean x area)."""
    from skimage.measure import regionprops_table

    rng = np.random.default_rng(0)
    labels = np.zeros((120, 120), np.int32)
    for k in range(1, 30):
        y, x = rng.integers(6, 114, 2)
        labels[y - 4 : y + 5, x - 3 : x + 4] = k  # later nuclei overlap earlier ones, as touching nuclei do
    image = rng.random((120, 120, 2)) * 1000
    table = measurements(labels, image)
    reference = regionprops_table(
        labels, image, properties=["label", "area", "intensity_mean", "intensity_min", "intensity_max"]
    )
    assert (table["label"] == reference["label"]).all()
    for c in range(2):
        for stat in ("mean", "min", "max"):
            assert np.allclose(table[f"{stat}_ch{c}"], reference[f"intensity_{stat}-{c}"])
        assert np.allclose(table[f"integrated_ch{c}"], reference[f"intensity_mean-{c}"] * reference["area"])


def test_shapes_equal_regionprops() -> None:
    """The shape columns are regionprops_table's: integers and centroids exactly, the moment-based
    ones to 1e-12 (orientation's symmetric cases too: squares, discs, crosses, lines, single
    pixels, where regionprops' own mu11 is 0); ellipses, nuclei cut by others and holes; no
    nuclei at all."""
    from skimage.draw import ellipse
    from skimage.measure import regionprops_table

    from attention_unet.io.measure import polygon_solidity, shape_table

    rng = np.random.default_rng(1)
    labels = np.zeros((200, 200), np.int32)
    for k in range(1, 40):
        y, x = rng.integers(12, 188, 2)
        rr, cc = ellipse(y, x, rng.uniform(1, 10), rng.uniform(1, 10), (200, 200), rng.uniform(-np.pi, np.pi))
        labels[rr, cc] = k
    labels[5:12, 5:12], labels[5, 20], labels[3:6, 30:39] = 41, 42, 43  # a square, a pixel, a line
    labels[30:40, 150:153], labels[33:36, 146:157] = 44, 44  # a cross
    labels[60:70, 5:15], labels[64:66, 9:11] = 45, 0  # a square with a hole
    names = ["label", "centroid", "bbox", "area", "perimeter", "equivalent_diameter_area", "axis_major_length"]
    names += ["axis_minor_length", "eccentricity", "orientation"]
    reference = regionprops_table(labels, properties=names, extra_properties=(polygon_solidity,))
    table = shape_table(labels)
    assert list(table)[:8] == ["label", "centroid_y", "centroid_x", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1", "area"]
    exact = {"label": "label", "centroid_y": "centroid-0", "centroid_x": "centroid-1", "bbox_y0": "bbox-0"}
    exact |= {"bbox_x1": "bbox-3", "area": "area", "perimeter": "perimeter", "solidity": "polygon_solidity"}
    for ours, theirs in exact.items():
        assert np.array_equal(table[ours], reference[theirs]), ours
    close = {"equivalent_diameter": "equivalent_diameter_area", "major_axis": "axis_major_length"}
    close |= {"minor_axis": "axis_minor_length", "eccentricity": "eccentricity", "orientation": "orientation"}
    for ours, theirs in close.items():
        assert np.allclose(table[ours], reference[theirs], rtol=1e-12, atol=1e-12), ours
    assert all(len(v) == 0 for v in shape_table(np.zeros((9, 9), np.int32)).values())


def test_inputs_are_files_folders_and_globs_each_file_once(tmp_path: Path) -> None:
    """Relative paths (which the outputs mirror) start below a folder or a glob's fixed part; a
    path or a glob that finds nothing is an error, as a typo must not pass for an empty batch."""
    from attention_unet.errors import InputError
    from attention_unet.io.images import find_inputs

    for rel in ("a/x.png", "a/b/y.tif", "c/z.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    root = str(tmp_path)
    found = list(find_inputs([f"{root}/a", f"{root}/c/*.png", f"{root}/a/x.png", f"{root}/**/*.tif"]))
    assert [(str(f.relative_to(tmp_path)), str(rel)) for f, rel in found] == [
        ("a/x.png", "x.png"),  # a folder's own files before its subfolders'
        ("a/b/y.tif", "b/y.tif"),
        ("c/z.png", "z.png"),
    ]
    with pytest.raises(InputError, match=r"\*\.jpg: no file matches"):
        list(find_inputs([f"{root}/a", f"{root}/*.jpg"]))
    with pytest.raises(InputError, match="nothere.png: no such file or folder"):
        list(find_inputs([f"{root}/nothere.png"]))


@pytest.mark.parametrize("compression", ["lzw", "jpeg", "jpeg2000", "packbits", "zstd", "deflate"])
def test_compressed_tiffs_read_whole_and_by_windows(tmp_path: Path, compression: str) -> None:
    """The compressions microscopes and slide scanners write (through imagecodecs; tifffile alone
    read none but zlib, and LZW TIFFs failed as 'list index out of range'): the lossless ones read
    back exactly, as a whole plane and as a block-wise window of a tiled file."""
    from attention_unet.inference.blockwise import open_lazy

    image = (nuclei() // 257).astype(np.uint8)  # JPEG takes 8-bit
    path = tmp_path / f"{compression}.tif"
    tifffile.imwrite(path, image, compression=compression, tile=(64, 64))
    (plane,) = open_image(path).planes()
    window = (lazy := open_lazy(path)).read(lazy.open(), 10, 150, 70, 200)[..., 0]
    assert plane.channels.shape[:2] == image.shape and window.shape == (140, 130)
    if compression not in ("jpeg", "jpeg2000"):  # lossy by default
        assert np.array_equal(plane.channels[..., 0], image) and np.array_equal(window, image[10:150, 70:200])
