"""Writing the harness's results for people: CSV, Markdown, and an HTML page with pictures.

``report.html`` is self-contained apart from ``montage.png`` and ``reference.png`` beside it: the
reference and where it came from, the results table ranked by the main (first) metric, best first, with
readable times, the montage (rows: images; columns: source, ground truth, each method), one bar chart per
metric and the time per image, drawn as inline SVG so no plotting library is needed. The CSV and Markdown
tables, ranked the same way, keep plain numbers (seconds) for machines.
"""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path

import numpy as np
from PIL import Image

from stainlab.evaluate.harness import BASELINE, folder_name
from stainlab.io.atomic import atomic_write_text
from stainlab.io.images import read_image, write_image
from stainlab.io.montage import montage

THUMB = 256
COLUMNS = ("images", "seconds_per_image", "fit_seconds", "error")


def format_seconds(seconds: float | None) -> str:
    """A duration as people read it: ``"4.2 ms"``, ``"12 ms"``, ``"1.4 s"``, ``"42 s"``, ``"2 min 5 s"``,
    ``"1 h 5 min"`` (``"-"`` for none)."""
    if seconds is None or not np.isfinite(seconds):
        return "-"
    if round(seconds * 1e3, 1) < 10:
        return f"{seconds * 1e3:.1f} ms"
    if round(seconds * 1e3) < 1000:
        return f"{seconds * 1e3:.0f} ms"
    if round(seconds, 1) < 10:
        return f"{seconds:.1f} s"
    if round(seconds) < 60:
        return f"{seconds:.0f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def ranked(results: dict) -> list[dict]:
    """The table's rows, best first by the main (first) metric in its direction; rows without a score
    last, in their run order."""
    main = results["metrics"][0]
    sign = -1 if results["higher_is_better"][main] else 1
    scored = [row for row in results["table"] if row[main] is not None]
    return (sorted(scored, key=lambda row: sign * row[main])
            + [row for row in results["table"] if row[main] is None])


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cells(results: dict, row: dict, seconds=_fmt) -> list[str]:
    """A table row as text: method, metrics, time per image and fit time (written by ``seconds``),
    images, error."""
    return [row["method"], *(_fmt(row[m]) for m in results["metrics"]), seconds(row["seconds_per_image"]),
            seconds(row["fit_seconds"]), _fmt(row["images"]), _fmt(row["error"])]


def _columns(results: dict) -> list[str]:
    return ["method", *results["metrics"], *COLUMNS]


def write_csv(results: dict, path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(results), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(ranked(results))
    atomic_write_text(path, buffer.getvalue())


def markdown_table(results: dict) -> str:
    arrows = {m: " (higher better)" if up else " (lower better)" for m, up in results["higher_is_better"].items()}
    header = ["method", *(m + arrows[m] for m in results["metrics"]), "s/image", "fit s", "images", "error"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in ranked(results):
        lines.append("| " + " | ".join(_cells(results, row)) + " |")
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


def _bar_chart(title: str, rows: list[tuple[str, float]], higher_better: bool | None, fmt=_fmt) -> str:
    """An inline SVG horizontal bar chart, each value written by ``fmt``."""
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
        colour = "#7a7a7a" if name == BASELINE else "#3b6ea5"
        parts.append(f'<text x="0" y="{y + 13}" font-size="13">{html.escape(name)}</text>')
        parts.append(f'<rect x="{label}" y="{y}" width="{length:.1f}" height="{bar}" fill="{colour}"/>')
        parts.append(f'<text x="{label + length + 4:.1f}" y="{y + 13}" font-size="12">'
                     f'{html.escape(fmt(value))}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _results_table(results: dict) -> str:
    """The HTML results table, ranked, with each metric's direction and times in readable units."""
    main, arrows = results["metrics"][0], {True: " \u2191", False: " \u2193"}
    head = ["method", *(m + arrows[results["higher_is_better"][m]] for m in results["metrics"]),
            "time per image", "fit time", "images", "error"]
    rows = []
    for row in ranked(results):
        cells = _cells(results, row, format_seconds)
        style = ' class="baseline"' if row["method"] == BASELINE else ""
        rows.append(f"<tr{style}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    better = "higher" if results["higher_is_better"][main] else "lower"
    return (f"<p>Ranked by {html.escape(main)}, best first ({better} is better; \u2191 higher is better, \u2193 "
            f"lower is better). The time per image leaves out fitting, which is timed once.</p><table><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>")


def _reference(results: dict, folder: Path) -> str:
    """The reference image beside the report, shown small (click for full size), where it came from and,
    when it looks unlike the ground truth, the warning that the scores charge methods for that."""
    image = results.get("reference_image")
    shown = (f'<a href="{html.escape(image)}"><img src="{html.escape(image)}" alt="reference" '
             f'style="max-width:{THUMB}px;max-height:{THUMB}px;display:block"></a>'
             if image and (folder / image).is_file() else "")
    warning = results.get("reference_warning")
    caution = f'<p><b>Warning</b>: {html.escape(warning)}</p>' if warning else ""
    return f"<h2>Reference</h2>{shown}<p>{html.escape(results['reference'])}</p>{caution}"


def _methods(results: dict) -> str:
    """What each label stands for, where it is not the plain method name."""
    items = [f"<li><b>{html.escape(label)}</b>: {html.escape(m['spec'])}"
             + html.escape("".join(f", {k}={v}" for k, v in m["params"].items())) + "</li>"
             for label, m in results.get("methods", {}).items() if m["params"] or m["spec"] != label]
    return f"<h2>Methods</h2><ul>{''.join(items)}</ul>" if items else ""


def write_html(results: dict, path: Path, montage_path: Path | None) -> None:
    rows = ranked(results)
    charts = [_bar_chart(m, [(r["method"], r[m]) for r in rows], results["higher_is_better"][m])
              for m in results["metrics"]]
    charts.append(_bar_chart("time per image", [(r["method"], r["seconds_per_image"]) for r in rows
                                                if r["method"] != BASELINE], None, format_seconds))
    columns = "source, ground truth, each method (caption: CIEDE2000 to the truth)" if results["paired"] \
        else "source, each method"
    picture = (f'<h2>Montage</h2><p>Rows: the first images; columns: {columns}.</p>'
               f'<img src="{montage_path.name}" style="max-width:100%">' if montage_path else "")
    warnings_html = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape('; '.join(v[:5]))}</li>"
                            for k, v in results.get("warnings", {}).items())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>stainlab evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} td:first-child{{text-align:left}}
tr.baseline{{color:#666;font-style:italic}}</style>
</head><body>
<h1>stainlab evaluation</h1>
<p>Data: {html.escape(results['data'])}; {results['images']} scored images.</p>
{_reference(results, path.parent)}
<h2>Results</h2>{_results_table(results)}
{_methods(results)}
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
    if montage_path is None:
        (out / "montage.png").unlink(missing_ok=True)  # an earlier run's, of other methods or images
    write_html(results, out / "report.html", montage_path)
    files = {"json": out / "results.json", "csv": out / "results.csv", "markdown": out / "results.md",
             "html": out / "report.html"}
    if montage_path:
        files["montage"] = montage_path
    return files
