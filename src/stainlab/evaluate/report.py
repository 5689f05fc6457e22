"""Writing the harness's results for people: CSV, Markdown, and an HTML page with pictures.

``report.html`` is self-contained apart from ``montage.png`` beside it: the results table, the montage
(rows: images; columns: source, ground truth, each method), one bar chart per metric and the time per
image, drawn as inline SVG so no plotting library is needed.
"""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path

import numpy as np
from PIL import Image

from stainlab.evaluate.harness import folder_name
from stainlab.io.atomic import atomic_write_text
from stainlab.io.images import read_image, write_image
from stainlab.io.montage import montage

THUMB = 256
COLUMNS = ("images", "seconds_per_image", "fit_seconds", "error")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _columns(results: dict) -> list[str]:
    return ["method", *results["metrics"], *COLUMNS]


def write_csv(results: dict, path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(results), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(results["table"])
    atomic_write_text(path, buffer.getvalue())


def markdown_table(results: dict) -> str:
    arrows = {m: " (higher better)" if up else " (lower better)" for m, up in results["higher_is_better"].items()}
    header = ["method", *(m + arrows[m] for m in results["metrics"]), "s/image", "fit s", "images", "error"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in results["table"]:
        cells = [row["method"], *(_fmt(row[m]) for m in results["metrics"]), _fmt(row["seconds_per_image"]),
                 _fmt(row["fit_seconds"]), _fmt(row["images"]), _fmt(row["error"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _thumbnail(image: np.ndarray) -> np.ndarray:
    """Centre square crop resized to THUMB x THUMB, so images of any size share a montage."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(image[top:top + side, left:left + side])
    return np.asarray(square.resize((THUMB, THUMB), Image.LANCZOS))


def write_montage(results: dict, out: Path) -> Path | None:
    """Montage of the first images: source, truth and every method that produced them."""
    keys = results["montage"]
    names = ["source", "truth"] + [r["method"] for r in results["table"][1:]]
    columns = []
    for name in names:
        paths = [out / "outputs" / folder_name(name) / f"{key}.png" for key in keys]
        if not all(p.is_file() for p in paths):
            continue
        images = [_thumbnail(read_image(p)[0]) for p in paths]
        captions = [""] * len(keys)
        if name not in ("source", "truth") and "ciede2000" in results["metrics"]:
            per_image = results["per_image"][name]
            captions = [f"dE00 {per_image[k]['ciede2000']:.1f}" for k in keys]
        columns.append((name, images, captions))
    if not columns or not keys:
        return None
    path = out / "montage.png"
    write_image(path, np.asarray(montage(columns)), overwrite=True)
    return path


def _bar_chart(title: str, rows: list[tuple[str, float]], higher_better: bool | None) -> str:
    """An inline SVG horizontal bar chart."""
    rows = [(n, v) for n, v in rows if v is not None and np.isfinite(v)]
    if not rows:
        return ""
    width, bar, label = 520, 18, 150
    top = max(v for _, v in rows) or 1.0
    note = "" if higher_better is None else (" (higher is better)" if higher_better else " (lower is better)")
    parts = [f'<svg width="{width}" height="{30 + len(rows) * (bar + 6)}" role="img">',
             f'<text x="0" y="16" font-weight="bold">{html.escape(title + note)}</text>']
    for i, (name, value) in enumerate(rows):
        y = 26 + i * (bar + 6)
        length = max(1.0, (width - label - 70) * value / top)
        colour = "#7a7a7a" if name == "unnormalized" else "#3b6ea5"
        parts.append(f'<text x="0" y="{y + 13}" font-size="13">{html.escape(name)}</text>')
        parts.append(f'<rect x="{label}" y="{y}" width="{length:.1f}" height="{bar}" fill="{colour}"/>')
        parts.append(f'<text x="{label + length + 4:.1f}" y="{y + 13}" font-size="12">{value:.4g}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def write_html(results: dict, path: Path, montage_path: Path | None) -> None:
    table = results["table"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _columns(results))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(row.get(c)))}</td>" for c in _columns(results))
                   + "</tr>" for row in table)
    charts = [_bar_chart(m, [(r["method"], r[m]) for r in table], results["higher_is_better"][m])
              for m in results["metrics"]]
    charts.append(_bar_chart("seconds per image", [(r["method"], r["seconds_per_image"]) for r in table[1:]], None))
    columns = "source, ground truth, each method (caption: CIEDE2000 to the truth)" if results["paired"] \
        else "source, each method"
    picture = (f'<h2>Montage</h2><p>Rows: the first images; columns: {columns}.</p>'
               f'<img src="{montage_path.name}" style="max-width:100%">' if montage_path else "")
    warnings_html = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape('; '.join(v[:5]))}</li>"
                            for k, v in results.get("warnings", {}).items())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>stainlab evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} td:first-child{{text-align:left}}</style>
</head><body>
<h1>stainlab evaluation</h1>
<p>Data: {html.escape(results['data'])}; {results['images']} scored images; reference: {html.escape(results['reference'])}.</p>
<h2>Results</h2><table><tr>{head}</tr>{body}</table>
{picture}
<h2>Charts</h2>{''.join(f'<div>{c}</div>' for c in charts if c)}
{f'<h2>Warnings</h2><ul>{warnings_html}</ul>' if warnings_html else ''}
</body></html>
"""
    atomic_write_text(path, page)


def write_report(results: dict, out) -> dict[str, Path]:
    """results.csv, results.md, montage.png and report.html under ``out`` (results.json is already there)."""
    out = Path(out)
    write_csv(results, out / "results.csv")
    atomic_write_text(out / "results.md", markdown_table(results))
    montage_path = write_montage(results, out)
    write_html(results, out / "report.html", montage_path)
    files = {"json": out / "results.json", "csv": out / "results.csv", "markdown": out / "results.md",
             "html": out / "report.html"}
    if montage_path:
        files["montage"] = montage_path
    return files
