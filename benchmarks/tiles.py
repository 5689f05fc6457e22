"""The small-tile section of ``benchmarks/classical.py``: milliseconds per tile where training pipelines
work, every per-pixel stainlab method beside torchstain's NumPy and PyTorch backends, in the same
process, on the same tiles, each implementation estimating every tile's own statistics (stain matrix,
percentiles, LAB moments) as it must.

Tiles are cut on a grid from the CMU-1 region and kept when at least ``MIN_TISSUE`` of their pixels are
tissue (torchstain needs tissue in every tile); each size is timed round-robin over all
implementations, so load that comes and goes falls on all of them alike.
"""

from __future__ import annotations

import statistics
from typing import Any, Callable

import numpy as np

from stainlab.color.tissue import tissue_mask
from stainlab.transforms import PixelTransform

TILE_SIZES = (128, 256, 512, 1024)
QUICK_TILE_SIZES = (256, 512)
TILES_PER_SIZE = {128: 32, 256: 32, 512: 12, 1024: 4}
MIN_TISSUE = 0.5
# The issue's targets (issue 15, "Small images at full speed"): stainlab's per-tile speed over the peer's.
TILE_TARGETS = {("macenko", "torchstain-numpy"): 5.0, ("macenko", "torchstain-torch"): 10.0,
                ("reinhard", "torchstain-numpy"): 10.0, ("reinhard", "torchstain-torch"): 10.0}
TARGET_SIZES = (256, 512)
FIDELITY_TILES = 4                 # tiles per size whose output is compared with the exact per-pixel path


def tissue_tiles(image: np.ndarray, side: int, count: int) -> list[np.ndarray]:
    """Up to ``count`` grid tiles of ``side`` pixels that are at least ``MIN_TISSUE`` tissue."""
    tiles = []
    for y in range(0, image.shape[0] - side + 1, side):
        for x in range(0, image.shape[1] - side + 1, side):
            tile = np.ascontiguousarray(image[y:y + side, x:x + side])
            if tissue_mask(tile[::4, ::4].reshape(-1, 3)).mean() >= MIN_TISSUE:
                tiles.append(tile)
    return tiles[:count]


def torchstain_tile_calls(reference: np.ndarray) -> dict[tuple[str, str], Callable[[np.ndarray], Any]]:
    """(library, method) -> a call normalizing one uint8 HxWx3 tile, each fitted on ``reference``; the
    torch backend gets tensors made outside the timing (see :func:`tile_inputs`)."""
    import torch
    from torchstain import normalizers

    calls = {}
    for backend in ("numpy", "torch"):
        ref = reference if backend == "numpy" else torch.from_numpy(reference).permute(2, 0, 1).float()
        macenko = normalizers.MacenkoNormalizer(backend=backend)
        macenko.fit(ref)
        reinhard = normalizers.ReinhardNormalizer(backend=backend)
        reinhard.fit(ref)
        calls[f"torchstain-{backend}", "macenko"] = lambda tile, n=macenko: n.normalize(I=tile, stains=False)
        calls[f"torchstain-{backend}", "reinhard"] = lambda tile, n=reinhard: n.normalize(tile)
    return calls


def tile_inputs(tiles: list[np.ndarray], library: str) -> list:
    """The tiles in the library's input format: uint8 HxWx3, or a (3, H, W) float 0-255 tensor for
    torchstain's torch backend."""
    if library != "torchstain-torch":
        return tiles
    import torch

    return [torch.from_numpy(t).permute(2, 0, 1).contiguous().float() for t in tiles]


