"""Where a training step's time goes: torch.profiler over one forward + backward + Adam step
(batch 8, 256 x 256, channels_last), operators sorted by their own CPU time.

    python benchmarks/profile_train.py [--preset small]
"""

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from attention_unet import allocator
from attention_unet.model import PRESETS, AttentionUNet


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="small", choices=list(PRESETS))
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    allocator.keep_freed_memory()  # as training runs
    torch.manual_seed(0)
    model = AttentionUNet(PRESETS[args.preset]).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.randn(8, 3, 256, 256).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(8, 1, 256, 256) > 0.5).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        optimizer.step()

    for _ in range(2):  # warm-up: oneDNN picks its kernels
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
