"""``stainlab evaluate``: score methods on the same data and write a report."""

from __future__ import annotations

import sys
from pathlib import Path

from stainlab.cli import messages
from stainlab.cli.args import subcommand
from stainlab.transforms import registry


def run(args) -> int:
    from stainlab.evaluate import Harness, markdown_table, write_report
    from stainlab.evaluate.datasets import evaluation_data
    from stainlab.io.images import read_image

    out = Path(args.out)
    data = evaluation_data(args.data, args.source, args.seed, out, args.unpaired)
    reference = None
    if args.reference:
        reference, notes = read_image(args.reference)
        for note in notes:
            messages.warn(f"{args.reference}: {note}")
    methods = args.methods.split(",") if args.methods else registry.normalizers()
    metric_names = args.metrics.split(",") if args.metrics else None
    semantic = None
    if args.classifier:
        from stainlab.evaluate.semantic import SemanticScorer

        semantic = SemanticScorer.from_classifier(args.classifier, data)
    harness = Harness(data, out, reference, metric_names, semantic=semantic,
                      progress=sys.stderr.isatty() and messages.level > messages.QUIET)
    results = harness.evaluate(methods)
    files = write_report(results, out)
    if messages.level > messages.QUIET:
        print(markdown_table(results), end="")
    for row in results["table"]:
        if row["error"]:
            messages.error(f"{row['method']}: {row['error']}")
    messages.result(f"report {files['html']}; tables {files['csv']}, {files['markdown']}, {files['json']}")
    return 1 if any(row["error"] for row in results["table"]) else 0


def add(sub, common) -> None:
    parser = subcommand(
        sub, "evaluate", "score methods against ground truth and write a report",
        "Run each method on the same paired data (A/ = inputs, B/ = ground truth) and score it against\n"
        "the truth (PSNR, SSIM, CIEDE2000, MAE), with the unnormalized inputs as the baseline. DATA is\n"
        "such a folder, or a simulator preset rendered from --source (scikit-image's IHC image by\n"
        "default). The reference is -r, or the ground truth of the first pair (then not scored).\n"
        "Writes results.json/.csv/.md and report.html with a montage and charts; re-running resumes.",
        "examples:\n  stainlab evaluate --data long-he -o report/\n"
        "  stainlab evaluate --methods reinhard,macenko --data bench/ -r ref.png -o report/\n"
        "  stainlab evaluate --data understained --source tiles/ --seed 3 -o report/", common)
    parser.add_argument("--data", required=True, metavar="DIR_OR_PRESET",
                        help="paired folder (A/, B/) or a simulator preset name")
    parser.add_argument("--methods", metavar="M1,M2", help="methods to score (default: every normalizer)")
    parser.add_argument("-r", "--reference", metavar="REF", help="reference image (default: see above)")
    parser.add_argument("--source", action="append", metavar="IMG_OR_DIR",
                        help="real tissue for a preset (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="simulator seed for a preset (default: 0)")
    parser.add_argument("--metrics", metavar="M1,M2",
                        help="metrics: psnr, ssim, ciede2000, mae, wasserstein (default: the first four "
                             "for pairs, wasserstein for unpaired data)")
    parser.add_argument("--unpaired", action="store_true",
                        help="A/ and B/ are not pixel-aligned: score outputs by colour distance to B/ "
                             "(the HEV layout, HE/ and Long HE/, is recognised by itself)")
    parser.add_argument("--classifier", metavar="FILE",
                        help="virtual stainers on BCI-layout data (HE/test, IHC/test): paper 002's HER2-level "
                             "scores (top-1/3/5, kNN-10) and a perceptual hash with this `stainlab train "
                             "comparator` model file, a separate one from the training comparator")
    parser.add_argument("-o", "--out", required=True, metavar="REPORT_DIR", help="report folder")
    parser.set_defaults(run=run)