def bench_tiles(fitted: dict[str, Any], reference: np.ndarray, image: np.ndarray, sizes, repeats: int,
                round_robin, log, ciede2000) -> dict[str, Any]:
    """Per-tile milliseconds of every per-pixel method in ``fitted`` (name -> fitted stainlab transform)
    and of torchstain's, for each tile size, and how far stainlab's tile outputs are from its exact
    per-pixel path (mean CIEDE2000 over ``FIDELITY_TILES`` tiles); failures are recorded, not raised."""
    import torch

    try:
        peers = torchstain_tile_calls(reference)
    except Exception as err:  # noqa: BLE001 - torchstain absent or broken: stainlab alone
        peers, peer_error = {}, f"{type(err).__name__}: {err}"
    else:
        peer_error = None
    ours = {("stainlab", name): t for name, t in fitted.items() if isinstance(t, PixelTransform)}
    out: dict[str, Any] = {"min_tissue_fraction": MIN_TISSUE, "peer_error": peer_error, "sizes": {}}
    for side in sizes:
        tiles = tissue_tiles(image, side, TILES_PER_SIZE.get(side, 8))
        if not tiles:
            continue
        log(f"tiles {side} px: {len(tiles)} tiles")
        calls, failed = {}, {}
        for key, fn in [*((k, t) for k, t in ours.items()), *peers.items()]:
            inputs = tile_inputs(tiles, key[0])
            try:
                fn(inputs[0])
            except Exception as err:  # noqa: BLE001 - one implementation failing does not stop the others
                failed[" ".join(key)] = f"{type(err).__name__}: {err}"
                continue
            calls[key] = lambda fn=fn, inputs=inputs: [fn(tile) for tile in inputs]
        with torch.inference_mode():
            times = round_robin({" ".join(k): call for k, call in calls.items()}, repeats)
        fidelity = {name: float(np.mean([ciede2000(t(tile), t.transform(tile, exact=True))["mean"]
                                         for tile in tiles[:FIDELITY_TILES]]))
                    for (_, name), t in ours.items() if f"stainlab {name}" not in failed}
        out["sizes"][str(side)] = {
            "tiles": len(tiles), "failed": failed, "vs_exact_mean_ciede2000": fidelity,
            "ms_per_tile": {k: 1e3 * statistics.median(v) / len(tiles) for k, v in times.items()},
            "ms_per_tile_fastest": {k: 1e3 * min(v) / len(tiles) for k, v in times.items()}}
    return out


def tile_ratios(tiles: dict[str, Any]) -> list[dict[str, Any]]:
    """stainlab's per-tile speed over each torchstain backend's, per method and size (> 1: faster)."""
    rows = []
    for side, rec in tiles["sizes"].items():
        ms = rec["ms_per_tile"]
        for key, peer_ms in ms.items():
            library, method = key.split(" ")
            ours = ms.get(f"stainlab {method}")
            if library != "stainlab" and ours:
                rows.append({"size": int(side), "method": method, "peer": library, "speedup_x": peer_ms / ours,
                             "speedup_x_fastest": rec["ms_per_tile_fastest"][key]
                             / rec["ms_per_tile_fastest"][f"stainlab {method}"]})
    return rows


def tile_targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    checks = {}
    for (method, peer), wanted in TILE_TARGETS.items():
        for side in TARGET_SIZES:
            row = next((r for r in rows if (r["method"], r["peer"], r["size"]) == (method, peer, side)), None)
            value = None if row is None else row["speedup_x"]
            checks[f"{method}_{side}px_tiles_vs_{peer}"] = {
                "value": value, "target": f">= {wanted:g}x", "met": None if value is None else value >= wanted}
    return checks


def tile_report(tiles: dict[str, Any], region: dict[str, float], table, fmt) -> str:
    """A table: one row per implementation, one column per tile size (ms per tile) and the region (ms)."""
    sizes = list(tiles["sizes"])
    keys = sorted({k for rec in tiles["sizes"].values() for k in rec["ms_per_tile"]},
                  key=lambda k: (k.split(" ")[1], k.split(" ")[0] != "stainlab", k))
    def fidelity(key):
        library, method = key.split(" ")
        values = [tiles["sizes"][s]["vs_exact_mean_ciede2000"].get(method) for s in sizes] if library == "stainlab" else []
        return fmt(max((v for v in values if v is not None), default=None), ".3f")

    rows = [[k.split(" ")[1], k.split(" ")[0], *(fmt(tiles["sizes"][s]["ms_per_tile"].get(k), ".2f") for s in sizes),
             fmt(region.get(k), ".0f"), fidelity(k)] for k in keys]
    return table(["method", "implementation", *(f"{s} px ms/tile" for s in sizes), "region ms",
                  "tiles vs exact, worst mean dE"], rows)
