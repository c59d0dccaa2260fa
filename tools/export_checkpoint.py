"""Export one checkpoint of a run (not only the best by the monitored metric) as a model folder,
with the same metadata ``train`` writes, so it can be selected on another measure (a
leave-source-out valid set, say) and shipped with tools/ship_model.py.

    python tools/export_checkpoint.py runs/he/checkpoints/last.ckpt runs/he-last
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from attention_unet.model import AttentionUNet, ModelConfig, read_model_info, save_model
from attention_unet.training.config import init_path, init_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    saved = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    hparams = saved["hyper_parameters"]
    model = AttentionUNet(ModelConfig(**hparams["model_config"]))
    model.load_state_dict(
        {k.removeprefix("model."): v for k, v in saved["state_dict"].items() if k.startswith("model.")}
    )
    train = hparams["train_config"]
    metadata = {"train": train, "best": {"checkpoint": args.checkpoint.name, "epoch": saved.get("epoch")}}
    if train.get("init_from"):
        metadata["init"] = init_record(train["init_from"])
        parent = read_model_info(init_path(train["init_from"]))
        if "inference" in parent:
            metadata["inference"] = parent["inference"]
    print(save_model(model.eval(), args.out, metadata))


if __name__ == "__main__":
    main()
