"""Network time of ONNX files side by side on ONNX Runtime (CPU, its default threads): a batch of
8 x 256 x 256 and one 512 x 512 tile (predict's CPU default), runs alternated between the files
so that drift in the machine's load falls on all of them; median of ``--repeats`` after a warm-up,
with the spread (max / min). ``--profile`` instead prints where the time of the 8 x 256² batch goes,
by operator type (ONNX Runtime's profiler, one thread, mean of ``--repeats`` runs). ``--views``
times two views of a 512 x 512 tile (predict's default of two views) one after the other on every
core, and side by side, each on its share of the cores (``runtime.SessionRunner.side_by_side``),
alternated; medians of ``--repeats``.

    python benchmarks/onnx_speed.py --repeats 5 OLD.int8.onnx src/attention_unet/weights/model.int8.onnx
    python benchmarks/onnx_speed.py --profile --repeats 3 src/attention_unet/weights/model.int8.onnx
    python benchmarks/onnx_speed.py --views --repeats 15 src/attention_unet/weights/model.int8.onnx
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="time per operator type instead")
    parser.add_argument("--views", action="store_true", help="two views one after the other and side by side")
    args = parser.parse_args()
    if args.views:
        for m in args.models:
            views(m, args.repeats)
        return
    if args.profile:
        batch = np.random.default_rng(1).random((8, 3, 256, 256), dtype=np.float32)
        for m in args.models:
            profile(m, batch, args.repeats)
        return
    sessions = {m: ort.InferenceSession(m, providers=["CPUExecutionProvider"]) for m in args.models}
    inputs = {
        "8 x 256²": np.random.default_rng(1).random((8, 3, 256, 256), dtype=np.float32),
        "1 x 512²": np.random.default_rng(2).random((1, 3, 512, 512), dtype=np.float32),
    }
    times: dict[tuple[str, str], list[float]] = {(m, k): [] for m in args.models for k in inputs}
    for m, session in sessions.items():  # warm-up
        for x in inputs.values():
            session.run(None, {"image": x})
    for _ in range(args.repeats):
        for m, session in sessions.items():
            for k, x in inputs.items():
                start = time.perf_counter()
                session.run(None, {"image": x})
                times[m, k].append(time.perf_counter() - start)
    print("| model | input | median ms | spread |\n|---|---|---|---|")
    for (m, k), t in times.items():
        print(f"| {m} | {k} | {statistics.median(t) * 1e3:.0f} | {max(t) / min(t):.2f} |")


def views(model: str, repeats: int) -> None:
    from attention_unet.model.runtime import SessionRunner, core_count

    runner = SessionRunner(model)
    tile = np.random.default_rng(2).random((1, 3, 512, 512), dtype=np.float32)
    pair = [tile, np.ascontiguousarray(tile.transpose(0, 1, 3, 2))]
    ways = {"one after the other": lambda: [runner(b) for b in pair], "side by side": lambda: runner.side_by_side(pair)}
    times: dict[str, list[float]] = {k: [] for k in ways}
    for run in ways.values():  # warm-up (and the side-by-side sessions made)
        run()
    for _ in range(repeats):
        for k, run in ways.items():
            start = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - start)
    print(f"{model}, two views of a 512² tile on {core_count()} cores:")
    for k, t in times.items():
        print(f"  {k}: median {statistics.median(t) * 1e3:.1f} ms (spread {max(t) / min(t):.2f})")


def profile(model: str, batch: np.ndarray, repeats: int) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        for _ in range(repeats):
            session.run(None, {"image": batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"] / repeats / 1e3
    total = sum(by_op.values())
    print(
        f"{model}: {total:.0f} ms per batch; "
        + ", ".join(f"{k} {v:.0f} ({v / total:.0%})" for k, v in by_op.most_common(8))
    )


if __name__ == "__main__":
    main()
