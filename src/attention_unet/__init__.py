"""attention-unet: train, evaluate and apply the Attention U-Net for 2D biomedical segmentation.

The heavy imports (torch) happen on first use of ``AttentionUNet``, ``ModelConfig``,
``load_model`` or ``Segmenter``, so that ``attention-unet --help`` starts at once.
"""

import os
from typing import Any

# albumentations asks PyPI for a newer release when imported (a DNS query and an HTTPS connect);
# the tool promises to run offline, so its check is off before anything can import it
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
__all__ = ["AttentionUNet", "ModelConfig", "Segmentation", "Segmenter", "__version__", "load_model"]


def __getattr__(name: str) -> Any:
    if name in ("AttentionUNet", "ModelConfig", "load_model"):
        from . import model

        return getattr(model, name)
    if name in ("Segmenter", "Segmentation"):
        from . import segmenter

        return getattr(segmenter, name)
    raise AttributeError(f"module 'attention_unet' has no attribute {name!r}")
