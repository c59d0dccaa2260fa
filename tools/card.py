"""Write a shipped model's card (name, modality, licence, training data, credit) into its metadata:
``model.safetensors`` is rewritten with the same tensors, ``config.json`` beside it, and the int8
ONNX beside it (when there is one) gets the same metadata and the new file's sha256 as
``quantised_from`` (its graph is untouched: it was quantised from these very tensors).

    python tools/card.py src/attention_unet/weights --name nuclei --modality "fluorescence, brightfield, H&E" \\
        --licence MIT --trained-on "DSB-2018 stage 1 train (CC0), BBBC039 (CC0), TNBC (CC BY 4.0)" \\
        --credit "Caicedo et al. 2019 (DSB-2018); Ljosa et al. 2012 (BBBC039); Naylor et al. 2019 (TNBC)"
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    for key in ("name", "modality", "licence", "trained-on"):
        parser.add_argument(f"--{key}", required=True)
    parser.add_argument("--credit", default="")
    parser.add_argument("--route", nargs="*", default=[], help="image kinds --model auto sends to it (data.modality)")
    args = parser.parse_args()
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    weights = args.folder / "model.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        info = json.loads(f.metadata()["attention_unet"])
    before = load_file(str(weights))
    keys = ("name", "modality", "licence", "trained_on", "credit")
    info["card"] = {k: getattr(args, k) for k in keys} | ({"route": args.route} if args.route else {})
    save_file(before, str(weights), metadata={"attention_unet": json.dumps(info)})
    after = load_file(str(weights))
    assert before.keys() == after.keys() and all((before[k] == after[k]).all() for k in before)
    (args.folder / "config.json").write_text(json.dumps(info, indent=2) + "\n")
    int8 = weights.with_suffix(".int8.onnx")
    if int8.is_file():
        import onnx

        graph = onnx.load(str(int8))
        old = json.loads({p.key: p.value for p in graph.metadata_props}["attention_unet"])
        new = {**old, "card": info["card"], "quantised_from": hashlib.sha256(weights.read_bytes()).hexdigest()}
        onnx.helper.set_model_props(graph, {"attention_unet": json.dumps(new)})
        onnx.save(graph, str(int8))
    print(weights, info["card"])


if __name__ == "__main__":
    main()
