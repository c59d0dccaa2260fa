"""The napari plugin, headless under a virtual X server (xvfb-run, Mesa's software OpenGL) with
napari's own make_napari_viewer fixture: run by `make test-napari`, which installs the optional extra."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
if not os.environ.get("DISPLAY"):  # napari's canvas needs OpenGL, which Qt's offscreen platform lacks here
    pytest.skip("needs a display with OpenGL: `make test-napari` runs these under xvfb-run", allow_module_level=True)

import imageio.v3 as iio
import tifffile

from attention_unet.cli import main
from attention_unet.io.data import SAMPLE_DIR
from attention_unet.napari_plugin import SegmentWidget, get_labels_reader, sample_data

SAMPLE = SAMPLE_DIR / "images" / "05040e2e959c3f5632558fc9683fec88f0010026c555b499066346f67fdd0e13.png"


def segment(widget: SegmentWidget, qtbot) -> None:
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)


def test_the_widget_segments_like_the_command_line(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    image = iio.imread(SAMPLE)
    viewer.add_image(image, name="nuclei")
    widget = SegmentWidget(viewer)
    widget.csv.value = tmp_path / "table.csv"
    segment(widget, qtbot)
    labels = viewer.layers["nuclei_labels"].data
    assert (
        main(["predict", str(SAMPLE), "--model", "nuclei", "--out", str(tmp_path / "cli"), "--engine", "torch"]) == 0
    )  # the widget's model and engine
    cli = tifffile.imread(tmp_path / "cli" / f"{SAMPLE.stem}_labels.tif")
    assert labels.max() == cli.max() > 10
    assert widget.table.shape[0] == labels.max() and "nuclei in nuclei" in widget.status.value
    assert len((tmp_path / "table.csv").read_text().splitlines()) == labels.max() + 1


def test_results_lie_on_the_images_grid(make_napari_viewer, qtbot) -> None:
    """An image opened with its pixel size (a layer scale) or moved: the labels and maps on top of it."""
    viewer = make_napari_viewer()
    viewer.add_image(iio.imread(SAMPLE), name="nuclei", scale=(0.65, 0.65), translate=(10.0, -4.0))
    widget = SegmentWidget(viewer)
    widget.attention.value = True
    for _ in range(2):  # added, then replaced
        segment(widget, qtbot)
        for name in ("nuclei_labels", "nuclei_probability", "nuclei_attention1"):
            assert tuple(viewer.layers[name].scale) == (0.65, 0.65), name
            assert tuple(viewer.layers[name].translate) == (10.0, -4.0), name


STAINED = SAMPLE_DIR / "images" / "8f27ebc74164eddfe989a98a754dcf5a9c85ef599a1321de24bcf097df1814ca.png"


def widget_and_command_line(
    make_napari_viewer, qtbot, tmp_path: Path, control: str, value: float, option: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sample's H&E image segmented by the widget as it opens, then with ``control`` set to
    ``value``, and by `predict` with ``option`` ``value``: the three label images."""
    viewer = make_napari_viewer()
    viewer.add_image(iio.imread(STAINED), name="tissue")
    widget = SegmentWidget(viewer)
    segment(widget, qtbot)
    default = viewer.layers["tissue_labels"].data.copy()
    getattr(widget, control).value = value
    segment(widget, qtbot)
    argv = ["predict", str(STAINED), "--model", "nuclei", "--out", str(tmp_path / "cli"), "--engine", "torch"]
    argv += [option, str(value)]
    assert main(argv) == 0
    cli = tifffile.imread(tmp_path / "cli" / f"{STAINED.stem}_labels.tif")
    return default, viewer.layers["tissue_labels"].data, cli


