"""``stainlab fit``: fit a method to reference images and save it as JSON."""

from __future__ import annotations

from pathlib import Path

from stainlab.cli import messages
from stainlab.cli.args import add_method_options, subcommand, transform_from
from stainlab.errors import InputError


def run(args) -> int:
    out = Path(args.out)
    if out.suffix != ".json":
        raise InputError(f"{out}: a fitted transform is saved as .json")
    if out.exists() and not args.overwrite:
        raise InputError(f"{out}: exists (use --overwrite to replace it)")
    transform = transform_from(args)
    transform.save(out)
    messages.result(f"fitted {transform!r}; saved to {out}")
    return 0


def add(sub, common) -> None:
    parser = subcommand(
        sub, "fit", "fit a method to reference images and save it as JSON",
        "Fit a method to one or more reference images and save the fitted transform as JSON, to\n"
        "normalize later runs to exactly the same target with `stainlab normalize -t FITTED.json`.",
        "examples:\n  stainlab fit -m macenko -r reference.png -o macenko.json\n"
        "  stainlab fit -m reinhard -r refs/ --param mask=true -o reinhard-masked.json", common)
    add_method_options(parser, reference_required=False, fitted=False)
    parser.add_argument("-o", "--out", required=True, metavar="FITTED.json", help="where to save the transform")
    parser.add_argument("--overwrite", action="store_true", help="replace FITTED.json if it exists")
    parser.set_defaults(run=run)
