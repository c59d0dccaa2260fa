"""The network: shapes on odd sizes, presets, gates, the coarse-grid decoder convolution, parameter counts,
save/load."""

import dataclasses
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_unet import AttentionUNet, ModelConfig, load_model
from attention_unet.model import PRESETS, count_parameters, read_model_info, save_model, upsample_conv
from attention_unet.model import network as model_module
from attention_unet.model.network import DecoderBlock, upsample


@pytest.mark.parametrize("size", [(16, 16), (37, 53), (64, 9), (5, 7), (100, 128)])
@pytest.mark.parametrize("gate", ["channel", "scalar"])
def test_any_size_gives_logits_of_the_same_size(size: tuple[int, int], gate: str) -> None:
    model = AttentionUNet(ModelConfig(width=4, depth=3, gate=gate)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 1, *size)


@pytest.mark.parametrize(("preset", "params"), [("seed", 8_132_033), ("medium", 2_035_425), ("small", 510_065)])
def test_preset_parameter_counts_are_pinned(preset: str, params: int) -> None:
    assert count_parameters(AttentionUNet(PRESETS[preset])) == params


def test_gate_kinds_and_plain_unet_differ_only_in_the_gates() -> None:
    seed = PRESETS["seed"]
    assert count_parameters(AttentionUNet(dataclasses.replace(seed, gate="scalar"))) == 8_046_020
    plain = AttentionUNet(dataclasses.replace(seed, attention=False))
    assert count_parameters(plain) == 7_785_729
    assert all(d.gate is None for d in plain.decoders)


def test_seed_preset_has_the_reports_widths() -> None:
    model = AttentionUNet(PRESETS["seed"])
    assert [e[0].out_channels for e in model.encoders] == [64, 128, 256]
    assert model.bridge[0].out_channels == 512
    assert ModelConfig() == PRESETS["seed"]


@pytest.mark.parametrize(("gate", "channels"), [("channel", [32, 16, 8]), ("scalar", [1, 1, 1])])
def test_attention_coefficients_are_in_unit_interval_and_cover_the_input(gate: str, channels: list[int]) -> None:
    model = AttentionUNet(ModelConfig(width=8, depth=3, gate=gate)).eval()
    with torch.no_grad():
        logits, maps = model.forward_with_attention(torch.randn(1, 3, 37, 50))
    assert logits.shape == (1, 1, 37, 50)
    assert [m.shape[1] for m in maps] == channels
    assert [tuple(m.shape[-2:]) for m in maps] == [(10, 13), (19, 25), (37, 50)]
    assert all(float(m.min()) >= 0 and float(m.max()) <= 1 for m in maps)


def test_forward_with_attention_matches_forward() -> None:
    model = AttentionUNet(ModelConfig(width=4)).eval()
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_with_attention(x)[0])


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="gate"):
        ModelConfig(gate="spatial")


def test_save_load_round_trip(tmp_path) -> None:
    model = AttentionUNet(ModelConfig(width=4, depth=2, gate="scalar")).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p)
    save_model(model, tmp_path / "m", {"train": {"norm": "percentile"}})
    assert (tmp_path / "m" / "config.json").is_file()
    loaded = load_model(tmp_path / "m")
    assert loaded.config == model.config
    assert read_model_info(tmp_path / "m")["train"]["norm"] == "percentile"
    x = torch.randn(1, 3, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_load_model_names_a_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_model(tmp_path)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(height=st.integers(1, 9), width=st.integers(1, 9), channels_last=st.booleans())
def test_upsample_conv_is_the_convolution_of_the_upsampled_input(height: int, width: int, channels_last: bool) -> None:
    """The coarse-grid route (forced on for few channels) gives the same values and gradients as
    convolving the upsampled tensor, edges included."""
    generator = torch.Generator().manual_seed(height * 10 + width)
    x = torch.randn(2, 5, height, width, dtype=torch.float64, generator=generator)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    weight = torch.randn(3, 5, 3, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    with mock.patch.object(model_module, "coarse_pays", lambda *size: True):
        got = upsample_conv(x, weight)
    expected = F.conv2d(upsample(x), weight, padding=1)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    grad = torch.randn_like(expected)
    for a, b in zip(torch.autograd.grad(got, (x, weight), grad), torch.autograd.grad(expected, (x, weight), grad)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_decoder_equals_the_reports_upsample_gate_concatenate_convolve() -> None:
    block = DecoderBlock(8, 4, attention=True, scalar=False).double().train()
    x, skip = torch.randn(2, 8, 5, 6, dtype=torch.float64), torch.randn(2, 4, 10, 12, dtype=torch.float64)
    with mock.patch.object(model_module, "coarse_pays", lambda *size: True):
        got, coeff = block(x, skip)
    up = upsample(x)
    gate = block.gate
    expected_coeff = torch.sigmoid(gate.psi(F.relu(gate.w_gate(up) + gate.w_skip(skip))))
    expected = block.conv(torch.cat([up, expected_coeff * skip], dim=1))
    torch.testing.assert_close(coeff, expected_coeff, rtol=0, atol=1e-12)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_coarse_route_trains_after_inference() -> None:
    """Its cached constant must not be an inference tensor, or backward fails after a prediction."""
    x, weight = torch.randn(1, 128, 32, 32), torch.randn(2, 128, 3, 3, requires_grad=True)
    assert model_module.coarse_pays(128, 32, 32)
    with torch.inference_mode():
        upsample_conv(x, weight)
    upsample_conv(x, weight).sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0
