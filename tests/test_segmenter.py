"""The Python API: array layouts in, labels and probabilities out, the same as the command line's."""

from pathlib import Path

import numpy as np
import pytest
import tifffile

from attention_unet import Segmenter
from attention_unet.cli import main
from attention_unet.errors import InputError
from attention_unet.segmenter import as_image

from .conftest import synthetic


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter.from_pretrained(tile=256)


def test_grey_rgb_and_channel_first_arrays_give_the_same_labels(segmenter: Segmenter) -> None:
    grey, _ = synthetic(1, (96, 120))
    expected = segmenter.segment(grey).labels
    assert expected.max() >= 1
    np.testing.assert_array_equal(segmenter.segment(np.dstack([grey] * 3)).labels, expected)
    two_channels = np.stack([np.zeros_like(grey), grey])  # C x H x W, nuclei in channel 1
    np.testing.assert_array_equal(segmenter.segment(two_channels, channel=1).labels, expected)
    np.testing.assert_array_equal(
        segmenter.segment(two_channels.transpose(1, 2, 0), axes="YXC", channel=1).labels, expected
    )


def test_the_api_and_the_command_agree(segmenter: Segmenter, tmp_path: Path) -> None:
    grey, _ = synthetic(2, (96, 120))
    tifffile.imwrite(tmp_path / "a.tif", grey)
    assert main(["predict", str(tmp_path / "a.tif"), "--out", str(tmp_path / "o"), "--tile", "256"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o" / "a_labels.tif"), segmenter.segment(grey).labels)


def test_attention_maps_and_diameter(segmenter: Segmenter) -> None:
    grey, _ = synthetic(3, (64, 64))
    result = segmenter.segment(grey, attention=True)
    assert len(result.attention) == 4 and all(a.shape == (64, 64) for a in result.attention)
    assert segmenter.segment(grey, diameter=segmenter.predictor.settings.target_diameter).labels.shape == (64, 64)


def test_min_confidence_keeps_more_or_fewer_nuclei(segmenter: Segmenter) -> None:
    """0 keeps every instance the watershed finds, the model's 0.85 these three clear disks, 0.999
    none of them (their mean probability is about 0.98)."""
    grey, _ = synthetic(4, (96, 120))
    every = segmenter.segment(grey, min_confidence=0).labels
    np.testing.assert_array_equal(segmenter.segment(grey).labels, every)
    assert every.max() == 3
    assert segmenter.segment(grey, min_confidence=0.999).labels.max() == 0
    with pytest.raises(InputError, match="min_confidence must be at least 0"):
        segmenter.segment(grey, min_confidence=-0.1)
    with pytest.raises(InputError, match="threshold must lie between 0 and 1, not 0"):
        segmenter.segment(grey, threshold=0)  # every pixel a nucleus: a mistake, not a request
    with pytest.raises(InputError, match="pixel_size must be a number of µm"):
        segmenter.segment(grey, measure=True, pixel_size=-1)


@pytest.mark.parametrize(
    ("array", "options", "message"),
    [
        (np.zeros((5, 6, 7)), {}, "cannot tell the axes"),
        (np.zeros((2, 3, 40, 50)), {}, "is not one plane .* plane by plane"),
        (np.zeros(40), {}, "is not one plane"),
        (np.zeros((40, 50, 2)), {}, "needs channel="),
        (np.zeros((2, 40, 50)), {"channel": 2}, "channel 2 does not exist"),
        (np.zeros((40, 50)), {"axes": "YXC"}, "do not describe"),
        (np.zeros((40, 50)), {"channel": 1}, "channel 1 does not exist: the image has 1 channel"),
    ],
)
def test_bad_layouts_are_one_clear_error(array: np.ndarray, options: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        as_image(array, **options)


def test_measurements_on_request(segmenter: Segmenter) -> None:
    channels = np.stack([np.zeros((64, 64), np.uint16), np.full((64, 64), 7, np.uint16)])
    channels[0, 20:30, 20:30] = 1000
    result = segmenter.segment(channels, channel=0, measure=True, pixel_size=0.5)
    assert result.measurements is not None and len(result.measurements["label"]) == result.labels.max() >= 1
    assert (result.measurements["mean_ch1"] == 7).all() and "area_um2" in result.measurements
    assert segmenter.segment(channels, channel=0).measurements is None


def test_setting_overrides_are_checked_in_one_place_and_name_the_parameter(tmp_path) -> None:
    """InferenceSettings.changed is every override's check: load_predictor, Predictor.with_settings
    and Segmenter.segment all refuse a bad value with the parameter's name, and an unknown name."""
    import pytest

    from attention_unet.errors import InputError
    from attention_unet.settings import InferenceSettings

    settings = InferenceSettings()
    assert settings.changed(tta=None, min_confidence=None) is settings
    assert settings.changed(tta_views=4, min_confidence=0.5) == InferenceSettings(tta_views=4, min_confidence=0.5)
    for bad, start in [({"min_confidence": 1.5}, "min_confidence must"), ({"tta_views": 3}, "tta_views must")]:
        with pytest.raises(InputError, match=f"^{start}") as caught:
            settings.changed(**bad)
        assert caught.value.parameter is None or caught.value.parameter == next(iter(bad))
    with pytest.raises(InputError, match="^tta must be true or false"):
        settings.changed(tta="yes")
    with pytest.raises(TypeError, match="unknown inference settings: nonsense"):
        settings.changed(nonsense=1)
