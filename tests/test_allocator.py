import platform
import resource

import pytest
import torch

from attention_unet import allocator
from attention_unet.model import AttentionUNet, ModelConfig


def page_faults_per_step(steps: int) -> list[int]:
    """Minor page faults of each forward + backward pass of a small model whose activations
    (4 x 8 x 512 x 512 floats, 32 MiB) are over glibc's largest mmap threshold."""
    torch.manual_seed(0)
    model, x = AttentionUNet(ModelConfig(width=8, depth=2)), torch.rand(4, 3, 512, 512)
    faults = []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        model(x).mean().backward()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return faults


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_kept_memory_is_reused_without_page_faults_and_handed_back_after():
    allocator.keep_freed_memory(False)
    with allocator.kept():
        first, _, *later = page_faults_per_step(5)
    (after,) = page_faults_per_step(1)
    # glibc's default maps and faults in every activation again at every step (as many faults as the first)
    assert sum(later) / len(later) < first / 8
    assert after > first // 2  # outside the block, large blocks are mapped and returned again


def test_environment_leaves_the_default(monkeypatch):
    monkeypatch.setenv("ATTENTION_UNET_KEEP_FREED", "0")
    assert not allocator.keep_freed_memory()
