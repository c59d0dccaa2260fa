"""The Python API: one object that segments nuclei in an array, as Cellpose's ``model.eval`` and
StarDist's ``predict_instances`` do, with no argparse anywhere below the command line.

>>> import imageio.v3 as iio
>>> from attention_unet import Segmenter
>>> from attention_unet.io.data import SAMPLE_DIR
>>> image = iio.imread(SAMPLE_DIR / "images" / "05040e2e959c3f5632558fc9683fec88f0010026c555b499066346f67fdd0e13.png")
>>> result = Segmenter.from_pretrained().segment(image)  # RGBA PNG: alpha is dropped
>>> result.labels.shape == result.probability.shape == image.shape[:2], int(result.labels.max()) > 10
(True, True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .inference.engine import load_predictor
from .inference.pipeline import Predictor, segment_image
from .io import data, limits
from .io.images import check_pixel_size
from .settings import check_threshold


@dataclass
class Segmentation:
    """What :meth:`Segmenter.segment` returns: instance labels (0 = background), the foreground
    probability, and each attention gate's coefficient map when asked for (coarsest gate first)."""

    labels: np.ndarray  # H x W int32
    probability: np.ndarray  # H x W float32
    attention: list[np.ndarray] = field(default_factory=list)  # H x W float32 each
    measurements: dict[str, np.ndarray] | None = (
        None  # one entry per column, one value per nucleus (segment(measure=True))
    )


def as_image(image: np.ndarray, *, axes: str | None = None, channel: int | None = None) -> np.ndarray:
    """An H x W x 3 image from H x W, H x W x C or C x H x W arrays.

    ``axes`` names the layout ("YX", "YXC" or "CYX"); without it a 3-D array with at most 4 entries
    on one end and more on the other is read that way. ``channel`` picks the nucleus channel;
    without it grey and RGB(A) are used as they are, and other channel counts need it.

    >>> as_image(np.zeros((2, 40, 50)), channel=1).shape
    (40, 50, 3)
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise InputError(
            f"an array of shape {image.shape} is not one plane (YX, YXC or CYX): segment a stack plane by plane"
        )
    if axes is None:
        if image.ndim == 2:
            axes = "YX"
        elif image.ndim == 3 and image.shape[2] <= 4 < image.shape[0]:
            axes = "YXC"
        elif image.ndim == 3 and image.shape[0] <= 4 < image.shape[2]:
            axes = "CYX"
        else:
            raise InputError(f"cannot tell the axes of an array of shape {image.shape}: give axes='YXC' or 'CYX'")
    axes = axes.upper()
    if sorted(axes) not in (sorted("YX"), sorted("YXC")) or len(axes) != image.ndim:
        raise InputError(f"axes '{axes}' do not describe an array of shape {image.shape} (use YX, YXC or CYX)")
    # the pixel limit of every other way in: inference holds several float copies of the plane
    limits.check_pixels(image.shape[axes.index("Y")], image.shape[axes.index("X")], "image")
    if axes == "YX":
        if channel not in (None, 0):
            raise InputError(f"channel {channel} does not exist: the image has 1 channel")
        return data.to_rgb(image)
    image = np.moveaxis(image, axes.index("C"), 2)
    image = np.moveaxis(image, 0, 1) if axes.index("X") < axes.index("Y") else image
    if channel is not None:
        if not 0 <= channel < image.shape[2]:
            raise InputError(f"channel {channel} does not exist: the image has {image.shape[2]} channel(s)")
        return data.to_rgb(image[:, :, channel])
    if image.shape[2] not in (1, 3, 4):
        raise InputError(f"an image with {image.shape[2]} channels needs channel= (which one holds the nuclei)")
    return data.to_rgb(image)


def as_channels(image: np.ndarray, *, axes: str | None = None) -> np.ndarray:
    """H x W x C, every channel of an array as :func:`as_image` reads its layout.

    >>> as_channels(np.zeros((2, 40, 50))).shape, as_channels(np.zeros((40, 50))).shape
    ((40, 50, 2), (40, 50, 1))
    """
    image = np.asarray(image)
    if image.ndim == 2:
        return image[..., None]
    layout = axes.upper() if axes else ("CYX" if image.shape[0] <= 4 < image.shape[2] else "YXC")
    return np.moveaxis(image, layout.index("C"), 2) if layout != "YXC" else image


class Segmenter:
    """A loaded model with its inference settings.

    Args:
        model: a model file, model folder, training run folder or ``.onnx`` file; None for the shipped model.
        device: torch device ("cpu", "cuda", "mps").
        engine: "auto" (as ``predict``: the shipped model's int8 ONNX on a CPU, else torch),
            "torch", or "onnx" to run an fp32 ONNX export on ONNX Runtime.
        tile: tile size of sliding-window inference.
        batch_size: tiles per forward pass (default: 1 on a CPU, 4 elsewhere).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "cpu",
        engine: str = "auto",
        tile: int = 512,
        batch_size: int | None = None,
    ) -> None:
        self._options = {"device": device, "engine": engine, "tile": tile, "batch_size": batch_size}
        self.model = model
        self.predictor = load_predictor(model, **self._options)
        self._with_attention: Predictor | None = None

    @classmethod
    def from_pretrained(cls, name: str | None = None, **options: object) -> Segmenter:
        """A shipped model by name (``attention-unet models``; default: 'nuclei')."""
        return cls(name, **options)  # type: ignore[arg-type]

    def segment(
        self,
        image: np.ndarray,
        *,
        axes: str | None = None,
        channel: int | None = None,
        diameter: float | None = None,
        threshold: float = 0.5,
        tta: bool | None = None,
        tta_views: int | None = None,
        attention: bool = False,
        measure: bool = False,
        pixel_size: float | None = None,
        min_confidence: float | None = None,
        smoothing: float | None = None,
    ) -> Segmentation:
        """Segment the nuclei of one 2-D image (see :func:`as_image` for ``axes`` and ``channel``).

        ``diameter`` (pixels) rescales nuclei to the size the model learnt, instead of the model's
        own scale setting; ``tta`` averages over flipped and turned views, ``tta_views`` of them (2, 4 or 8;
        default: the model's settings); ``min_confidence`` replaces the model's weakest instance
        kept (mean foreground probability; 0 keeps every one); ``smoothing`` smooths the image by
        this Gaussian sigma (0: none) instead of the model's rule for sharp stained tissue;
        ``attention`` also returns each gate's coefficient map (torch engine only); ``measure`` the
        per-nucleus table (:func:`measure.measurements`, intensities in every channel of the array
        as given, µm too with ``pixel_size``)."""
        check_threshold(threshold, "threshold")
        check_pixel_size(pixel_size, "pixel_size")
        array = as_image(image, axes=axes, channel=channel)
        predictor = self.predictor.for_image(array)
        if attention:
            self._with_attention = self._with_attention or load_predictor(self.model, attention=True, **self._options)
            predictor = self._with_attention.for_image(array)
        predictor = predictor.with_settings(tta=tta, tta_views=tta_views, min_confidence=min_confidence)
        if diameter is not None:
            predictor = predictor.for_diameter(diameter)
        if smoothing is not None:
            predictor = dataclasses.replace(predictor, smoothing=smoothing)
        probs, gates, labels, _ = segment_image(predictor, array, threshold)
        table = None
        if measure:
            from .io.measure import measurements

            channels = as_channels(image, axes=axes)
            table = measurements(labels, channels, pixel_size=pixel_size)
        return Segmentation(labels, probs[0], gates, table)
