"""Speed benchmark: attention-unet against MONAI's AttentionUnet at equal encoder widths, and
against this machine's matrix-multiply ceiling, in one process and one run.

    python benchmarks/bench.py [--repeats 3] [--presets seed medium small] [--huge medium small]

Measures, per model: training images/s (forward + backward + Adam step, batch 8, at 256 x 256 and
128 x 128), inference images/s (batch 8 at 256 x 256, one 1024 x 1024 image, one 4096 x 4096 image
tiled), FLOPs per image (torch.utils.flop_counter) and achieved GFLOP/s, peak RSS increase during
training and the 4096 x 4096 prediction; for our models also the BatchNorm-folded torch path and
ONNX Runtime fp32 / static int8 (calibrated on the embedded sample). Once per run: the training
data loader alone (the shipped recipe's 128 x 128 crops and augmentation, one process), to set
against the training step. Prints a Markdown table and writes the numbers as JSON. Both models run
with glibc's freed memory kept for reuse, as the command line runs (allocator.py);
``ATTENTION_UNET_KEEP_FREED=0`` measures glibc's default instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import torch

from attention_unet import AttentionUNet, allocator
from attention_unet.inference.engine import torch_runner
from attention_unet.inference.pipeline import make_predictor
from attention_unet.io import data
from attention_unet.model import PRESETS, ModelConfig
from attention_unet.model.export import calibration_tiles, export_onnx, fold_batchnorm, quantize_onnx
from attention_unet.model.runtime import onnx_runner


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 5 ms by a thread."""

    def __enter__(self) -> PeakRSS:  # noqa: PYI034 - typing.Self needs Python 3.11; the project supports 3.10
        allocator.release()  # the heap kept from earlier measurements would hide this one's peak
        self.proc, self.base, self.peak, self.running = psutil.Process(), psutil.Process().memory_info().rss, 0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss - self.base)
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()

    @property
    def mib(self) -> float:
        return self.peak / 2**20


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def matmul_gflops(n: int = 4096, repeats: int = 5) -> float:
    """Single-precision matrix-multiply GFLOP/s, best of ``repeats``: the practical ceiling."""
    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e9


def flops(model: torch.nn.Module, x: torch.Tensor, train: bool) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        out = model(x)
        if train:
            out.float().mean().backward()
    return counter.get_total_flops() / x.shape[0]


def monai_model(width: int, depth: int) -> torch.nn.Module:
    from monai.networks.nets import AttentionUnet

    channels = [width * 2**i for i in range(depth + 1)]
    return AttentionUnet(spatial_dims=2, in_channels=3, out_channels=1, channels=channels, strides=[2] * depth)


def train_speed(model: torch.nn.Module, size: int, repeats: int) -> tuple[float, float, float]:
    """(images/s, GFLOP per image, peak RSS MiB) for a channels_last Adam step on batch 8."""
    model = model.train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.randn(8, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(8, 1, size, size) > 0.5).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        optimizer.step()

    gflop = flops(model, x, train=True) / 1e9
    optimizer.zero_grad(set_to_none=True)
    with PeakRSS() as mem:
        seconds = timed(step, repeats)
    return 8 / seconds, gflop, mem.mib


def loader_speed(n: int = 400) -> float:
    """Training samples/s of the data pipeline alone: scaled 128 x 128 crops of the embedded sample
    with the shipped recipe's augmentation, polarity normalisation and contour targets."""
    from attention_unet.training.config import TrainConfig
    from attention_unet.training.datasets import TrainDataset

    cfg = TrainConfig(input="crop:128", augment="full", norm="polarity", contour=True, samples_per_epoch=n)
    dataset = TrainDataset(data.load_records(data.SAMPLE_DIR), cfg)
    return n / timed(lambda: [dataset[i] for i in range(n)], 1)


