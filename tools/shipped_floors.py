"""The accuracy that tests/test_shipped_model.py pins: mean F1 and DSB score (native protocol, the
model's own settings) per modality of the embedded sample, on TNBC's valid slide, on the first 6
of BBBC039's valid images (the default split), on DSB-2018's valid image of large textured nuclei
and on its valid image of few large nuclei.

    python tools/shipped_floors.py [MODEL] [--engine torch]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from attention_unet.commands.evaluate import score_records
from attention_unet.commands.predict import load_predictor
from attention_unet.io import data

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
# the starts of the ids that tests/test_shipped_model.py's LARGE_TEXTURED and FEW_LARGE name
LARGE_TEXTURED = "29ea4f6eb454"
FEW_LARGE = "1e488c42eb1a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=None, help="default: the shipped model")
    parser.add_argument("--engine", default="torch", help="the test's engine: torch")
    args = parser.parse_args()
    predictor = load_predictor(args.model, engine=args.engine)
    groups: dict[str, list[dict]] = {}
    for row in score_records(predictor, data.load_records(data.SAMPLE_DIR), "native", None):
        groups.setdefault(row["modality"], []).append(row)
    for name in ("tnbc", "bbbc039"):
        records = data.load_records(SHARED / name)
        valid = data.select(records, data.default_split([r.id for r in records]), "valid")[:6]
        groups[name] = score_records(predictor, valid, "native", None)
    archive = data.load_records(SHARED / "dsb2018" / "stage1_train.zip")
    for name, start in (("large textured", LARGE_TEXTURED), ("few large", FEW_LARGE)):
        groups[f"{name} (DSB-2018)"] = score_records(
            predictor, [r for r in archive if r.id.startswith(start)], "native", None
        )
    for name, rows in groups.items():
        f1, dsb = np.mean([r["f1"] for r in rows]), np.mean([r["dsb_score"] for r in rows])
        print(f"{name}: F1 {f1:.3f}, DSB score {dsb:.3f} ({len(rows)} images)")


if __name__ == "__main__":
    main()
