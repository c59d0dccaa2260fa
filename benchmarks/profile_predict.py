"""Where predict's time goes, stage by stage, and how near the network runs to this machine's
int8 limit (the speed issue's profile).

    python benchmarks/profile_predict.py [--inputs DIR] [--out benchmarks/profile_predict.json]

1. ``attention-unet predict`` of the inputs (default: the embedded sample, 39 files) with its
   defaults (the shipped int8 ONNX, two views), under cProfile. Each stage is the cumulative time of
   the functions that are it: the network (``runtime.SessionRunner``'s calls, auto scale's probes
   included; the wall time the main thread waits for it, a tile's views side by side on other
   threads included), the sliding window around it (``tiles.sliding_window`` less the network), the
   instances (``Decoder.labels``, which also runs inside auto scale's choice), the measurements,
   reading and writing. Stages can nest (the probes' decoding is inside the plan), so they are not
   summed to the total. One image at a time (``--jobs 1``), whole-image prediction only: cProfile
   sees the main thread, not the threads of several images or of block-wise prediction's blocks.
2. The machine's rates: one 3 x 3 convolution, 64 to 64 channels, on 1 x 64 x 256 x 256, in ONNX
   Runtime as fp32 and statically quantised (QDQ: int8 weights, uint8 activations), in GOP/s (two
   operations per multiply-add), median of ``--repeats`` runs.
3. The network's operations per pixel (torch's FlopCounterMode on a 512 x 512 input, the fp32
   network) and the network step's achieved rate: operations per pixel x pixels through
   ``session.run``, over the network's time, as a share of the int8 convolution's rate.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

STAGES = {  # stage -> (file ending, function names) whose cumulative time it is (never nested)
    "network (SessionRunner)": ("model/runtime.py", ("__call__", "side_by_side")),
    "sliding window (with the network)": ("inference/tiles.py", ("sliding_window",)),
    "instances (Decoder.labels)": ("inference/decode.py", ("labels",)),
    "auto scale and stain plan": ("inference/plan.py", ("sizing",)),
    "measurements": ("io/measure.py", ("measurements",)),
    "reading images": ("commands/predict.py", ("plane_image",)),
    "writing outputs (OutputFolder.write)": ("io/outputs.py", ("write",)),
    "whole predict": ("commands/predict.py", ("_predict_files",)),
}


def profile_predict(inputs: str) -> dict[str, float]:
    from attention_unet.cli import main

    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as out:
        profiler.enable()
        main(["predict", inputs, "--out", out, "--jobs", "1"])  # cProfile sees the main thread only
        profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    seconds = dict.fromkeys(STAGES, 0.0)
    for (path, _, name), (_, _, _, cumulative, _) in stats.items():
        for stage, (ending, functions) in STAGES.items():
            if path.endswith(ending) and name in functions:
                seconds[stage] += cumulative
    return seconds


def conv_rates(repeats: int) -> dict[str, float]:
    """GOP/s of one 3 x 3 convolution, 64 -> 64 channels, 256 x 256, fp32 and int8 (QDQ)."""
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    x = np.random.default_rng(0).random((1, 64, 256, 256), dtype=np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.data = iter([{"x": x}])

        def get_next(self) -> dict | None:
            return next(self.data, None)

    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "conv.onnx", Path(tmp) / "conv.int8.onnx"
        conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval()
        torch.onnx.export(conv, torch.from_numpy(x), str(fp32), input_names=["x"], dynamo=False)
        quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
        operations = 2 * 64 * 64 * 9 * 256 * 256
        for name, path in (("fp32", fp32), ("int8", int8)):
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            session.run(None, {"x": x})
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                session.run(None, {"x": x})
                times.append(time.perf_counter() - start)
            rates[name] = operations / statistics.median(times) / 1e9
    return rates


def network_operations_per_pixel() -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from attention_unet.model import load_model

    network = load_model()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        network(torch.zeros(1, 3, 512, 512))
    return counter.get_total_flops() / (512 * 512)


def network_pixels(inputs: str) -> int:
    """Pixels that went through session.run in a predict of ``inputs`` (counted by wrapping it)."""
    import onnxruntime as ort

    from attention_unet.cli import main

    counted = [0]
    original = ort.InferenceSession.run

    def counting(self: object, outputs: object, feed: dict, *rest: object) -> object:
        counted[0] += sum(int(np.prod(v.shape)) // v.shape[1] for v in feed.values())
        return original(self, outputs, feed, *rest)

    ort.InferenceSession.run = counting  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as out:
            main(["predict", inputs, "--out", out])
    finally:
        ort.InferenceSession.run = original  # type: ignore[method-assign]
    return counted[0]


def main() -> None:
    from attention_unet.io import data

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", default=str(data.SAMPLE_DIR / "images"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/profile_predict.json")
    args = parser.parse_args()
    stages = profile_predict(args.inputs)
    stages["sliding window less the network"] = (
        stages.pop("sliding window (with the network)") - stages["network (SessionRunner)"]
    )
    rates = conv_rates(args.repeats)
    per_pixel = network_operations_per_pixel()
    pixels = network_pixels(args.inputs)
    achieved = per_pixel * pixels / stages["network (SessionRunner)"] / 1e9
    total = stages["whole predict"]
    print("| stage | seconds | share of predict |\n|---|---|---|")
    for stage, seconds in stages.items():
        print(f"| {stage} | {seconds:.1f} | {seconds / total:.0%} |")
    print(f"\nconvolution rates (GOP/s): fp32 {rates['fp32']:.1f}, int8 {rates['int8']:.1f}")
    print(f"network: {per_pixel / 1e3:.0f} kOP per pixel, {pixels / 1e6:.1f} M pixels through session.run, ")
    print(f"{achieved:.1f} GOP/s achieved: {achieved / rates['int8']:.0%} of the int8 convolution's rate")
    result = {"stages": stages, "rates": rates, "ops_per_pixel": per_pixel, "pixels": pixels, "achieved": achieved}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
