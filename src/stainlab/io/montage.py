"""Montages: labelled grids of equal-size image tiles, the picture people look at first (the evaluation
report, the demo and the training samples all draw them)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GAP = 6
HEADER = 34
FONT_SIZE = 20


def _font(size: int = FONT_SIZE):
    return ImageFont.load_default(size=size)


def _caption(tile: Image.Image, text: str) -> None:
    """White text on a dark band along the bottom of a tile."""
    draw = ImageDraw.Draw(tile, "RGBA")
    font = _font(FONT_SIZE - 2)
    height = FONT_SIZE + 8
    draw.rectangle([0, tile.height - height, tile.width, tile.height], fill=(0, 0, 0, 170))
    draw.text((6, tile.height - height + 3), text, font=font, fill="white")


def montage(columns: list[tuple[str, list[np.ndarray], list[str]]]) -> Image.Image:
    """Columns of equal-size uint8 RGB tiles, each ``(header, images, captions)``, on white with headers."""
    rows = len(columns[0][1])
    height, width = columns[0][1][0].shape[:2]
    sheet = Image.new("RGB", (len(columns) * (width + GAP) + GAP, HEADER + rows * (height + GAP)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (header, images, captions) in enumerate(columns):
        left = GAP + c * (width + GAP)
        draw.text((left + width // 2, HEADER // 2), header, font=_font(FONT_SIZE + 2), fill="black", anchor="mm")
        for r, (image, caption) in enumerate(zip(images, captions, strict=True)):
            tile = Image.fromarray(image)
            if caption:
                _caption(tile, caption)
            sheet.paste(tile, (left, HEADER + r * (height + GAP)))
    return sheet
