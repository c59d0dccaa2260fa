"""Attention U-Net for 2D segmentation (Oktay et al. 2018, https://arxiv.org/abs/1804.03999).

The network (its config and presets are in :mod:`.config`); saving and loading live in :mod:`.files`.

Gating follows the reference report: the deeper decoder features are first upsampled (bilinear x2)
and the *upsampled* features are the gating signal of the additive attention gate on the skip
connection of the same resolution. (Oktay et al. gate with the coarser features before upsampling;
the report's order keeps gate and skip at one resolution and needs no resampling of the coefficients.)

In eager execution the decoder computes exactly that function with fewer operations: the
convolutions that read the upsampled features run on the coarse grid where that pays (see
:func:`upsample_conv`), and the concatenation is never built. Traced graphs (ONNX, TorchScript)
keep the literal operators.
"""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from .config import MAX_DEPTH, MAX_WIDTH, PRESETS, ModelConfig

__all__ = ["MAX_DEPTH", "MAX_WIDTH", "PRESETS", "AttentionUNet", "ModelConfig", "count_parameters", "upsample_conv"]


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by BatchNorm and ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


def upsample(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling (half-pixel centres, edges clamped), as the report's decoder does."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


@cache
def _phase_kernel(channels: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Grouped-convolution weights (4 * channels, 9, 3, 3) that turn the nine coarse-grid 1x1
    products of :func:`upsample_conv` into its four output phases (row and column parity), read off
    :func:`upsample` applied to unit impulses rather than typed in."""
    with torch.inference_mode(False):  # a normal tensor even when first asked for during inference
        impulses = torch.eye(5, dtype=torch.float64).view(5, 1, 1, 5)  # impulse at coarse position 0..4
        rows = upsample(impulses)[:, 0, 0, :]  # (5, 10): fine-grid response of each impulse
        # weight of coarse offset t in {-1, 0, 1} (impulse 2 + t) for output phase a and tap k,
        # i.e. at fine index 2 * 2 + a + k - 1
        one_d = torch.stack([torch.stack([rows[1:4, 4 + a + k - 1] for k in range(3)]) for a in range(2)])
        two_d = torch.einsum("akt,blu->abkltu", one_d, one_d).reshape(4, 9, 3, 3)
        kernel = two_d.repeat(channels, 1, 1, 1).to(dtype=dtype, device=device)
        return kernel.contiguous(memory_format=torch.channels_last)


# The coarse-grid route pays from 128 input channels, and on coarse grids whose shorter side is at
# least max(16, 4096 / channels): below that its fixed costs (the grouped convolution, the shuffle,
# the edge rows) outweigh its savings. `python benchmarks/upsample_conv.py` on 2 CPU cores.
COARSE_MIN_CHANNELS = 128
COARSE_MIN_SIDE = 16
COARSE_MIN_WORK = 4096  # input channels x shorter coarse side


def coarse_pays(channels: int, height: int, width: int) -> bool:
    """Whether :func:`upsample_conv` takes the coarse-grid route for this input size."""
    return channels >= COARSE_MIN_CHANNELS and min(height, width) >= max(COARSE_MIN_SIDE, COARSE_MIN_WORK / channels)


def upsample_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``conv2d(upsample(x), weight, padding=1)`` for a 3x3 ``weight``, with a quarter of the
    multiply-adds and without building the upsampled tensor.

    A 3x3 convolution is nine 1x1 convolutions summed with one-pixel shifts, and a 1x1 convolution
    commutes with bilinear upsampling. So the channel mixing runs once per tap on the coarse grid
    (1x1 convolution to 9 x out channels), and a fixed per-channel grouped convolution followed by a
    pixel shuffle does the upsampling and the shifts. Replicate padding of ``x`` gives the upsampling's
    edge clamping; the outermost fine rows and columns, where the convolution's zero padding applies
    instead, are recomputed directly from the two coarse rows or columns they depend on. Where
    :func:`coarse_pays` says no, the direct route.
    """
    cout, cin = weight.shape[:2]
    if not coarse_pays(cin, *x.shape[-2:]):
        return F.conv2d(upsample(x), weight, padding=1)
    taps = weight.permute(0, 2, 3, 1).reshape(cout * 9, cin, 1, 1)  # rows ordered (out channel, tap)
    products = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), taps)
    out = F.pixel_shuffle(F.conv2d(products, _phase_kernel(cout, x.dtype, x.device), groups=cout), 2)
    out[:, :, :1] = F.conv2d(F.pad(upsample(x[:, :, :2])[:, :, :2], (1, 1, 1, 0)), weight)
    out[:, :, -1:] = F.conv2d(F.pad(upsample(x[:, :, -2:])[:, :, -2:], (1, 1, 0, 1)), weight)
    out[:, :, :, :1] = F.conv2d(F.pad(upsample(x[..., :2])[..., :2], (1, 0, 1, 1)), weight)
    out[:, :, :, -1:] = F.conv2d(F.pad(upsample(x[..., -2:])[..., -2:], (0, 1, 1, 1)), weight)
    return out


