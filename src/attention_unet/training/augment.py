"""Training-time augmentation: albumentations pipelines, H&E stain jitter, fluorescence rendered as
H&E, stain grain, and the scaled crops of native-resolution training."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# ------------------------------------------------------------------------------------- datasets


def augmenter(kind: str) -> Any:
    """The albumentations pipeline on float32 [0, 1] images (None for 'none')."""
    import albumentations as A

    if kind == "none":
        return None
    steps = [A.HorizontalFlip(), A.VerticalFlip(), A.RandomRotate90()]
    if kind in ("full", "robust"):
        steps += [
            A.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.3, hue=0.08, p=0.6),
            A.ToGray(p=0.15),
            A.InvertImg(p=0.15),
            A.GaussianBlur(blur_limit=(3, 5), p=0.1),
        ]
    if kind == "robust":  # texture and noise of dim, large nuclei; out-of-focus planes
        steps += [A.GaussNoise(std_range=(0.02, 0.1), p=0.25), A.Defocus(radius=(1, 3), p=0.05)]
    return A.Compose(steps)


def stain_jitter(image: np.ndarray, rng: np.random.Generator, sigma: float = 0.1) -> np.ndarray:
    """H&E stain variation (Tellez et al. 2018): in haematoxylin-eosin-DAB space each stain's
    amount is scaled by U(1 - sigma, 1 + sigma) and shifted by U(-sigma, sigma) of its range.
    ``image`` is RGB in 0..1."""
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(np.clip(image, 1e-6, 1.0))
    span = np.maximum(hed.reshape(-1, 3).max(0) - hed.reshape(-1, 3).min(0), 1e-3)
    hed = hed * rng.uniform(1 - sigma, 1 + sigma, 3) + rng.uniform(-sigma, sigma, 3) * span
    return np.clip(hed2rgb(hed), 0.0, 1.0).astype(np.float32)


def pseudo_stain(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fluorescence image (0..1, nuclei bright) rendered as an H&E section: its intensity becomes
    the haematoxylin amount (nuclei dark purple), on eosin and a little haematoxylin that vary
    smoothly like tissue. The stain amounts span what skimage's rgb2hed measures on TNBC's slides
    (haematoxylin: nuclei 0.02-0.10, background 0.005-0.04; DAB channel about 0.015). Returns RGB 0..1."""
    import cv2
    from skimage.color import hed2rgb

    grey = image.mean(axis=2) if image.ndim == 3 else image
    h, w = grey.shape

    def field(low: float, high: float) -> np.ndarray:  # random tissue texture, low..high: coarse + fine
        grids = (int(rng.integers(3, 12)), int(rng.integers(16, 64)))
        layers = [cv2.resize(rng.uniform(0, 1, (n, n)).astype(np.float32), (w, h)) for n in grids]
        return low + (high - low) * (0.6 * layers[0] + 0.4 * layers[1])

    texture = grey * rng.uniform(0.8, 1.2, grey.shape).astype(np.float32)  # chromatin grain
    nucleus, ground = rng.uniform(0.035, 0.09), field(0.004, rng.uniform(0.01, 0.035))
    hed = np.stack(
        [
            ground + (nucleus - ground) * np.clip(texture, 0, 1),
            field(0.0, rng.uniform(0.003, 0.03)),
            field(0.005, 0.025),
        ],
        axis=-1,
    )
    return np.clip(hed2rgb(hed), 0.0, 1.0).astype(np.float32)


def stain_grain(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A stained crop (RGB 0..1) as a scanner of another sharpness would give it: half the time
    blurred (Gaussian sigma 0.5-1.5 px), half the time grainy: each stain's amount (rgb2hed) times
    1 + a * n, n unit noise correlated over 0.5-1 px, a 0.05-0.25. The DSB archive's stained images
    are smooth (median |Laplacian|, data.sharpness, 0.005-0.022), TNBC's 40x H&E crops grainy
    (0.032-0.111); the grain takes DSB-2018's stained crops to about 0.03-0.15 (checked on five),
    and unsharp masking would not (0.013 -> 0.018 at most: they have no fine texture to amplify)."""
    import cv2
    from skimage.color import hed2rgb, rgb2hed

    if rng.random() < 0.5:
        return cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.5)).astype(np.float32)
    noise = cv2.GaussianBlur(rng.standard_normal(image.shape).astype(np.float32), (0, 0), rng.uniform(0.5, 1.0))
    noise /= np.maximum(noise.std(axis=(0, 1), keepdims=True), 1e-6)
    hed = rgb2hed(np.clip(image, 1e-6, 1.0)) * (1 + rng.uniform(0.05, 0.25) * noise)
    return np.clip(hed2rgb(hed), 0.0, 1.0).astype(np.float32)


def scaled_crop(
    image: np.ndarray, labels: np.ndarray, size: int, scale: tuple[float, float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A size x size crop showing the image at a random scale (log-uniform, +-15% aspect jitter):
    a region of (size / sy, size / sx) pixels, resized (labels by nearest neighbour); padded by
    reflection where it runs out."""
    import cv2

    s = math.exp(rng.uniform(math.log(scale[0]), math.log(scale[1])))
    aspect = math.exp(rng.uniform(-0.15, 0.15))
    sy, sx = s * aspect, s / aspect
    h, w = image.shape[:2]
    ch, cw = max(1, round(size / sy)), max(1, round(size / sx))
    pad_h, pad_w = max(0, ch - h), max(0, cw - w)
    if pad_h or pad_w:
        image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)
        labels = cv2.copyMakeBorder(labels, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)
        h, w = image.shape[:2]
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    image, labels = image[y : y + ch, x : x + cw], labels[y : y + ch, x : x + cw]
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    # centred nearest neighbour, as data.resize (INTER_NEAREST would shift labels against the image)
    return image, cv2.resize(labels, (size, size), interpolation=cv2.INTER_NEAREST_EXACT)
