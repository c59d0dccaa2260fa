"""The napari plugin (npe2 manifest ``napari.yaml``): a "Segment nuclei" dock widget, the embedded
sample as sample data, and a reader that opens ``<name>_labels.tif`` as a Labels layer.

The widget runs :class:`Segmenter` in napari's thread worker, so the viewer stays responsive; any
problem (no image layer, a stack where a plane is expected, a broken model file) is a message in
the widget and a napari notification, never a traceback dialog, and the layers stay as they were.
Install with ``pip install "attention-unet[napari]"``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    Table,
    create_widget,
)

from .data import SAMPLE_DIR
from .errors import InputError
from .settings import TTA_VIEWS

TABLE_COLUMNS = ("label", "area", "centroid_y", "centroid_x", "equivalent_diameter", "solidity")
# the test-time augmentation choice: Segmenter.segment's (tta, tta_views); None keeps the model's own
TTA_CHOICES: dict[str, tuple[bool | None, int | None]] = {
    "model's setting": (None, None),
    "off": (False, None),
    **{f"{views} views": (True, views) for views in sorted(TTA_VIEWS)},
}


class SegmentWidget(Container):
    """Pick an image layer and a model; "Segment" adds ``<image>_labels`` (and on request the
    probability and each attention gate's map) and fills the measurements table."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.image = create_widget(annotation="napari.layers.Image", label="image")
        self.model = LineEdit(
            value="pretrained", label="model", tooltip="'pretrained', a model file, model folder or training run folder"
        )
        self.channel = SpinBox(
            value=-1, min=-1, max=64, label="channel", tooltip="the nucleus channel of a multi-channel layer (-1: none)"
        )
        self.diameter = FloatSpinBox(
            value=0.0,
            min=0.0,
            max=1000.0,
            label="diameter (px)",
            tooltip="typical nucleus diameter; 0: the model's own scale",
        )
        self.threshold = FloatSlider(value=0.5, min=0.05, max=0.95, step=0.05, label="threshold")
        self.min_confidence = FloatSpinBox(
            value=-0.05,
            min=-0.05,
            max=0.99,
            step=0.05,
            label="weakest kept",
            tooltip="mean probability a nucleus needs to be kept; below 0: the model's own (shipped: 0.85), "
            "0: keep every one",
        )
        self.smoothing = FloatSpinBox(
            value=-0.5,
            min=-0.5,
            max=8.0,
            step=0.5,
            label="smoothing (px)",
            tooltip="Gaussian sigma the image is smoothed by first; below 0: the model's rule (shipped: "
            "sharp stained tissue, 1 px), 0: none",
        )
        self.tta = ComboBox(
            choices=list(TTA_CHOICES),
            value="model's setting",
            label="test-time augmentation",
            tooltip="average the network over flipped and turned views of the image",
        )
        self.engine = ComboBox(choices=["torch", "onnx"], value="torch", label="engine")
        self.attention = CheckBox(value=False, text="add probability and attention maps")
        self.csv = FileEdit(mode="w", filter="*.csv", value="", label="save table to")
        self.run_button = PushButton(text="Segment")
        self.progress = ProgressBar(value=0, min=0, max=0, visible=False, label="working")
        self.status = Label(value="")
        self.table = Table(value=[], columns=list(TABLE_COLUMNS))
        super().__init__(
            widgets=[self.image, self.model, self.channel, self.diameter, self.threshold, self.min_confidence,
                     self.smoothing, self.tta, self.engine, self.attention, self.csv, self.run_button, self.progress,
                     self.status, self.table]
        )  # fmt: skip
        self.run_button.changed.connect(self.run)
        self.worker: Any = None
        self.segmenters: dict[tuple[str, str], Any] = {}

    def report(self, message: str, error: bool = True) -> None:
        """A message in the widget, and as a napari notification when it is an error."""
        self.status.value = message
        if error:
            from napari.utils.notifications import show_error

            show_error(message)

    def inputs(self) -> tuple[Any, np.ndarray, str | None]:
        """(the layer, the 2-D image to segment, axes) or an InputError saying what is wrong."""
        layer = self.image.value
        if layer is None:
            raise InputError(
                "no image layer: open an image first (File > Open, or File > Open Sample > attention-unet)"
            )
        array = np.asarray(layer.data)
        channel = self.channel.value if self.channel.value >= 0 else None
        if layer.rgb:
            return layer, array, "YXC"
        if array.ndim == 2:
            return layer, array, "YX"
        if array.ndim == 3 and channel is not None:
            if not channel < array.shape[0]:
                raise InputError(f"channel {channel} does not exist: layer '{layer.name}' has {array.shape[0]} planes")
            return layer, array, "CYX"
        raise InputError(
            f"layer '{layer.name}' has shape {array.shape}: a 2-D image is expected (pick its nucleus channel, "
            "or split the stack into planes: Layers > Split stack)"
        )

    def run(self) -> None:
        """Start segmenting in a worker thread (one at a time)."""
        if self.worker is not None:
            return
        try:
            layer, array, axes = self.inputs()
        except InputError as exc:
            self.report(str(exc))
            return
        from napari.qt.threading import thread_worker

        options = {
            "axes": axes,
            "channel": self.channel.value if axes == "CYX" else None,
            "diameter": self.diameter.value or None,
            "threshold": self.threshold.value,
            "min_confidence": self.min_confidence.value if self.min_confidence.value >= 0 else None,
            "smoothing": self.smoothing.value if self.smoothing.value >= 0 else None,
            "tta": TTA_CHOICES[self.tta.value][0],
            "tta_views": TTA_CHOICES[self.tta.value][1],
            "attention": self.attention.value,
            "measure": True,
        }
        model, engine = self.model.value.strip() or "pretrained", self.engine.value

        @thread_worker
        def work() -> Any:
            try:
                return self.segmenter(model, engine).segment(array, **options)
            except Exception as exc:  # noqa: BLE001 - any failure is a message in the viewer, never a traceback dialog
                # as text: superqt's worker would raise a returned exception instance
                return str(exc) if isinstance(exc, (InputError, FileNotFoundError)) else f"{type(exc).__name__}: {exc}"

        self.worker = work()
        self.worker.returned.connect(lambda result: self.show(layer, result))
        self.worker.finished.connect(self.done)
        self.progress.visible, self.run_button.enabled = True, False
        self.status.value = f"segmenting {layer.name} ..."
        self.worker.start()

    def segmenter(self, model: str, engine: str) -> Any:
        """A Segmenter per (model, engine), loaded once."""
        from .segmenter import Segmenter

        key = (model, engine)
        if key not in self.segmenters:
            self.segmenters[key] = Segmenter(None if model == "pretrained" else model, engine=engine)
        return self.segmenters[key]

    def done(self) -> None:
        self.worker = None
        self.progress.visible, self.run_button.enabled = False, True

    def show(self, layer: Any, result: Any) -> None:
        """The result as layers (replacing those of an earlier run on the same image) and the table;
        or, when segmenting failed, the reason."""
        if isinstance(result, str):
            self.report(f"could not segment {layer.name}: {result}")
            return
        # on the image's own grid: a layer opened with its pixel size (scale) or moved (translate)
        place = {"scale": tuple(layer.scale[-2:]), "translate": tuple(layer.translate[-2:])}
        self.put(f"{layer.name}_labels", result.labels, "labels", **place)
        if self.attention.value:
            self.put(f"{layer.name}_probability", result.probability, "image", colormap="magma", **place)
            for k, gate in enumerate(result.attention, start=1):
                self.put(
                    f"{layer.name}_attention{k}",
                    gate,
                    "image",
                    colormap="inferno",
                    opacity=0.6,
                    blending="additive",
                    **place,
                )
        table = result.measurements or {}
        n = len(table.get("label", []))
        self.table.value = {c: [_plain(v) for v in table.get(c, [])] for c in TABLE_COLUMNS}  # a dict of columns
        path = str(self.csv.value) if self.csv.value and str(self.csv.value) not in ("", ".") else ""
        if path:
            write_csv(Path(path), table)
        self.report(f"{n} nuclei in {layer.name}" + (f"; table saved to {path}" if path else ""), error=False)

    def put(self, name: str, data: np.ndarray, kind: str, scale: tuple, translate: tuple, **style: Any) -> None:
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data, layer.scale, layer.translate = data, scale, translate
        elif kind == "labels":
            self.viewer.add_labels(data, name=name, scale=scale, translate=translate)
        else:
            self.viewer.add_image(data, name=name, scale=scale, translate=translate, **style)


def _plain(value: Any) -> Any:
    return round(float(value), 3) if isinstance(value, (float, np.floating)) else int(value)


def write_csv(path: Path, table: dict[str, np.ndarray]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(table)
        writer.writerows(zip(*table.values()))


def sample_data() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Two of the embedded DSB-2018 sample images (fluorescence and stained tissue)."""
    import imageio.v3 as iio

    images = sorted((SAMPLE_DIR / "images").glob("*.png"))
    return [
        (
            iio.imread(path)[..., :3] if iio.imread(path).ndim == 3 else iio.imread(path),
            {"name": path.stem[:12]},
            "image",
        )
        for path in images[:2]
    ]


def get_labels_reader(path: str | list[str]) -> Any:
    """A reader for ``<name>_labels.tif`` (what predict writes), None for anything else, including a
    file of that name that holds no labels (not a TIFF, or not integers: napari then tries its other
    readers instead of failing in this one). Read on the pixel grid (no scale), as napari's own
    TIFF reader opens the image beside it."""
    if isinstance(path, list) or not str(path).endswith("_labels.tif"):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            integers = np.issubdtype(tif.series[0].dtype, np.integer)
            shape = tif.series[0].shape
    except Exception:  # noqa: BLE001 - tifffile raises many types for what is no TIFF
        return None
    if not integers:
        return None

    def read(path: str) -> list[tuple[np.ndarray, dict[str, Any], str]]:
        import math

        import tifffile

        from .limits import max_pixels

        if math.prod(shape) > max_pixels():  # before decoding: a small file may declare gigabytes
            raise InputError(
                f"{path}: {math.prod(shape):,} label pixels ({' x '.join(map(str, shape))}) is above the limit of "
                f"{max_pixels():,} (ATTENTION_UNET_MAX_PIXELS)"
            )
        return [(tifffile.imread(path), {"name": Path(path).stem}, "labels")]

    return read
