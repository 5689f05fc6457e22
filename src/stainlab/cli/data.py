"""``stainlab data make-benchmark``: pixel-aligned pairs rendered by the restaining simulator."""

from __future__ import annotations

import json

from stainlab.cli import messages
from stainlab.cli.args import positive_int, subcommand


def run_make_benchmark(args) -> int:
    from stainlab.data.benchmark import make_benchmark, meta_name

    out = make_benchmark(args.source, args.preset, args.out, args.seed, reference=args.reference, mode=args.mode,
                         levels=args.level, split=args.split, tile=None if args.whole else args.tile,
                         min_tissue=args.min_tissue, overwrite=args.overwrite)
    meta = json.loads((out / meta_name(args.mode, args.split)).read_text(encoding="utf-8"))
    made = f"{args.preset} restain" if args.mode == "restain" else f"H&E -> IHC, split {args.split}"
    skipped = meta["skipped"]
    messages.result(f"wrote {meta['pairs']} pairs ({made}, seed {args.seed}) to {out}; skipped "
                    f"{skipped['background'] + skipped['unseparable']} tile(s): {skipped['background']} with "
                    f"under {args.min_tissue:.0%} tissue, {skipped['unseparable']} whose stains could not be "
                    "separated")
    if meta.get("reference_image"):
        messages.result(f"reference {out / meta['reference_image']['file']}: {meta['reference_image']['why']}")
    return 0


def add(sub, common) -> None:
    data = subcommand(sub, "data", "make data sets", "Make data sets for training and evaluation.",
                      "example:\n  stainlab data make-benchmark --preset long-he --source tiles/ --out bench/",
                      common)
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    bench = subcommand(
        data_sub, "make-benchmark", "render pixel-aligned pairs with the restaining simulator",
        "Separate real tissue into stain concentrations and render it under a known staining preset:\n"
        "OUT/A/x.png is the re-stained input, OUT/B/x.png the exact ground truth, OUT/meta.json the\n"
        "parameters. Each source is cut into 256x256 tiles (--tile, or --whole for whole images); tiles\n"
        "with too little tissue (--min-tissue) or unseparable stains are skipped and counted.\n"
        "OUT/reference.png is an image in the truth's look, which `stainlab evaluate` fits methods on: the\n"
        "tile with the most tissue and the most typical colour, held out of the pairs, or with\n"
        "--reference REF your own reference, the truth then rendered in its look (its stains, stain\n"
        "amounts and glass), so methods fitted on REF are scored fairly.\n"
        "--mode ihc writes H&E -> IHC pairs in the BCI layout (HE/SPLIT/, IHC/SPLIT/, meta_SPLIT.json)\n"
        "instead, adding the split to an existing BCI folder without touching its other splits.",
        "examples:\n  stainlab data make-benchmark --preset long-he --source slide_region.png --out bench/\n"
        "  stainlab data make-benchmark --preset scanner-other --source tiles/ --reference ref.png --out bench/\n"
        "  stainlab data make-benchmark --preset faded --source tiles/ --whole --out bench/\n"
        "  stainlab data make-benchmark --mode ihc --source he_train/ --out bci/\n"
        "  stainlab data make-benchmark --mode ihc --source he_test/ --split test --level 2+ --out bci/", common)
    bench.add_argument("--preset", default="long-he", help="simulator preset (default: %(default)s)")
    bench.add_argument("--source", required=True, action="append", metavar="IMG_OR_DIR",
                       help="real tissue images or folders (repeatable)")
    bench.add_argument("--out", required=True, metavar="DIR", help="output folder")
    bench.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    bench.add_argument("--reference", metavar="REF_OR_PRESET",
                       help="render the truth in this image's look and use it as the reference (or a preset "
                            "name: the truth's staining; default: the sources' own)")
    bench.add_argument("--mode", choices=("restain", "ihc"), default="restain", help="pair kind")
    size = bench.add_mutually_exclusive_group()
    size.add_argument("--tile", type=positive_int, default=256, metavar="PIXELS",
                      help="cut sources into tiles of this side, one pair each (default: %(default)s; a source "
                           "smaller than the tile is used whole)")
    size.add_argument("--whole", action="store_true", help="one pair per source image, not cut into tiles")
    bench.add_argument("--min-tissue", type=float, default=0.5, metavar="F",
                       help="tissue fraction a tile (or whole image) needs; others are skipped as background "
                            "(default: %(default)s)")
    bench.add_argument("--level", choices=("0", "1+", "2+", "3+"), help="HER2 level for --mode ihc "
                       "(default: drawn from the seed per source image; its tiles share it)")
    bench.add_argument("--split", default="train", help="BCI split name for --mode ihc (default: train)")
    bench.add_argument("--overwrite", action="store_true",
                       help="replace an existing benchmark folder (--mode ihc: an existing split)")
    bench.set_defaults(run=run_make_benchmark)
