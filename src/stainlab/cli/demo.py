"""``stainlab demo``: every method on scikit-image's real IHC image, with a montage and scores."""

from __future__ import annotations

from pathlib import Path

from stainlab.cli.args import subcommand


def run(args) -> int:
    from stainlab import demo

    demo.run(Path(args.out), learned=args.learned)
    return 0


def add(sub, common) -> None:
    parser = subcommand(
        sub, "demo", "run every method on scikit-image's IHC image and write a montage",
        "Re-stain crops of scikit-image's real IHC image (haematoxylin + DAB) to known wrong looks,\n"
        "normalize them back with every method, and write the outputs, a montage PNG and a\n"
        "summary.json with the time per image and CIEDE2000 to the exact ground truth.",
        "example:\n  stainlab demo --out stainlab-demo", common)
    parser.add_argument("--out", default="stainlab-demo", metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument("--learned", action="store_true",
                        help="also train tiny learned normalizers (CycleGAN teacher, U-Net student; ~2 min on a CPU)")
    parser.set_defaults(run=run)
