"""``stainlab evaluate``: score methods on the same data and write a report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stainlab.cli import messages
from stainlab.cli.args import add_device_options, key_value, subcommand
from stainlab.transforms import registry


def method_param(text: str) -> tuple[str, str, object]:
    """``METHOD.KEY=VALUE`` as ``(method label, parameter name, parsed value)``."""
    key, value = key_value(text)
    label, dot, name = key.rpartition(".")
    if not dot or not label or not name:
        raise argparse.ArgumentTypeError(f"expected METHOD.KEY=VALUE, e.g. macenko.alpha=2, got {text!r}")
    return label, name, value


def run(args) -> int:
    from stainlab.evaluate import Harness, folder, markdown_table, write_report
    from stainlab.evaluate.datasets import evaluation_data
    from stainlab.evaluate.harness import check_methods, labelled
    from stainlab.io.images import read_image

    out = Path(args.out)
    methods = labelled(args.methods.split(",") if args.methods else registry.normalizers())
    params: dict[str, dict] = {}
    for label, name, value in args.param:
        params.setdefault(label, {})[name] = value
    check_methods(methods, params)
    folder.check(out)  # before a preset is rendered into it
    reference = None
    if args.reference:
        reference, notes = read_image(args.reference)
        for note in notes:
            messages.warn(f"{args.reference}: {note}")
    data = evaluation_data(args.data, args.source, args.seed, out, args.unpaired, reference)
    metric_names = args.metrics.split(",") if args.metrics else None
    semantic = None
    if args.classifier:
        from stainlab.evaluate.semantic import SemanticScorer

        semantic = SemanticScorer.from_classifier(args.classifier, data, args.device)
    harness = Harness(data, out, reference, metric_names, semantic=semantic,
                      reference_source=args.reference or "given",  # else the harness names its default
                      progress=sys.stderr.isatty() and messages.level > messages.QUIET,
                      device=args.device, batch_size=args.batch_size)
    results = harness.evaluate(methods, params)
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
        "default). The reference is -r (a preset's truth is then rendered in its look), else the\n"
        "benchmark's reference.png (a held-out tile in the truth's look), else the truth with the most\n"
        "tissue and the most typical colour (then not scored); the report says which and why. A -r whose\n"
        "tissue colour differs from the truth's is warned about: make a benchmark in its look with\n"
        "`stainlab data make-benchmark --reference REF`.\n"
        "Writes results.json/.csv/.md and report.html (ranked by the first metric, with the reference,\n"
        "a montage and charts). Re-running into the same folder resumes: a method is scored again only\n"
        "when its spec, parameters, files, the reference or the metrics changed; methods no longer asked\n"
        "for leave the report. REPORT_DIR must be new, empty or an earlier report.\n"
        "Networks (learned methods, and the --classifier) run on --device, the methods --batch-size\n"
        "images a call; classical methods run on the CPU. Neither changes the scores (beyond float\n"
        "rounding) or what a re-run resumes.",
        "examples:\n  stainlab evaluate --data long-he -o report/\n"
        "  stainlab evaluate --data long-he --source tiles/ -r my_reference.png -o report/\n"
        "  stainlab evaluate --methods reinhard,macenko --data bench/ -o report/\n"
        "  stainlab evaluate --methods macenko,strong=macenko --param strong.alpha=5 --data bench/ -o report/\n"
        "  stainlab evaluate --methods macenko,fitted/vahadane.json,unet:runs/u/student.safetensors \\\n"
        "      --data bench/ -o report/   # labels: macenko, vahadane.json, unet:student\n"
        "  stainlab evaluate --methods reinhard,unet:runs/u/student.safetensors --data bench/ -o report/ \\\n"
        "      --device cuda --batch-size 8\n"
        "  stainlab evaluate --data understained --source tiles/ --seed 3 -o report/", common)
    parser.add_argument("--data", required=True, metavar="DIR_OR_PRESET",
                        help="paired folder (A/, B/) or a simulator preset name")
    parser.add_argument("--methods", metavar="M1,M2",
                        help="methods to score (default: every normalizer), each a method name, a learned "
                             "KIND:PATH, a fitted .json from `stainlab fit` (scored as saved, with its own "
                             "reference) or LABEL=SPEC to name it (e.g. to score one method twice)")
    parser.add_argument("--param", action="append", type=method_param, default=[], metavar="METHOD.KEY=VALUE",
                        help="a parameter of one method, by its label in --methods: --param macenko.alpha=2 "
                             "(repeatable; an unknown KEY is refused with a list of the method's parameters)")
    parser.add_argument("-r", "--reference", metavar="REF",
                        help="reference image (default: see above); with a preset, the truth is rendered in its look")
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
    add_device_options(parser, "images")
    parser.add_argument("-o", "--out", required=True, metavar="REPORT_DIR", help="report folder")
    parser.set_defaults(run=run)
