"""The shipped model's label images on the embedded sample, pinned bit for bit (sha256 of the
pixels) for both engines: a refactoring of the inference code must not change them. The hashes
were recorded before the inference redesign and checked equal after it, and are recorded again
(``tools/output_hashes.py``'s hashing of ``predict --model nuclei``, with the machine) only when a
change meant to change outputs lands, measured on valid data (the longer tiles of 2026-12-07:
docs/experiments). They hold for the machine recorded with them (int8 and fp32 kernels differ
between CPU instruction sets and library versions), and the test says so and skips elsewhere."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

PINNED = Path(__file__).parent / "data" / "sample_label_hashes.json"
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")


def machine() -> dict[str, str]:
    """What decides the kernels' arithmetic: the architecture, the CPU's vector extensions, the
    versions of torch and ONNX Runtime."""
    import onnxruntime
    import torch

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    words = next((line.split() for line in text.splitlines() if line.startswith("flags")), [])
    flags = " ".join(f for f in KERNEL_FLAGS if f in words)
    return {
        "arch": platform.machine(),
        "cpu": flags,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


@pytest.mark.parametrize("engine", ["auto", "torch"])
def test_sample_labels_are_pinned(engine: str, tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))
    from output_hashes import label_hashes

    from attention_unet.cli import main
    from attention_unet.io.data import SAMPLE_DIR

    pinned = json.loads(PINNED.read_text())
    if pinned["machine"] != machine():
        pytest.skip(f"hashes pinned on {pinned['machine']}, this machine is {machine()}")
    argv = ["predict", str(SAMPLE_DIR / "images"), "--model", "nuclei", "--out", str(tmp_path), "--engine", engine]
    assert main(argv) == 0
    assert label_hashes(tmp_path) == pinned[f"predict/{engine}"]