def test_weakest_kept_is_the_command_lines_min_confidence(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    """On an H&E image of the sample, where the shipped model's 0.85 drops weak nuclei (9 of 22 kept),
    "weakest kept" 0 keeps every one, as `predict --min-confidence 0` does."""
    shipped, widget, cli = widget_and_command_line(
        make_napari_viewer, qtbot, tmp_path, "min_confidence", 0.0, "--min-confidence"
    )
    assert widget.max() == cli.max() > shipped.max()


def test_smoothing_is_the_command_lines(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    """On a smooth H&E image of the sample (which the shipped rule leaves alone), "smoothing (px)" 2
    gives `predict --smoothing 2`'s nuclei, not the default's."""
    default, smoothed, cli = widget_and_command_line(
        make_napari_viewer, qtbot, tmp_path, "smoothing", 2.0, "--smoothing"
    )
    assert np.array_equal(smoothed > 0, cli > 0) and smoothed.max() == cli.max()
    assert not np.array_equal(smoothed > 0, default > 0)


def test_attention_layers_appear_when_asked(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    viewer.add_image(iio.imread(SAMPLE), name="nuclei")
    widget = SegmentWidget(viewer)
    widget.attention.value = True
    segment(widget, qtbot)
    names = [layer.name for layer in viewer.layers]
    assert "nuclei_probability" in names and "nuclei_attention1" in names and "nuclei_attention2" in names


def test_problems_are_messages_and_leave_the_layers_alone(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    widget.run()  # no image layer
    assert "no image layer" in widget.status.value and widget.worker is None
    viewer.add_image(np.zeros((5, 64, 64), np.uint16), name="stack")
    widget.image.reset_choices()
    widget.run()
    assert "a 2-D image is expected" in widget.status.value
    viewer.layers.clear()
    viewer.add_image(iio.imread(SAMPLE), name="nuclei")
    widget.image.reset_choices()
    (tmp_path / "broken.safetensors").write_bytes(b"not a model")
    widget.model.value = "a file or folder:"
    widget.model_path.value = tmp_path / "broken.safetensors"
    segment(widget, qtbot)
    assert "not a readable safetensors model file" in widget.status.value
    assert [layer.name for layer in viewer.layers] == ["nuclei"]


def test_sample_data_and_labels_reader(tmp_path: Path) -> None:
    layers = sample_data()
    assert len(layers) == 2 and all(kind == "image" and data.ndim in (2, 3) for data, _, kind in layers)
    tifffile.imwrite(tmp_path / "x_labels.tif", np.arange(12, dtype=np.uint16).reshape(3, 4))
    reader = get_labels_reader(str(tmp_path / "x_labels.tif"))
    assert reader is not None and reader(str(tmp_path / "x_labels.tif"))[0][2] == "labels"
    assert get_labels_reader(str(tmp_path / "x.png")) is None
    # a file of that name that holds no labels is left to napari's other readers
    tifffile.imwrite(tmp_path / "float_labels.tif", np.random.default_rng(0).random((3, 4), dtype=np.float32))
    (tmp_path / "empty_labels.tif").write_bytes(b"")
    assert get_labels_reader(str(tmp_path / "float_labels.tif")) is None
    assert get_labels_reader(str(tmp_path / "empty_labels.tif")) is None
    assert get_labels_reader(str(tmp_path / "missing_labels.tif")) is None


def test_the_manifest_is_valid() -> None:
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("attention-unet")
    assert manifest.name == "attention-unet" and manifest.contributions.widgets[0].display_name == "Segment nuclei"


def test_the_labels_reader_applies_the_pixel_limit(tmp_path: Path, monkeypatch) -> None:
    """The *_labels.tif reader decoded whatever a file declared (a 7 MB file asked for 6.7 GiB)."""
    from attention_unet.errors import InputError

    tifffile.imwrite(tmp_path / "big_labels.tif", np.zeros((3, 40, 50), np.uint16))
    monkeypatch.setenv("ATTENTION_UNET_MAX_PIXELS", "5000")
    reader = get_labels_reader(str(tmp_path / "big_labels.tif"))
    with pytest.raises(InputError, match="6,000 label pixels .* above the limit of 5,000"):
        reader(str(tmp_path / "big_labels.tif"))
    monkeypatch.setenv("ATTENTION_UNET_MAX_PIXELS", "6000")
    assert reader(str(tmp_path / "big_labels.tif"))[0][0].shape == (3, 40, 50)


def test_controls_say_what_their_values_mean(make_napari_viewer) -> None:
    """No sentinel numbers: the lowest value of a box that means "the model's own" shows those
    words; the model list is the zoo's, with each card as a tooltip line."""
    from attention_unet.model import zoo

    widget = SegmentWidget(make_napari_viewer())
    for name, words in (
        ("diameter", "model's own (auto)"),
        ("min_confidence", "model's own"),
        ("smoothing", "model's own"),
    ):
        box = getattr(widget, name).native
        assert box.value() == box.minimum() and box.text() == words, name
    assert widget.channel.value is None and widget.channel.native.currentText() == "all (grey or colour)"
    assert list(zoo.entries()) == list(widget.model.choices[: len(zoo.entries())])
    assert widget.model.value == zoo.DEFAULT and "CC BY-NC-SA 4.0" in widget.model.tooltip
    from attention_unet.napari_plugin.controls import AUTO, OTHER, chosen_model

    widget.model.value = AUTO
    assert chosen_model(widget) == "auto"
    widget.model.value, widget.model_path.value = OTHER, Path("/data/runs/mine")
    assert chosen_model(widget) == str(Path("/data/runs/mine"))


def test_correct_then_fine_tune_then_segment_again(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    """The whole loop, headless: segment a sample image, correct its labels (one nucleus removed,
    one painted), fine-tune one short epoch on it and a second pair, and the new model is saved, listed in the Segment
    widget and segments the image; a cancelled run leaves no model folder."""
    from attention_unet.napari_plugin import FineTuneWidget

    viewer = make_napari_viewer()
    viewer.add_image(iio.imread(SAMPLE), name="nuclei")
    segment_widget = SegmentWidget(viewer)
    segment(segment_widget, qtbot)
    labels = viewer.layers["nuclei_labels"]
    corrected = labels.data.copy()
    corrected[corrected == 1] = 0
    corrected[10:20, 10:20] = corrected.max() + 1
    labels.data = corrected
    viewer.add_image(iio.imread(SAMPLE)[::-1], name="flipped")  # a second pair: the image upside down
    viewer.add_labels(corrected[::-1].copy(), name="flipped_labels")
    widget = FineTuneWidget(viewer)
    widget.image.value, widget.labels_layer.value = viewer.layers["flipped"], viewer.layers["flipped_labels"]
    widget.add_pair()
    widget.image.value, widget.labels_layer.value = viewer.layers["nuclei"], labels
    widget.epochs.value, widget.minutes.value, widget.out.value = 1, 3.0, tmp_path / "mine"
    assert widget.pair_list.value == "pairs: flipped + flipped_labels" and len(widget.inputs()[0]) == 2
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)
    assert (tmp_path / "mine" / "model" / "model.safetensors").is_file(), widget.status.value
    assert "epoch 1: val F1" in widget.status.value or "model saved" in widget.status.value
    segment_widget.reset_choices()
    assert str(tmp_path / "mine") in segment_widget.model.choices
    assert viewer.layers["nuclei_labels"].data.max() > 5  # segmented again with the new model
    widget.out.value = tmp_path / "cancelled"
    widget.run()
    widget.stop()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)
    assert "cancelled" in widget.status.value and not (tmp_path / "cancelled").exists()


def test_fine_tune_says_what_is_missing(make_napari_viewer, tmp_path: Path) -> None:
    from attention_unet.napari_plugin import FineTuneWidget

    viewer = make_napari_viewer()
    widget = FineTuneWidget(viewer)
    widget.run()
    assert "needs an image layer and a Labels layer" in widget.status.value
    viewer.add_image(np.zeros((64, 64), np.uint8), name="im")
    viewer.add_labels(np.zeros((32, 32), np.int32), name="lab")
    widget.reset_choices()
    widget.run()
    assert "do not lie on image" in widget.status.value
    viewer.layers["lab"].data = np.zeros((64, 64), np.int32)
    widget.run()
    assert "hold no nucleus" in widget.status.value
    widget.add_pair()
    assert "hold no nucleus" in widget.status.value and widget.pairs == []


def test_a_diameter_in_micrometres_uses_the_layers_pixel_size(make_napari_viewer) -> None:
    from attention_unet.napari_plugin.controls import layer_pixel_size, segment_options

    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    plain_layer = viewer.add_image(np.zeros((32, 32), np.uint8), name="plain")
    scaled = viewer.add_image(np.zeros((32, 32), np.uint8), name="scaled", scale=(0.5, 0.5))
    in_nm = viewer.add_image(np.zeros((32, 32), np.uint8), name="nm", scale=(250, 250), units=("nm", "nm"))
    assert (layer_pixel_size(plain_layer), layer_pixel_size(scaled), layer_pixel_size(in_nm)) == (None, 0.5, 0.25)
    widget.diameter.value, widget.diameter_unit.value = 10.0, "µm"
    options = segment_options(widget, "YX", 0.25)
    assert options["diameter"] == 40.0 and options["pixel_size"] == 0.25
    widget.reset_choices()
    widget.image.value = plain_layer
    widget.run()
    assert "has no pixel size" in widget.status.value and widget.worker is None
    widget.diameter_unit.value = "px"
    assert segment_options(widget, "YX", None)["diameter"] == 10.0


def test_napari_starts_without_the_pyqt5_deprecation_toast(make_napari_viewer, qtbot) -> None:
    """napari deprecates its PyQt5 support with a toast when its window first shows; the extra
    installs a Qt6 binding, so the window shows without it."""
    import qtpy
    from napari.utils.notifications import notification_manager

    before = len(notification_manager.records)
    make_napari_viewer(show=True)
    qtbot.wait(50)
    assert qtpy.API_NAME in {"PyQt6", "PySide6"}
    assert not [n for n in notification_manager.records[before:] if "PyQt5" in str(n.message)]
