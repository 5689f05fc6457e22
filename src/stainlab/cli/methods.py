"""``stainlab methods``: every method and learned-model form, with what each needs."""

from __future__ import annotations

from stainlab.cli.args import subcommand
from stainlab.transforms import registry


def run(args) -> int:
    table = registry.methods()
    width = max(map(len, table))
    for name, description in table.items():
        print(f"{name:<{width}}  {description}")
    return 0


def add(sub, common) -> None:
    parser = subcommand(sub, "methods", "list the normalization methods and learned-model kinds",
                        "List every method with a one-line description, and each learned kind (KIND:PATH)\n"
                        "with the model file it needs and the command that trains one.",
                        "example:\n  stainlab methods", common)
    parser.set_defaults(run=run)
