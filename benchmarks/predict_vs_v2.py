"""`predict`'s wall-clock time per image set: the shipped model with its default engine against
nuclei-v2, the robustness issue's base (at most 1.5x its time per image). Each run is the whole
command, start-up included, as a user meets it; the two alternate, ``--repeats`` times each.
V2 is v2's weights file from git (``git show e587534:src/attention_unet/weights/model.safetensors``).

    python benchmarks/predict_vs_v2.py V2 FOLDER... [--repeats 2]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def predict_seconds(folder: Path, model: Path | None) -> float:
    """One `attention-unet predict FOLDER` into a fresh output folder, timed whole."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "attention_unet", "predict", str(folder), "--out", out]
        command += ["--model", str(model)] if model else []
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("v2", type=Path, help="v2's weights file")
    parser.add_argument("folders", type=Path, nargs="+", help="folders of images")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print("| images | run | v2 | shipped | shipped / v2 |")
    print("|---|---|---|---|---|")
    for folder in args.folders:
        n = sum(1 for p in folder.iterdir() if p.is_file())
        for run in range(1, args.repeats + 1):
            v2 = predict_seconds(folder, args.v2)
            shipped = predict_seconds(folder, None)
            print(f"| {folder.name} ({n}) | {run} | {v2:.1f} s | {shipped:.1f} s | {shipped / v2:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
