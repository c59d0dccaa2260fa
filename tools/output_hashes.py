"""The redesign's guard: sha256 of every label image ``predict`` writes for the embedded sample
(with each engine), and of ``evaluate``'s score.csv on the valid parts of the given datasets, as
JSON. Run before and after a change that must not change outputs, and compare the two files.

    python tools/output_hashes.py --out runs/hashes-before.json [--data ../shared/data/tnbc ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

import tifffile

from attention_unet.cli import main
from attention_unet.io import data


def label_hashes(folder: Path) -> dict[str, str]:
    """Each ``*_labels.tif``'s pixels (not its bytes: TIFF tags name the writer's version) as sha256."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(tifffile.imread(p).tobytes()).hexdigest()
        for p in sorted(folder.rglob("*_labels.tif"))
    }


def run(argv: list[str]) -> None:
    code = main(argv)
    if code != 0:
        raise SystemExit(f"attention-unet {' '.join(argv)}: exit {code}")


def main_(args: argparse.Namespace) -> dict:
    hashes: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine in args.engines:
            out = Path(tmp) / f"predict-{engine}"
            run(["predict", str(data.SAMPLE_DIR / "images"), "--out", str(out), "--engine", engine])
            hashes[f"predict/{engine}"] = label_hashes(out)
        for source in args.data:
            out = Path(tmp) / f"evaluate-{Path(source).name}"
            run(["evaluate", "--data", source, "--split", "valid", "--protocol", "native", "--out", str(out)])
            hashes[f"evaluate/{Path(source).name}"] = hashlib.sha256((out / "score.csv").read_bytes()).hexdigest()
    return hashes


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--engines", nargs="+", default=["auto", "torch"])
    parser.add_argument("--data", nargs="*", default=[])
    args = parser.parse_args()
    Path(args.out).write_text(json.dumps(main_(args), indent=1) + "\n")
