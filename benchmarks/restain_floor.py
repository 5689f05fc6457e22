"""How low can a map fitted on one tile go on the restaining benchmark? Where the error of the best
reference-based method (``linear-ot``) comes from, tile by tile, against exact ground truth.

The benchmark (:mod:`benchmarks.restain`) renders each source image's truth with one stain depth for
the whole image (its 90th-percentile amounts brought to the target look's, :mod:`stainlab.data.looks`),
while the tiles of an image keep their own tissue. A normalizer that fits its source statistics on each
tile alone therefore meets a different tissue composition in every tile. Four maps, all one 3x3 matrix
in optical density (OD) against each tile's own light, rendered under the reference's light:

- ``linear-ot``: the method, fitted on the reference tile and each source tile (nothing known);
- ``true stains, tile moments``: the source and truth stain bases the simulator used (from the
  benchmark's ``meta.json``), and the concentration scale from the tile's moments (the Monge map of
  :mod:`stainlab.transforms.optimal_transport`, in stain space): a perfect stain estimator that still
  sees one tile;
- ``true stains, tile 90th percentiles``: the same with the scale from each stain's 90th percentile;
- ``oracle``: the least-squares OD map from the tile onto its truth: the floor of every map linear in
  OD, which only the truth itself can fit.

Reinhard's and ``linear-ot``'s scores are the harness's (the same tiles, ``restain.py``'s numbers); the
gap between the second line and the oracle is what tile-level statistics cost.

    python benchmarks/restain_floor.py              # -> benchmarks/results/restain_floor.json
    python benchmarks/restain_floor.py --presets long-he scanner-tone
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import stainlab
from stainlab.color.deconvolution import stain_basis
from stainlab.color.light import estimate_light
from stainlab.color.od import map_od_linear, rgb_to_od
from stainlab.data import PRESETS, make_benchmark
from stainlab.data.looks import AMOUNT_PERCENTILE, look_of
from stainlab.data.simulate import Staining
from stainlab.io.atomic import atomic_write_text
from stainlab.io.images import read_image
from stainlab.metrics import ciede2000
from stainlab.transforms.lut import to_uint8
from stainlab.transforms.optimal_transport import monge_map

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance  # noqa: E402
from restain import TILE, tissue  # noqa: E402  (the same tissue, tiles and look as restain.py)

HERE = Path(__file__).resolve().parent
MAPS = ("reinhard", "linear-ot", "true stains, tile moments", "true stains, tile 90th percentiles", "oracle")


def tissue_od(image: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pixels (M, 3), their light, and the OD of their tissue (above ``beta`` in some channel)."""
    pixels = image.reshape(-1, 3)
    light = estimate_light(pixels).rgb
    od = rgb_to_od(pixels.astype(np.float64), light)
    return pixels, light, od[(od > beta).any(axis=1)]


def rendered(pixels, matrix, light, light_out, shape) -> np.ndarray:
    return to_uint8(map_od_linear(pixels, matrix, light, light_out)).reshape(shape)


def stain_space_map(source_od, source_basis, reference_od, reference_basis, scale: str) -> np.ndarray:
    """The OD map ``B_s^-1 T B_r`` whose stain-space part ``T`` sends the source tile's concentrations
    to the reference's: the Monge map of their second moments, or each stain's 90th-percentile ratio."""
    cs, cr = source_od @ np.linalg.inv(source_basis), reference_od @ np.linalg.inv(reference_basis)
    if scale == "moments":
        middle = monge_map(cs.T @ cs / len(cs), cr.T @ cr / len(cr))
    else:
        ratio = np.percentile(cr, AMOUNT_PERCENTILE, axis=0) / np.percentile(cs, AMOUNT_PERCENTILE, axis=0)
        middle = np.diag(np.where(np.isfinite(ratio) & (ratio > 0), ratio, 1.0))
    return np.linalg.inv(source_basis) @ middle @ reference_basis


def preset_scores(folder: Path) -> dict:
    meta = json.loads((folder / "meta.json").read_text())
    records = {r["name"]: r for r in meta["images"]}
    reference = read_image(folder / "reference.png")[0]
    beta = stainlab.load("linear-ot").beta
    _, reference_light, reference_od = tissue_od(reference, beta)
    truth_basis = stain_basis(np.array(meta["truth_look"]["stains"])).matrix
    fitted = {name: stainlab.load(name).fit(reference) for name in ("reinhard", "linear-ot")}
    scores = {name: [] for name in MAPS}
    for record in meta["images"]:
        name = record["name"]
        source, truth = (read_image(folder / side / f"{name}.png")[0] for side in ("A", "B"))
        pixels, light, source_od = tissue_od(source, beta)
        staining = Staining.from_dict(records[name]["staining"])
        source_basis = stain_basis(staining.stain_rows(np.array(record["source_stains"]))).matrix
        outputs = {key: t(source) for key, t in fitted.items()}
        for scale, key in (("moments", MAPS[2]), ("percentiles", MAPS[3])):
            matrix = stain_space_map(source_od, source_basis, reference_od, truth_basis, scale)
            outputs[key] = rendered(pixels, matrix, light, reference_light, source.shape)
        truth_od = rgb_to_od(truth.reshape(-1, 3).astype(np.float64), reference_light)
        oracle = np.linalg.lstsq(rgb_to_od(pixels.astype(np.float64), light), truth_od, rcond=None)[0]
        outputs["oracle"] = rendered(pixels, oracle, light, reference_light, source.shape)
        for key, out in outputs.items():
            scores[key].append(float(ciede2000(out, truth)))
    return {key: round(float(np.mean(v)), 3) for key, v in scores.items()} | {"tiles": len(meta["images"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS), metavar="PRESET")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=HERE / "_work" / "restain_floor")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    started = provenance()
    warnings.simplefilter("ignore")  # tiles without glass warn that their light falls back to white
    sources, target, origin = tissue()
    look = look_of(target)
    summary = {"command": " ".join(["python benchmarks/restain_floor.py", *sys.argv[1:]]), "tissue": origin,
               "tile": TILE, "seed": args.seed, "presets": {}}
    for preset in args.presets:
        started_preset = time.perf_counter()
        folder = make_benchmark(sources, preset, args.work / preset, args.seed, reference=look, tile=TILE,
                                min_tissue=0.5, overwrite=True)
        summary["presets"][preset] = preset_scores(folder)
        print(preset, summary["presets"][preset], f"{time.perf_counter() - started_preset:.0f} s", flush=True)
    means = {key: round(float(np.mean([p[key] for p in summary["presets"].values()])), 3) for key in MAPS}
    summary["mean"] = means
    summary["below_reinhard"] = {key: round(1.0 - means[key] / means["reinhard"], 3) for key in MAPS}
    summary["provenance"] = provenance(started)
    atomic_write_text(args.out / "restain_floor.json", json.dumps(summary, indent=1))
    print(json.dumps({"mean CIEDE2000": means, "below Reinhard": summary["below_reinhard"]}, indent=1))


if __name__ == "__main__":
    main()
