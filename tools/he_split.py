"""The split nuclei-he was trained and selected on: MoNuSeg held out by hospital (the TCGA tissue
source site in each file name: 21, E2, CH, RD, NH and G2 are valid only, so every valid tile comes
from a hospital never trained on; no test part: the challenge's test images are kept aside), and
each other dataset's default split.

    python tools/he_split.py runs/he/split.json
"""

import json
import sys
from pathlib import Path

from attention_unet.io import data

D = "../shared/data"
SOURCES = [f"{D}/dsb2018/stage1_train.zip", f"{D}/bbbc039", f"{D}/tnbc", f"{D}/monuseg"]
HELD_OUT_SITES = {"21", "E2", "CH", "RD", "NH", "G2"}


def main(out: str) -> None:
    split = {}
    for source in SOURCES:
        ids = [r.id for r in data.load_records(source)]
        if source.endswith("monuseg"):
            valid = sorted(i for i in ids if i.split("-")[1] in HELD_OUT_SITES)
            split[source] = {"train": sorted(set(ids) - set(valid)), "valid": valid, "test": []}
        else:
            split[source] = data.default_split(ids)
        print(source, {k: len(v) for k, v in split[source].items()})
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        json.dump(split, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
