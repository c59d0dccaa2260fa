"""The decoder's convolution of upsampled features: directly (upsample, then 3x3 convolution) and
by the coarse-grid route of ``model.upsample_conv``, for every decoder level of the presets at
256 x 256 and of the shipped model at its 128 x 128 training crops and 256 x 256 (batch 8,
channels_last), which sets the thresholds of ``model.coarse_pays``; then whole training steps with
the route off and on (where ``coarse_pays`` allows it).

    python benchmarks/upsample_conv.py [--repeats 5]

Prints Markdown tables of median milliseconds: per level, inference (forward under
inference_mode) and training (forward + backward to the input and the weights); per model, a
training step (forward + backward + Adam, batch 8) for the presets at 256 x 256 and the shipped
model's configuration at its 128 x 128 training crops.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from unittest import mock

import torch
import torch.nn.functional as F

from attention_unet import allocator
from attention_unet import model as model_module
from attention_unet.model import PRESETS, AttentionUNet, ModelConfig, load_model, upsample, upsample_conv


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: oneDNN picks its kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def measure(cin: int, cout: int, size: int, repeats: int) -> tuple[list[float], list[float]]:
    """Median ms (direct, coarse) for inference and for training at one decoder level."""
    x = torch.randn(8, cin, size // 2, size // 2).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = (torch.randn(cout, cin, 3, 3) * 0.02).contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(8, cout, size, size).contiguous(memory_format=torch.channels_last)

    def direct() -> torch.Tensor:
        return F.conv2d(upsample(x), weight, padding=1)

    def coarse() -> torch.Tensor:
        with mock.patch.object(model_module, "coarse_pays", lambda *size: True):
            return upsample_conv(x, weight)

    def training(fn: Callable[[], torch.Tensor]) -> Callable[[], object]:
        return lambda: torch.autograd.grad(fn(), (x, weight), grad)

    with torch.inference_mode():
        infer = [median_ms(fn, repeats) for fn in (direct, coarse)]
    return infer, [median_ms(training(fn), repeats) for fn in (direct, coarse)]


def step_ms(config: ModelConfig, size: int, repeats: int) -> float:
    """Median ms of one training step: forward, binary cross-entropy, backward, Adam."""
    torch.manual_seed(0)
    model = AttentionUNet(config).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(8, config.in_channels, size, size).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(8, config.out_channels, size, size) > 0.5).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.binary_cross_entropy_with_logits(model(x), y).backward()
        optimizer.step()

    return median_ms(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5, help="timed training steps per model; levels take 4x + 1")
    args = parser.parse_args()
    allocator.keep_freed_memory()  # as training runs
    torch.manual_seed(0)
    shipped = load_model().config
    models = [
        *((name, cfg, 256) for name, cfg in PRESETS.items()),
        ("shipped", shipped, 128),
        ("shipped", shipped, 256),
    ]
    levels = sorted(
        {
            (cfg.width * 2 ** (i + 1), cfg.width * 2**i, size // 2**i)
            for _, cfg, size in models
            for i in range(cfg.depth)
        },
        reverse=True,
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 8, channels_last\n")
    print(
        "| in -> out channels | output size | inference direct / coarse ms | speed-up | training direct / coarse ms | speed-up |"
    )
    print("|---|---|---|---|---|---|")
    for cin, cout, size in levels:
        infer, train = measure(cin, cout, size, 4 * args.repeats + 1)
        print(
            f"| {cin} -> {cout} | {size} x {size} | {infer[0]:.0f} / {infer[1]:.0f} | {infer[0] / infer[1]:.2f}x "
            f"| {train[0]:.0f} / {train[1]:.0f} | {train[0] / train[1]:.2f}x |",
            flush=True,
        )
    print("\n| model | input | training step, direct / coarse ms | speed-up |")
    print("|---|---|---|---|")
    for name, config, size in models[:-1]:
        with mock.patch.object(model_module, "coarse_pays", lambda *size: False):
            direct = step_ms(config, size, args.repeats)
        coarse = step_ms(config, size, args.repeats)
        print(f"| {name} | {size} x {size} | {direct:.0f} / {coarse:.0f} | {direct / coarse:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
