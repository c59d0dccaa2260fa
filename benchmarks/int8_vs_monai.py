"""Like for like on CPU: our network and MONAI's AttentionUnet of the same widths, each exported to
ONNX and quantised to int8 the same way (`export.quantize_onnx`: per-channel int8 convolutions, the
first and the head kept fp32, calibrated on the same tiles), run by ONNX Runtime.

    python benchmarks/int8_vs_monai.py [--presets seed small medium] [--repeats 5] [--precisions fp32 int8] [--out benchmarks/int8_vs_monai.json]

For each preset: images per second on a batch of 8 x 256 x 256, and seconds for a 1024 x 1024
prediction through the tiled predictor (tile 512, batch 4), each the median of ``--repeats`` runs
(the spread, max/min, reported beside it: this machine's timings drift with its other load). The two
networks run in turns (ours then MONAI's, then the other way round), so that each repeat gives one
paired ratio ours / MONAI measured under the same load; the median paired ratio and its range are
the comparison, not the ratio of two medians taken minutes apart.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from attention_unet.inference.pipeline import make_predictor
from attention_unet.io import data
from attention_unet.model import PRESETS, AttentionUNet
from attention_unet.model.export import calibration_tiles, export_onnx, quantize_onnx
from attention_unet.model.runtime import onnx_runner


def monai_onnx(width: int, depth: int, path: Path) -> Path:
    from bench import monai_model  # benchmarks/bench.py: the same MONAI network as the other tables

    model = monai_model(width, depth).eval()
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 64, 64),),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}},
        opset_version=17,
        dynamo=False,
    )
    import onnx

    graph = onnx.load(str(path))  # quantize_onnx keeps the attention-unet metadata: give it some
    onnx.helper.set_model_props(graph, {"attention_unet": json.dumps({"model": {"monai": True}})})
    onnx.save(graph, str(path))
    return path


def paired(fns: dict[str, object], repeats: int) -> dict[str, list[float]]:
    """Seconds of ``repeats`` runs of each function, run in turns (the order reversed every other
    repeat) after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for repeat in range(repeats):
        for name in list(fns)[:: 1 if repeat % 2 == 0 else -1]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def summary(times: dict[str, list[float]]) -> dict[str, float]:
    """Medians, spreads (max/min) and the paired speed ratio ours / MONAI (MONAI's time / ours)."""
    ours, monai = times["ours"], times["monai"]
    ratios = [m / o for o, m in zip(ours, monai)]
    return {
        "ours_s": statistics.median(ours),
        "monai_s": statistics.median(monai),
        "ours_spread": max(ours) / min(ours),
        "monai_spread": max(monai) / min(monai),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", nargs="+", default=["seed", "small", "medium"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    parser.add_argument("--out", default="benchmarks/int8_vs_monai.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    tiles = calibration_tiles([r.image for r in data.load_records(data.SAMPLE_DIR)], "percentile")
    batch = np.random.default_rng(1).random((8, 3, 256, 256), dtype=np.float32)
    big = (np.random.default_rng(0).random((1024, 1024, 3)) * 255).astype(np.uint8)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            config = PRESETS[preset]
            paths: dict[str, dict[str, Path]] = {}
            for impl in ("ours", "monai"):
                fp32 = Path(tmp) / f"{preset}-{impl}.onnx"
                if impl == "ours":
                    export_onnx(AttentionUNet(config).eval(), fp32)
                else:
                    monai_onnx(config.width, config.depth, fp32)
                paths[impl] = {"fp32": fp32, "int8": quantize_onnx(fp32, fp32.with_suffix(".int8.onnx"), tiles)}
            for precision in args.precisions:
                runs = {impl: onnx_runner(paths[impl][precision]) for impl in paths}
                network = paired({impl: lambda run=run: run(batch) for impl, run in runs.items()}, args.repeats)
                predictors = {
                    impl: make_predictor(run, "percentile", tile=512, batch_size=4) for impl, run in runs.items()
                }
                tiled = paired({impl: lambda p=p: p.probability(big) for impl, p in predictors.items()}, args.repeats)
                row = {"preset": preset, "onnx": precision, "repeats": args.repeats}
                for size, times in (("256", network), ("1024", tiled)):
                    stats = summary(times)
                    if size == "256":  # images per second of the batch of 8
                        stats["ours_img_s"], stats["monai_img_s"] = 8 / stats["ours_s"], 8 / stats["monai_s"]
                    row.update({f"{key}_{size}": round(value, 3) for key, value in stats.items()})
                print(json.dumps(row), flush=True)
                rows.append(row)
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
