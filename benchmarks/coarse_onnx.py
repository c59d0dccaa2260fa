"""Would the eager model's coarse-grid decoder route pay in ONNX Runtime? Writes a preset's network
(untrained, seeded) as ONNX twice, fp32 and int8 (``export.quantize_onnx``, calibrated on the
embedded sample): as exported (the literal upsample, gate, concatenate, 3x3 convolution) and with
every decoder level of at least ``--min-channels`` input channels traced through a formulation of
``model.upsample_conv`` that the ONNX exporter accepts (replicate padding by concatenation, static
channel counts, the four edge lines corrected by subtraction instead of written in place), the gate's
1x1 convolution before the upsampling, and no concatenation. Checks that the two fp32 graphs compute
the same logits; time and profile them with benchmarks/onnx_speed.py:

    python benchmarks/coarse_onnx.py --preset seed --out runs/coarse-onnx
    python benchmarks/onnx_speed.py --repeats 5 runs/coarse-onnx/literal.int8.onnx runs/coarse-onnx/coarse.int8.onnx
    python benchmarks/onnx_speed.py --profile --repeats 3 runs/coarse-onnx/coarse.int8.onnx
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

from attention_unet import model as model_module
from attention_unet.io import data
from attention_unet.model import PRESETS, AttentionUNet, DecoderBlock, upsample
from attention_unet.model.export import calibration_tiles, export_onnx, quantize_onnx


def edge_pad(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Replicate padding by one along ``dim`` (the exporter loses the shape of ``F.pad(mode="replicate")``)."""
    return torch.cat([x.narrow(dim, 0, 1), x, x.narrow(dim, x.shape[dim] - 1, 1)], dim=dim)


def traced_upsample_conv(x: torch.Tensor, weight: torch.Tensor, cout: int, cin: int) -> torch.Tensor:
    """``model.upsample_conv``'s coarse route in operators ONNX export keeps: the products on the
    replicate-padded coarse grid give the convolution of the fine image padded by replicating its
    edge; the contribution of that outer ring is then subtracted from the four edge lines. ``cout``
    and ``cin`` are given as numbers: the tracer records shapes read off tensors as tensors."""
    taps = weight.permute(0, 2, 3, 1).reshape(cout * 9, cin, 1, 1)
    products = F.conv2d(edge_pad(edge_pad(x, 2), 3), taps)
    kernel = model_module._phase_kernel(cout, x.dtype, x.device).contiguous()
    out = F.pixel_shuffle(F.conv2d(products, kernel, groups=cout), 2)
    top = F.conv2d(edge_pad(upsample(x[:, :, :1])[:, :, :1], 3), weight[:, :, :1])
    bottom = F.conv2d(edge_pad(upsample(x[:, :, -1:])[:, :, :1], 3), weight[:, :, 2:])
    left = F.conv2d(upsample(x[..., :1])[..., :1], weight[..., :1], padding=(1, 0))
    right = F.conv2d(upsample(x[..., -1:])[..., :1], weight[..., 2:], padding=(1, 0))
    out = torch.cat([out[:, :, :1] - top, out[:, :, 1:-1], out[:, :, -1:] - bottom], dim=2)
    return torch.cat([out[..., :1] - left, out[..., 1:-1], out[..., -1:] - right], dim=3)


def coarse_forward(min_channels: int) -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]]:
    """A ``DecoderBlock.forward`` that takes the traceable coarse route from ``min_channels`` inputs."""
    literal = DecoderBlock.forward

    def forward(self: DecoderBlock, x: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        first = self.conv[0]
        cout = first.out_channels
        cin = first.in_channels - cout
        if cin < min_channels:
            return literal(self, x, skip)
        coeff = None
        if self.gate is not None:
            skip, coeff = self.gate(x, skip, coarse=True)
        y = F.conv2d(skip, first.weight[:, cin:], first.bias, padding=1)
        y = y + traced_upsample_conv(x, first.weight[:, :cin], cout, cin)
        for layer in list(self.conv)[1:]:
            y = layer(y)
        return y, coeff

    return forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="seed", choices=sorted(PRESETS))
    parser.add_argument("--min-channels", type=int, default=128, help="coarse route from this many input channels")
    parser.add_argument("--out", type=Path, default=Path("runs/coarse-onnx"))
    args = parser.parse_args()
    torch.manual_seed(0)
    network = AttentionUNet(PRESETS[args.preset]).eval()
    tiles = calibration_tiles([r.image for r in data.load_records(data.SAMPLE_DIR)], "percentile")
    literal = export_onnx(network, args.out / "literal.onnx")
    with mock.patch.object(DecoderBlock, "forward", coarse_forward(args.min_channels)):
        coarse = export_onnx(network, args.out / "coarse.onnx")
    import onnxruntime as ort

    batch = np.random.default_rng(0).random((2, 3, 256, 192), dtype=np.float32)
    logits = [ort.InferenceSession(str(p)).run(None, {"image": batch})[0] for p in (literal, coarse)]
    scale = float(np.abs(logits[0]).max())
    print(f"fp32 graphs: max |logit difference| {np.abs(logits[0] - logits[1]).max():.2e} (logits up to {scale:.2e})")
    for path in (literal, coarse):
        print(f"wrote {path} and {quantize_onnx(path, path.with_suffix('.int8.onnx'), tiles)}")


if __name__ == "__main__":
    main()
