"""Training throughput against MONAI's AttentionUnet at equal widths, as #39 asks it measured:
every preset, rounds of alternated runs (each model in a fresh process, so no run inherits
another's heap or thread state), medians. ``--also SRC`` adds another source tree of this package
(e.g. a worktree of the code before a change) to each round, run with ``PYTHONPATH=SRC``.

    python benchmarks/train_vs_monai.py [--rounds 3] [--presets small medium seed] [--also OLD/src]

One measurement is ``bench.train_speed``: images/s of forward + backward + Adam, batch 8, 256 x 256,
channels_last, the median of 3 timed steps after one warm-up, with freed memory kept (as training
runs). Needs the ``bench`` extra (monai, psutil).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent
ONE = """
import json, sys, torch
sys.path.insert(0, {here!r})
from bench import monai_model, train_speed
from attention_unet import AttentionUNet, allocator
from attention_unet.model import PRESETS
allocator.keep_freed_memory()
torch.manual_seed(0)
config = PRESETS[{preset!r}]
model = monai_model(config.width, config.depth) if {monai!r} else AttentionUNet(config)
print(json.dumps(train_speed(model, 256, 3)[0]))
"""


def one_run(preset: str, monai: bool, src: str | None) -> float:
    """Images/s of one model in a fresh interpreter (``src``: PYTHONPATH for this package)."""
    env = dict(os.environ, PYTHONPATH=src) if src else dict(os.environ)
    code = ONE.format(here=str(HERE), preset=preset, monai=monai)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--presets", nargs="+", default=["small", "medium", "seed"])
    parser.add_argument("--also", help="another source tree of attention_unet, run in each round too")
    args = parser.parse_args()
    runs = {"ours": (False, None), "monai": (True, None)} | ({"also": (False, args.also)} if args.also else {})
    print("| preset | " + " | ".join(f"{name} img/s (runs)" for name in runs) + " | ours / MONAI |")
    print("|---|" + "---|" * (len(runs) + 1))
    for preset in args.presets:
        rates: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, (monai, src) in runs.items():
                rates[name].append(one_run(preset, monai, src))
        cells = [f"{median(v):.3f} ({', '.join(f'{r:.3f}' for r in v)})" for v in rates.values()]
        ratio = median(rates["ours"]) / median(rates["monai"])
        print(f"| {preset} | " + " | ".join(cells) + f" | {ratio:.3f}x |", flush=True)
        print(json.dumps({"preset": preset, **rates}), file=sys.stderr)


if __name__ == "__main__":
    main()
