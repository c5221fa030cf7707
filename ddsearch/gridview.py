"""A labelled image grid of a synthetic set, legible at its native size in the MLflow UI.

MLflow shows a logged image at its own pixel size, so 8x8 or 28x28 images need enlarging: the
grid is scaled (nearest neighbour, so pixels stay sharp) until its long side is at least
``min_long_side`` pixels. Each row is one class with its name on the left; every image of the
class is shown up to ``max_per_class``, and a caption says how many were left out, if any.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ddsearch.synset import SyntheticSet

MIN_LONG_SIDE = 512
MAX_LONG_SIDE = 2400
MAX_PER_CLASS = 50
_BG = (255, 255, 255)
_INK = (40, 40, 40)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _unnormalised(synset: SyntheticSet) -> torch.Tensor:
    images = synset.images.detach().float().cpu()
    channels = images.shape[1]
    mean = torch.tensor(synset.mean or (0.0,) * channels).view(1, -1, 1, 1)
    std = torch.tensor(synset.std or (1.0,) * channels).view(1, -1, 1, 1)
    return (images * std + mean).clamp(0, 1)


def grid_caption(counts: list[int], max_per_class: int, title: str = "") -> str:
    """What the grid shows: classes x images, or how many images per class were left out."""
    largest = max(counts, default=0)
    shown = sum(min(n, max_per_class) for n in counts)
    text = f"{len(counts)} classes x {largest} images"
    if sum(counts) > shown:
        text = f"showing {max_per_class} of {largest} images per class ({sum(counts) - shown} left out)"
    return " · ".join(t for t in (title, text) if t)


def labelled_grid(
    synset: SyntheticSet,
    title: str = "",
    max_per_class: int = MAX_PER_CLASS,
    min_long_side: int = MIN_LONG_SIDE,
) -> np.ndarray:
    """The grid as uint8 HxWx3: one row per class (in blocks when short), class labels left, a caption below."""
    images = _unnormalised(synset)
    labels = synset.hard_labels.cpu()
    per_class = [images[labels == c] for c in range(synset.num_classes)]
    largest = max((len(p) for p in per_class), default=0)
    cols = max(1, min(largest, max_per_class))
    rows = max(1, synset.num_classes)
    h, w = images.shape[-2:]
    gap = 2
    # few images per class make a tall strip: put classes in side-by-side blocks, nearest a square
    # (MLflow's image card is square)
    blocks = min(range(1, rows + 1), key=lambda b: abs(math.log((b * cols * w * 1.15) / (math.ceil(rows / b) * h))))
    per_block = math.ceil(rows / blocks)
    # integer scale so the long side reaches min_long_side (but stays below MAX_LONG_SIDE)
    long_side = max(blocks * cols * (w + gap), per_block * (h + gap))
    scale = max(1, math.ceil(min_long_side / max(long_side, 1)))
    while scale > 1 and max(blocks * cols * (w * scale + gap), per_block * (h * scale + gap)) > MAX_LONG_SIDE:
        scale -= 1
    while True:  # the labels and caption add a little: grow until the long side is reached
        cell_h, cell_w = h * scale + gap, w * scale + gap
        font_size = max(12, min(28, cell_h // 2))
        font = _font(font_size)
        names = [synset.class_names[c] if c < len(synset.class_names) else str(c) for c in range(rows)]
        label_w = max(int(font.getlength(n)) for n in names) + 12
        block_w = label_w + cols * cell_w + gap + (12 if blocks > 1 else 0)
        caption = grid_caption([len(p) for p in per_class], cols, title)
        cap_font = _font(max(14, min(22, font_size)))
        cap_h = (cap_font.size if hasattr(cap_font, "size") else 14) + 12
        width = max(blocks * block_w, int(cap_font.getlength(caption)) + 12)
        height = per_block * cell_h + gap + cap_h
        if max(width, height) >= min_long_side or max(width, height) > MAX_LONG_SIDE // 2:
            break
        scale += 1
    canvas = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(canvas)
    for r, picked in enumerate(per_class):
        x0, y = (r // per_block) * block_w, gap + (r % per_block) * cell_h
        draw.text((x0 + label_w - 6, y + (cell_h - gap) // 2), names[r], fill=_INK, font=font, anchor="rm")
        for c, img in enumerate(picked[:cols]):
            arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            if arr.shape[2] == 1:
                arr = np.repeat(arr, 3, axis=2)
            tile = Image.fromarray(arr).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (x0 + label_w + gap + c * cell_w, y))
    draw.text((6, per_block * cell_h + gap + 4), caption, fill=_INK, font=cap_font)
    return np.asarray(canvas)


def save_png(grid: np.ndarray, path: str) -> str:
    """Write a grid (from :func:`labelled_grid`) as a PNG; returns the path."""
    Image.fromarray(grid).save(path, optimize=True)
    return path
