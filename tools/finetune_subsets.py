"""Nested fine-tuning subsets of TNBC (1, 3, 5, 10 images, seeded; links in runs/ft/tnbc-K) and the
split of the other 27 for scoring (runs/ft/split.json): docs/experiments, "Fine-tuning". Run from the repository root.

    python tools/finetune_subsets.py
"""

import json
from pathlib import Path

import numpy as np

src = Path("../shared/data/tnbc")
ids = sorted(p.stem for p in (src / "images").glob("*.png"))
pool = [ids[i] for i in np.random.default_rng(0).permutation(len(ids))[:10]]
out = Path("runs/ft")
for k in (1, 3, 5, 10):
    d = out / f"tnbc-{k}"
    for sub in ("images", "masks"):
        (d / sub).mkdir(parents=True, exist_ok=True)
        for i in pool[:k]:
            link = d / sub / f"{i}.png"
            if not link.exists():
                link.symlink_to((src / sub / f"{i}.png").resolve())
rest = [i for i in ids if i not in pool]
(out / "split.json").write_text(json.dumps({"train": pool, "valid": [], "test": rest}, indent=1))
print("pool", pool, "rest", len(rest))