class AttentionGate(nn.Module):
    """Additive attention gate: a = sigmoid(psi(relu(BN(Wg g) + BN(Ws s)))); returns a * s and a.

    Args:
        gate_channels: channels of the gating signal g (the upsampled deeper features).
        skip_channels: channels of the skip connection s; also the inner width.
        scalar: one coefficient per pixel (Oktay et al.) instead of one per skip channel (report).
    """

    def __init__(self, gate_channels: int, skip_channels: int, scalar: bool = False) -> None:
        super().__init__()
        inner = skip_channels
        self.w_gate = nn.Sequential(nn.Conv2d(gate_channels, inner, 1, bias=False), nn.BatchNorm2d(inner))
        self.w_skip = nn.Sequential(nn.Conv2d(skip_channels, inner, 1, bias=False), nn.BatchNorm2d(inner))
        self.psi = nn.Conv2d(inner, 1 if scalar else skip_channels, 1)

    def forward(self, g: torch.Tensor, s: torch.Tensor, coarse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``coarse``: g is at half of s's resolution and is upsampled here, after Wg's 1x1
        convolution (which commutes with the upsampling: the same function, a quarter of the work)."""
        conv, norm = self.w_gate
        gated = norm(upsample(conv(g))) if coarse else self.w_gate(g)
        a = torch.sigmoid(self.psi(F.relu(gated + self.w_skip(s))))
        return a * s, a


class DecoderBlock(nn.Module):
    """Upsample x2 (bilinear), gate the skip with the upsampled features, concatenate, conv block.

    Eager execution computes this without the upsampled tensor or the concatenation: the gate's
    1x1 convolution runs before the upsampling, and the first convolution's weights for the deeper
    features go through :func:`upsample_conv`, those for the skip through a plain convolution, and
    the two are summed. Traced graphs (ONNX, TorchScript) keep the literal operators, which ONNX
    Runtime fuses and quantises best.
    """

    def __init__(self, cin: int, cskip: int, attention: bool, scalar: bool) -> None:
        super().__init__()
        self.gate = AttentionGate(cin, cskip, scalar) if attention else None
        self.conv = ConvBlock(cin + cskip, cskip)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        coeff = None
        if torch.jit.is_tracing():
            x = upsample(x)
            if self.gate is not None:
                skip, coeff = self.gate(x, skip)
            return self.conv(torch.cat([x, skip], dim=1)), coeff
        if self.gate is not None:
            skip, coeff = self.gate(x, skip, coarse=True)
        first, cin = self.conv[0], x.shape[1]
        y = F.conv2d(skip, first.weight[:, cin:], first.bias, padding=1).add_(upsample_conv(x, first.weight[:, :cin]))
        for layer in list(self.conv)[1:]:
            y = layer(y)
        return y, coeff


class AttentionUNet(nn.Module):
    """Attention U-Net returning logits (apply a sigmoid for probabilities).

    Any height and width are accepted: the input is reflect-padded to a multiple of ``2**depth``
    and the output cropped back. ``forward_with_attention`` also returns every gate's coefficients
    (deepest gate first); plain ``forward`` keeps none of them.

    Args:
        config: widths, depth, gate kind; see :class:`ModelConfig`.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        widths = [config.width * 2**i for i in range(config.depth + 1)]
        self.encoders = nn.ModuleList(
            [ConvBlock(cin, cout) for cin, cout in zip([config.in_channels, *widths[:-2]], widths[:-1])]
        )
        self.bridge = ConvBlock(widths[-2], widths[-1])
        scalar = config.gate == "scalar"
        self.decoders = nn.ModuleList(
            [DecoderBlock(widths[i + 1], widths[i], config.attention, scalar) for i in reversed(range(config.depth))]
        )
        self.head = nn.Conv2d(widths[0], config.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, keep_attention=False)[0]

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and every gate's coefficients (deepest first), each at its own level's resolution,
        cropped to the part that covers the input (not the padding)."""
        return self._run(x, keep_attention=True)

    def _run(self, x: torch.Tensor, keep_attention: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        height, width = x.shape[-2:]
        multiple = 2**self.config.depth
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        if pad_h or pad_w or torch.jit.is_tracing():  # traced graphs (ONNX, TorchScript) always pad
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bridge(x)
        maps: list[torch.Tensor] = []
        for decoder, skip in zip(self.decoders, reversed(skips)):
            x, coeff = decoder(x, skip)
            if keep_attention and coeff is not None:
                stride = (height + pad_h) // coeff.shape[-2]
                maps.append(coeff[..., : -(-height // stride), : -(-width // stride)])
        return self.head(x)[..., :height, :width], maps


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
