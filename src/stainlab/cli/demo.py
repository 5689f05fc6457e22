"""``stainlab demo``: every method on scikit-image's real IHC image, with a montage and scores."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from stainlab.cli import messages
from stainlab.cli.args import subcommand


def run(args) -> int:
    from stainlab import demo

    with contextlib.redirect_stdout(io.StringIO()) if messages.level == messages.QUIET else contextlib.nullcontext():
        demo.run(Path(args.out), learned=args.learned, teacher_student=args.teacher_student)
    return 0


def add(sub, common) -> None:
    parser = subcommand(
        sub, "demo", "run every method on scikit-image's IHC image and write a montage",
        "Re-stain crops of scikit-image's real IHC image (haematoxylin + DAB) to known wrong looks,\n"
        "normalize them back with every method, and write the outputs, a montage PNG and a\n"
        "summary.json with the time per image and CIEDE2000 to the exact ground truth.",
        "examples:\n  stainlab demo --out stainlab-demo\n  stainlab demo --learned --out stainlab-demo", common)
    parser.add_argument("--out", default="stainlab-demo", metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument("--learned", action="store_true",
                        help="also train a StainNet per look on the other quarters of the image and score it on "
                             "the quarter it never saw (seconds on a CPU)")
    parser.add_argument("--teacher-student", action="store_true",
                        help="also run paper 000's workflow at the tiny preset (CycleGAN teacher, U-Net student) "
                             "into a second montage: minutes on a CPU, not converged at that size")
    parser.set_defaults(run=run)
