"""Pictures of a training run: loss curves and sample montages, written as PNG with Pillow."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stainlab.io.atomic import atomic_path
from stainlab.io.montage import montage

WIDTH, HEIGHT = 900, 520
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 190, 40, 50
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


def _save(image: Image.Image, path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def plot_losses(history: list[dict], path, title: str = "training losses") -> None:
    """One line per loss term against the step, log-scaled, with a legend: ``history`` rows are
    ``{"step": int, <loss name>: float, ...}`` (other numeric keys such as ``lr`` are left out)."""
    names = [key for key in history[0] if key not in ("step", "epoch", "lr", "seconds")] if history else []
    sheet = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=14)
    draw.text((WIDTH // 2, 18), title, fill="black", font=ImageFont.load_default(size=18), anchor="mm")
    box = (MARGIN_LEFT, MARGIN_TOP, WIDTH - MARGIN_RIGHT, HEIGHT - MARGIN_BOTTOM)
    draw.rectangle(box, outline="black")
    steps = np.array([row["step"] for row in history], dtype=float)
    values = {name: np.array([max(float(row[name]), 1e-8) for row in history]) for name in names}
    if len(steps) >= 1 and names:
        lows = min(v.min() for v in values.values())
        highs = max(v.max() for v in values.values())
        low, high = math.floor(math.log10(lows)), math.ceil(math.log10(highs))
        high = max(high, low + 1)
        first, last = steps.min(), max(steps.max(), steps.min() + 1)

        def xy(step, value):
            x = box[0] + (step - first) / (last - first) * (box[2] - box[0])
            y = box[3] - (math.log10(value) - low) / (high - low) * (box[3] - box[1])
            return x, y

        for decade in range(low, high + 1):
            _, y = xy(first, 10.0 ** decade)
            draw.line([(box[0], y), (box[2], y)], fill="#dddddd")
            draw.text((box[0] - 6, y), f"1e{decade}", fill="black", font=font, anchor="rm")
        for tick in np.linspace(first, last, 5):
            x, _ = xy(tick, 10.0 ** low)
            draw.text((x, box[3] + 8), f"{int(round(tick))}", fill="black", font=font, anchor="mt")
        draw.text(((box[0] + box[2]) // 2, HEIGHT - 16), "step", fill="black", font=font, anchor="mm")
        for k, name in enumerate(names):
            colour = COLOURS[k % len(COLOURS)]
            points = [xy(s, v) for s, v in zip(steps, values[name])]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            else:
                x, y = points[0]
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
            legend_y = box[1] + 6 + 20 * k
            draw.line([(box[2] + 12, legend_y + 7), (box[2] + 36, legend_y + 7)], fill=colour, width=3)
            draw.text((box[2] + 42, legend_y), f"{name} {values[name][-1]:.3g}", fill="black", font=font)
    _save(sheet, path)


def save_montage(columns: list[tuple[str, np.ndarray]], path) -> None:
    """A montage of sample outputs: ``columns`` of ``(header, uint8 (N, H, W, 3))``, one row per sample."""
    sheet = montage([(header, list(images), [""] * len(images)) for header, images in columns])
    _save(sheet, path)