def inference_speed(model: torch.nn.Module, repeats: int) -> tuple[float, float]:
    """(images/s, GFLOP per image) at batch 8, 256 x 256, channels_last, inference_mode."""
    model = model.eval().to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 256, 256).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        gflop = flops(model, x, train=False) / 1e9
        seconds = timed(lambda: model(x), repeats)
    return 8 / seconds, gflop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (median)")
    parser.add_argument(
        "--huge", nargs="*", default=["medium", "small"], help="presets that also predict a 4096 x 4096 image"
    )
    parser.add_argument("--out", default="benchmarks/results.json")
    parser.add_argument("--presets", nargs="+", default=["seed", "medium", "small"])
    args = parser.parse_args()
    repeats = args.repeats
    torch.manual_seed(0)
    kept = allocator.keep_freed_memory()  # as the command line does
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "freed_memory_kept": kept,
        "matmul_gflops_at_start": round(matmul_gflops(), 1),
        "loader_128_img_s": round(loader_speed(), 1),
    }
    print(f"machine: {machine}", flush=True)
    results: dict = {"machine": machine, "models": {}}
    rng = np.random.default_rng(0)
    big = (rng.random((1024, 1024, 3)) * 255).astype(np.uint8)
    huge = (rng.random((4096, 4096, 3)) * 255).astype(np.uint8)
    tiles = calibration_tiles([r.image for r in data.load_records(data.SAMPLE_DIR)], "percentile")
    for preset in args.presets:
        for impl in ("ours", "monai"):
            name = f"{preset}/{impl}"
            row = model_row(PRESETS[preset], impl, repeats, big, huge if preset in args.huge else None, tiles)
            results["models"][name] = {k: round(v, 3) for k, v in row.items()}
            print(name, results["models"][name], flush=True)
    machine["matmul_gflops_at_end"] = round(matmul_gflops(), 1)  # the machine's state drifts over a run
    machine["matmul_gflops"] = max(machine["matmul_gflops_at_start"], machine["matmul_gflops_at_end"])
    for row in results["models"].values():
        row["infer_pct_of_matmul"] = round(100 * row["infer_gflop_s"] / machine["matmul_gflops"], 1)
    print(f"machine: {machine}", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


def model_row(
    config: ModelConfig, impl: str, repeats: int, big: np.ndarray, huge: np.ndarray | None, tiles: list[np.ndarray]
) -> dict:
    """One model's measurements (``impl``: "ours" or "monai" at the same widths): training and
    inference speed, our ONNX engines, and whole-image prediction (of ``huge`` too where given)."""
    make = (lambda: AttentionUNet(config)) if impl == "ours" else (lambda: monai_model(config.width, config.depth))
    row: dict = {}
    row["train_256_img_s"], row["train_gflop_per_img"], row["train_peak_rss_mib"] = train_speed(make(), 256, repeats)
    row["train_128_img_s"] = train_speed(make(), 128, repeats)[0]
    row["train_gflop_s"] = row["train_256_img_s"] * row["train_gflop_per_img"]
    model = make().eval()
    row["infer_256_img_s"], row["infer_gflop_per_img"] = inference_speed(model, repeats)
    row["infer_gflop_s"] = row["infer_256_img_s"] * row["infer_gflop_per_img"]
    if impl == "ours":
        folded = fold_batchnorm(model)
        row["infer_256_folded_img_s"] = inference_speed(folded, repeats)[0]
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = export_onnx(model, Path(tmp) / "m.onnx")
            int8_path = quantize_onnx(onnx_path, Path(tmp) / "m.int8.onnx", tiles)
            batch = np.random.default_rng(1).random((8, 3, 256, 256), dtype=np.float32)
            for key, path in (("onnx_fp32", onnx_path), ("onnx_int8", int8_path)):
                run = onnx_runner(path)
                row[f"infer_256_{key}_img_s"] = 8 / timed(lambda run=run, batch=batch: run(batch), repeats)
        runner = torch_runner(folded)
    else:
        runner = torch_runner(model)
    predictor = make_predictor(runner, "percentile", tile=512, batch_size=4)
    row["predict_1024_s"] = timed(lambda: predictor.probability(big), max(1, repeats // 2))
    if huge is not None:
        with PeakRSS() as mem:
            row["predict_4096_tiled_s"] = timed(lambda: predictor.probability(huge), 1, 0)
        row["predict_4096_peak_rss_mib"] = mem.mib
    return row


def print_table(results: dict) -> None:
    keys = [
        ("train_256_img_s", "train img/s 256"),
        ("train_128_img_s", "train img/s 128"),
        ("train_gflop_s", "train GFLOP/s"),
        ("infer_256_img_s", "infer img/s 256"),
        ("infer_256_folded_img_s", "folded BN"),
        ("infer_256_onnx_fp32_img_s", "ONNX fp32"),
        ("infer_256_onnx_int8_img_s", "ONNX int8"),
        ("infer_gflop_per_img", "GFLOP/img"),
        ("infer_gflop_s", "infer GFLOP/s"),
        ("infer_pct_of_matmul", "% of matmul"),
        ("predict_1024_s", "1024² s"),
        ("predict_4096_tiled_s", "4096² s"),
        ("train_peak_rss_mib", "train RSS MiB"),
        ("predict_4096_peak_rss_mib", "4096² RSS MiB"),
    ]
    print("| model | " + " | ".join(label for _, label in keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, row in results["models"].items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.3g}" if k in row else "-" for k, _ in keys) + " |")


if __name__ == "__main__":
    main()
