"""Average the weights of models fine-tuned from one start into one model of the same network (a
uniform "model soup", Wortsman et al. 2022): no extra cost at inference, and on the robustness
issue's leave-TNBC-out protocol at least as good as the best of its parts (docs/experiments).

    python tools/soup.py runs/soup src/attention_unet/weights runs/cont/model runs/phe/model
    python tools/soup.py runs/soup-a70 nuclei-he runs/he2-e5 --weights 0.3 0.7   # a weighted average (WiSE-FT)

BatchNorm's running statistics are averaged like the weights; integer buffers (batches seen)
are the first model's. The soup keeps the first model's metadata but its best validation score, with its parts (path, version,
sha256) added.
"""

import argparse

import torch

from attention_unet.model import load_model, save_model
from attention_unet.training.config import init_record


def soup(paths: list[str], weights: list[float] | None = None) -> tuple[torch.nn.Module, dict]:
    """The average of the models at ``paths`` (same network), uniform or by ``weights`` (summing
    to 1), and its metadata."""
    models = [load_model(p) for p in paths]
    configs = {str(m.config) for m in models}
    if len(configs) > 1:
        raise SystemExit(f"soup: the models are different networks: {sorted(configs)}")
    states = [m.state_dict() for m in models]
    share = torch.tensor(weights or [1 / len(paths)] * len(paths), dtype=torch.float64)
    if len(share) != len(paths) or abs(float(share.sum()) - 1) > 1e-6:
        raise SystemExit("soup: give one weight per model, summing to 1")
    averaged = {
        key: torch.einsum("m...,m->...", torch.stack([s[key].double() for s in states]), share).to(value.dtype)
        if value.is_floating_point()
        else value
        for key, value in states[0].items()
    }
    models[0].load_state_dict(averaged)
    # the first part's training options and start stay (the parts share them but for their own
    # runs); its best validation score does not describe the soup
    info = {k: v for k, v in models[0].info.items() if k not in ("model", "version", "best")}
    info["soup"] = [init_record(p) | {"weight": float(w)} for p, w in zip(paths, share, strict=True)]
    return models[0], info


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", help="folder for the soup's model.safetensors")
    parser.add_argument("models", nargs="+", help="model files or folders, fine-tuned from one start")
    parser.add_argument("--weights", type=float, nargs="+", help="one per model, summing to 1 (default: equal)")
    args = parser.parse_args()
    model, info = soup(args.models, args.weights)
    print(save_model(model, args.out, info))


if __name__ == "__main__":
    main()
