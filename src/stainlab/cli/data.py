"""``stainlab data make-benchmark``: pixel-aligned pairs rendered by the restaining simulator."""

from __future__ import annotations

from stainlab.cli import messages
from stainlab.cli.args import subcommand


def run_make_benchmark(args) -> int:
    from stainlab.data.benchmark import make_benchmark

    out = make_benchmark(args.source, args.preset, args.out, args.seed, mode=args.mode,
                         levels=args.level, split=args.split, overwrite=args.overwrite)
    messages.result(f"wrote a {args.mode} benchmark ({args.preset if args.mode == 'restain' else 'H&E -> IHC'}, "
                    f"seed {args.seed}) to {out}")
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
        "parameters. --mode ihc writes H&E -> IHC pairs in the BCI layout (HE/, IHC/) instead.",
        "examples:\n  stainlab data make-benchmark --preset long-he --source tiles/ --out bench/\n"
        "  stainlab data make-benchmark --mode ihc --source he_tiles/ --level 2+ --out bci/", common)
    bench.add_argument("--preset", default="long-he", help="simulator preset (default: %(default)s)")
    bench.add_argument("--source", required=True, action="append", metavar="IMG_OR_DIR",
                       help="real tissue images or folders (repeatable)")
    bench.add_argument("--out", required=True, metavar="DIR", help="output folder")
    bench.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    bench.add_argument("--mode", choices=("restain", "ihc"), default="restain", help="pair kind")
    bench.add_argument("--level", choices=("0", "1+", "2+", "3+"), help="HER2 level for --mode ihc "
                       "(default: drawn from the seed)")
    bench.add_argument("--split", default="train", help="BCI split name for --mode ihc (default: train)")
    bench.add_argument("--overwrite", action="store_true", help="replace an existing benchmark folder")
    bench.set_defaults(run=run_make_benchmark)
