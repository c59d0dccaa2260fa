"""The widget's controls, each named so the widget reads it as an attribute (``widget.model``), and
the :meth:`Segmenter.segment` options they stand for."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FileEdit,
    FloatSlider,
    FloatSpinBox,
    LineEdit,
    SpinBox,
    create_widget,
)

from ..settings import TTA_VIEWS

# the test-time augmentation choice: Segmenter.segment's (tta, tta_views); None keeps the model's own
TTA_CHOICES: dict[str, tuple[bool | None, int | None]] = {
    "model's setting": (None, None),
    "off": (False, None),
    **{f"{views} views": (True, views) for views in sorted(TTA_VIEWS)},
}


def input_controls() -> list[Any]:
    """What to segment with what: the image layer, the model, the channel and the nucleus size."""
    return [
        create_widget(annotation="napari.layers.Image", label="image", name="image"),
        LineEdit(
            value="pretrained",
            name="model",
            tooltip="'pretrained', a shipped model's name (attention-unet models), a model file, model folder or "
            "training run folder",
        ),
        SpinBox(
            value=-1,
            min=-1,
            max=64,
            name="channel",
            tooltip="the nucleus channel of a multi-channel layer (-1: none)",
        ),
        FloatSpinBox(
            value=0.0,
            min=0.0,
            max=1000.0,
            name="diameter",
            label="diameter (px)",
            tooltip="typical nucleus diameter; 0: the model's own scale",
        ),
    ]


def decoding_controls() -> list[Any]:
    """How to turn probabilities into nuclei, and what to show and save."""
    return [
        FloatSlider(value=0.5, min=0.05, max=0.95, step=0.05, name="threshold"),
        FloatSpinBox(
            value=-0.05,
            min=-0.05,
            max=0.99,
            step=0.05,
            name="min_confidence",
            label="weakest kept",
            tooltip="mean probability a nucleus needs to be kept; below 0: the model's own, 0: keep every one",
        ),
        FloatSpinBox(
            value=-0.5,
            min=-0.5,
            max=8.0,
            step=0.5,
            name="smoothing",
            label="smoothing (px)",
            tooltip="Gaussian sigma the image is smoothed by first; below 0: the model's rule, 0: none",
        ),
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


def segment_options(widget: Any, axes: str) -> dict[str, Any]:
    """The controls' values as :meth:`Segmenter.segment` keywords (a negative value: the model's own)."""
    return {
        "axes": axes,
        "channel": widget.channel.value if axes == "CYX" else None,
        "diameter": widget.diameter.value or None,
        "threshold": widget.threshold.value,
        "min_confidence": widget.min_confidence.value if widget.min_confidence.value >= 0 else None,
        "smoothing": widget.smoothing.value if widget.smoothing.value >= 0 else None,
        "tta": TTA_CHOICES[widget.tta.value][0],
        "tta_views": TTA_CHOICES[widget.tta.value][1],
        "attention": widget.attention.value,
        "measure": True,
    }
