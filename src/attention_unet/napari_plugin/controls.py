"""The widget's controls, each named so the widget reads it as an attribute (``widget.model``), and
the :meth:`Segmenter.segment` options they stand for. A number box whose lowest value means "the
model's own setting" shows those words there, never a sentinel number (Qt's special value text)."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FileEdit,
    FloatSlider,
    FloatSpinBox,
    create_widget,
)

from ..errors import InputError
from ..model import zoo
from ..settings import TTA_VIEWS

AUTO = "auto (by image kind)"
OTHER = "a file or folder:"
MAX_CHANNEL = 64
DIAMETER_UNITS = ("px", "µm")
FINETUNED: list[str] = []  # models fine-tuned in this session (napari_plugin.finetune), offered in every list

# the test-time augmentation choice: Segmenter.segment's (tta, tta_views); None keeps the model's own
TTA_CHOICES: dict[str, tuple[bool | None, int | None]] = {
    "model's setting": (None, None),
    "off": (False, None),
    **{f"{views} views": (True, views) for views in sorted(TTA_VIEWS)},
}


def own(name: str, label: str, tooltip: str, span: tuple[float, float, float], text: str = "model's own") -> Any:
    """A number box from ``span`` (lowest, highest, step) that starts at its lowest value, which
    means the model's own setting: it shows ``text`` there (Qt's special value text), not the number."""
    lowest, highest, step = span
    box = FloatSpinBox(value=lowest, min=lowest, max=highest, step=step, name=name, label=label, tooltip=tooltip)
    box.native.setSpecialValueText(text)
    return box


def model_choices(others: bool = True) -> tuple[list[str], str]:
    """The shipped models' names, the models fine-tuned in this session (their folders) and, with
    ``others``, auto and a file or folder; and a tooltip of the shipped models' cards."""
    cards = zoo.entries()
    lines = [f"{e.name}: {e.modality}; weights {e.licence}" for e in cards.values()]
    extra = [AUTO, OTHER] if others else []
    if others:
        lines += [f"{AUTO}: each image to the model of its kind", f"{OTHER} a model file, model folder or training run"]
    return [*cards, *FINETUNED, *extra], "\n".join(lines)


def input_controls() -> list[Any]:
    """What to segment with what: the image layer, the model, the channel and the nucleus size."""
    tooltip = model_choices()[1]
    return [
        create_widget(annotation="napari.layers.Image", label="image", name="image"),
        ComboBox(choices=lambda _: model_choices()[0], value=zoo.DEFAULT, name="model", tooltip=tooltip),
        FileEdit(mode="r", value="", name="model_path", label="model file", visible=False),
        ComboBox(
            choices=[("all (grey or colour)", None), *((str(c), c) for c in range(MAX_CHANNEL + 1))],
            value=None,
            name="channel",
            tooltip="the nucleus channel of a multi-channel layer",
        ),
        own(
            "diameter",
            "diameter",
            "typical nucleus diameter, in the unit beside; lowest: the model measures it (auto scale)",
            (0.0, 1000.0, 1.0),
            "model's own (auto)",
        ),
        ComboBox(
            choices=list(DIAMETER_UNITS),
            value="px",
            name="diameter_unit",
            label="diameter unit",
            tooltip="µm: converted with the layer's pixel size (its scale, as a reader of the file set it)",
        ),
    ]


def decoding_controls() -> list[Any]:
    """How to turn probabilities into nuclei, and what to show and save."""
    return [
        FloatSlider(value=0.5, min=0.05, max=0.95, step=0.05, name="threshold"),
        own(
            "min_confidence",
            "weakest kept (mean probability)",
            "mean probability a nucleus needs to be kept; 0: keep every one",
            (-0.05, 0.99, 0.05),
        ),
        own("smoothing", "smoothing (px)", "Gaussian sigma the image is smoothed by first; 0: none", (-0.5, 8.0, 0.5)),
        ComboBox(
            choices=list(TTA_CHOICES),
            value="model's setting",
            name="tta",
            label="test-time augmentation",
            tooltip="average the network over flipped and turned views of the image",
        ),
        ComboBox(choices=["torch", "onnx"], value="torch", name="engine"),
        CheckBox(value=False, text="add probability and attention maps", name="attention"),
        FileEdit(mode="w", filter="*.csv", value="", name="csv", label="save table to"),
    ]


def chosen_model(widget: Any) -> str:
    """The model the widget names: a shipped name, "auto", or the file or folder given."""
    if widget.model.value == OTHER:
        return str(widget.model_path.value)
    return "auto" if widget.model.value == AUTO else widget.model.value


def layer_pixel_size(layer: Any) -> float | None:
    """µm per pixel of a layer: its scale in its units (napari's layer units), a scale without a unit
    read as µm (as microscopy readers set it); None when the layer has no pixel size (scale 1 px)."""
    scale, unit = float(layer.scale[-1]), getattr(layer, "units", None)
    if unit is not None and str(unit[-1]) not in ("pixel", "dimensionless"):
        return float((scale * unit[-1]).to("micrometer").magnitude)
    return None if scale == 1.0 else scale


def diameter_px(widget: Any, pixel_size: float | None) -> float | None:
    """The diameter control in pixels (None: the model measures it), converted from µm by the layer's
    pixel size, or an InputError when µm is asked of a layer without one."""
    value = widget.diameter.value or None
    if value is None or widget.diameter_unit.value == "px":
        return value
    if pixel_size is None:
        raise InputError(
            f"layer '{widget.image.value.name}' has no pixel size (its scale is 1): give the diameter in px, "
            "or set the layer's scale in µm per pixel"
        )
    return value / pixel_size


def segment_options(widget: Any, axes: str, pixel_size: float | None = None) -> dict[str, Any]:
    """The controls' values as :meth:`Segmenter.segment` keywords (a negative value: the model's own)."""
    return {
        "axes": axes,
        "channel": widget.channel.value if axes == "CYX" else None,
        "diameter": diameter_px(widget, pixel_size),
        "pixel_size": pixel_size,
        "threshold": widget.threshold.value,
        "min_confidence": widget.min_confidence.value if widget.min_confidence.value >= 0 else None,
        "smoothing": widget.smoothing.value if widget.smoothing.value >= 0 else None,
        "tta": TTA_CHOICES[widget.tta.value][0],
        "tta_views": TTA_CHOICES[widget.tta.value][1],
        "attention": widget.attention.value,
        "measure": True,
    }
