"""The "Segment nuclei" dock widget: runs :class:`Segmenter` in napari's thread worker, so the viewer
stays responsive, and shows the result as layers and a measurements table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import Container, Label, ProgressBar, PushButton, Table

from ..errors import InputError
from .controls import OTHER, chosen_model, decoding_controls, input_controls, layer_pixel_size, segment_options
from .files import plain, write_csv

TABLE_COLUMNS = ("label", "area", "centroid_y", "centroid_x", "equivalent_diameter", "solidity")


class SegmentWidget(Container):
    """Pick an image layer and a model; "Segment" adds ``<image>_labels`` (and on request the
    probability and each attention gate's map) and fills the measurements table. Each control is
    an attribute by its name (:mod:`.controls`)."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        run_button = PushButton(text="Segment", name="run_button")
        super().__init__(
            widgets=[*input_controls(), *decoding_controls(), run_button,
                     ProgressBar(value=0, min=0, max=0, visible=False, label="working", name="progress"),
                     Label(value="", name="status"), Table(value=[], columns=list(TABLE_COLUMNS), name="table")]
        )  # fmt: skip
        run_button.changed.connect(self.run)
        self.model.changed.connect(lambda value: setattr(self.model_path, "visible", value == OTHER))
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
        channel = self.channel.value
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
            options = segment_options(self, axes, layer_pixel_size(layer))
        except InputError as exc:
            self.report(str(exc))
            return
        from napari.qt.threading import thread_worker

        model, engine = chosen_model(self), self.engine.value

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
        from ..segmenter import Segmenter

        key = (model, engine)
        if key not in self.segmenters:
            self.segmenters[key] = Segmenter(model, engine=engine)
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
        add_layers(self.viewer, layer, result, self.attention.value)
        table = result.measurements or {}
        n = len(table.get("label", []))
        self.table.value = {c: [plain(v) for v in table.get(c, [])] for c in TABLE_COLUMNS}  # a dict of columns
        path = str(self.csv.value) if self.csv.value and str(self.csv.value) not in ("", ".") else ""
        if path:
            write_csv(Path(path), table)
        self.report(f"{n} nuclei in {layer.name}" + (f"; table saved to {path}" if path else ""), error=False)


def add_layers(viewer: Any, layer: Any, result: Any, attention: bool) -> None:
    """``<image>_labels`` and, with ``attention``, the probability and each gate's map, on the image's
    own grid (a layer opened with its pixel size, or moved)."""
    place = {"scale": tuple(layer.scale[-2:]), "translate": tuple(layer.translate[-2:])}
    put(viewer, f"{layer.name}_labels", result.labels, "labels", **place)
    if attention:
        put(viewer, f"{layer.name}_probability", result.probability, "image", colormap="magma", **place)
        for k, gate in enumerate(result.attention, start=1):
            style = {"colormap": "inferno", "opacity": 0.6, "blending": "additive"}
            put(viewer, f"{layer.name}_attention{k}", gate, "image", **style, **place)


def put(viewer: Any, name: str, data: np.ndarray, kind: str, scale: tuple, translate: tuple, **style: Any) -> None:
    """Add a layer, or replace the data of the one of that name."""
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.data, layer.scale, layer.translate = data, scale, translate
    elif kind == "labels":
        viewer.add_labels(data, name=name, scale=scale, translate=translate)
    else:
        viewer.add_image(data, name=name, scale=scale, translate=translate, **style)
