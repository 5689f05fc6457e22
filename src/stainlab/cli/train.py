"""``stainlab train RECIPE``: train a learned normalizer or virtual stainer.

One sub-command per recipe of the network registry (:func:`stainlab.networks.recipes`). Each takes the
options of every run (data, run folder, preset, steps, seed, resume, device, ``--set``) and the options
its recipe declares (:attr:`stainlab.training.Recipe.options`), with the recipe's own defaults in their
help. A recipe's options are added when its sub-command is parsed, since reading them imports the recipe
(and torch), which the other commands need not pay for.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

import stainlab.networks as networks
from stainlab.cli import messages
from stainlab.cli.args import key_value, positive_int, subcommand
from stainlab.errors import InputError
from stainlab.precision import PRECISIONS


class _Setting(argparse.Action):
    """Adds ``(setting, value)`` to the list ``--set`` fills, so every recipe setting given on the command
    line, however spelled, arrives in one place; with ``nargs=0`` an on/off switch (``--x``/``--no-x``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        value = not option_string.startswith("--no-") if self.nargs == 0 else values
        namespace.set = [*namespace.set, (self.dest, value)]


def _shown(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value) if value != "" else "none"


def _add_recipe_options(parser: argparse.ArgumentParser, recipe) -> None:
    """``recipe.options`` as ``--SETTING`` with the type and default of its config field, and the
    settings its variants imply (``--ssim-cycle`` sets lambda_cycle to 5)."""
    defaults = {field.name: field.default for field in fields(recipe.config_class)}
    parser.description = f"{recipe.__doc__.strip()}\n\n{parser.description}"
    group = parser.add_argument_group(f"{recipe.name} options",
                                      "defaults are the paper's; any other setting: --set KEY=VALUE")
    for option in recipe.options:
        default = defaults[option.setting]
        implied = [f"{_shown(settings[option.setting])} with --{variant.replace('_', '-')}"
                   for variant, settings in recipe.variants.items() if option.setting in settings]
        text = f"{option.help}; default: {', '.join([_shown(default), *implied])}".replace("%", "%%")
        if isinstance(default, bool):
            group.add_argument(option.flag, f"--no-{option.flag[2:]}", dest=option.setting, action=_Setting,
                               nargs=0, default=argparse.SUPPRESS, help=text)
        else:
            group.add_argument(option.flag, dest=option.setting, action=_Setting, type=type(default),
                               choices=option.choices or None, default=argparse.SUPPRESS, help=text,
                               metavar=option.metavar or (None if option.choices else type(default).__name__.upper()))


class _RecipeParser(argparse.ArgumentParser):
    """A recipe's sub-command; its own options join on first use (see the module docstring)."""

    def __init__(self, *args, recipe: str = "", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.recipe, self._complete = recipe, False

    def parse_known_args(self, args=None, namespace=None):
        if not self._complete:
            from stainlab.training import recipe_class

            _add_recipe_options(self, recipe_class(self.recipe))
            self._complete = True
        return super().parse_known_args(args, namespace)


def _run_options() -> argparse.ArgumentParser:
    """The options every recipe takes."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("run options")
    group.add_argument("--data", metavar="DIR", help="folder with A/ and B/ (or the HEV or BCI layout); needed to "
                                                     "start a run (--resume reads it from RUN_DIR/config.json)")
    group.add_argument("-o", "--out", required=True, metavar="RUN_DIR", help="run folder")
    group.add_argument("--preset", choices=("paper", "tiny"),
                       help="paper: the papers' settings (default); tiny: small and quick, for a CPU")
    group.add_argument("--steps", dest="steps", action=_Setting, type=positive_int, default=argparse.SUPPRESS,
                       help="optimisation steps (default: the preset's); the one setting --resume may change")
    group.add_argument("--seed", type=int, help="random seed (default: 0)")
    group.add_argument("--resume", action="store_true",
                       help="continue the run in RUN_DIR from its checkpoint, with its data and settings")
    group.add_argument("--overwrite", action="store_true", help="start over in a RUN_DIR that holds a run")
    group.add_argument("--device", dest="device", action=_Setting, default=argparse.SUPPRESS,
                       help="torch device, e.g. cpu or cuda (default: cpu); a resumed run may move")
    group.add_argument("--precision", dest="precision", action=_Setting, choices=PRECISIONS,
                       default=argparse.SUPPRESS,
                       help="fp32 (default), or mixed precision: bf16 (CPU, recent GPUs) or fp16 (GPUs, with a "
                            "gradient scaler); losses that need it stay fp32")
    group.add_argument("--nproc", type=positive_int, default=1, metavar="N",
                       help="train in N processes on this machine (one per GPU, or sharing the CPU), each on its "
                            "share of every batch; across machines use torchrun --nproc_per_node N -m stainlab "
                            "train ... instead")
    group.add_argument("--workers", dest="workers", action=_Setting, type=int, default=argparse.SUPPRESS,
                       metavar="N", help="loader processes that decode and augment batches ahead (default: none on "
                                         "the CPU, one per spare core up to 8 for a GPU)")
    group.add_argument("--channels-last", "--no-channels-last", dest="channels_last", action=_Setting, nargs=0,
                       default=argparse.SUPPRESS, help="NHWC memory layout for the convolutions (pays on GPUs)")
    group.add_argument("--compile", "--no-compile", dest="compile", action=_Setting, nargs=0,
                       default=argparse.SUPPRESS, help="torch.compile the networks (slower first steps)")
    group.add_argument("--slide-level", dest="slide_level", action=_Setting, type=int, default=argparse.SUPPRESS,
                       metavar="L", help="training on whole slides (DATA/A, DATA/B of .svs, .ndpi ...): the "
                                         "pyramid level to draw tiles from (default: 0)")
    group.add_argument("--slide-mpp", dest="slide_mpp", action=_Setting, type=float, default=argparse.SUPPRESS,
                       metavar="MPP", help="... or the resolution in microns per pixel (the nearest level)")
    group.add_argument("--set", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                       help="any recipe setting, e.g. --set lr=1e-4 --set batch_size=8 (repeatable)")
    return parent


def _writes(recipe: str) -> str:
    """What ``recipe``'s model files are, from the network registry."""
    uses = dict.fromkeys(f"-m {networks.kind_of(arch, recipe)}" if networks.kind_of(arch, recipe)
                         else networks.use_as(arch, recipe, "FILE") for arch in networks.written_by(recipe))
    return "model files for " + " or ".join(uses)


def run(args) -> int:
    from stainlab.nets.files import read_model_info
    from stainlab.training import TrainingData, resume_run, train
    from stainlab.training.distributed import launched_rank

    overrides = dict(args.set)
    progress = sys.stderr.isatty() and messages.level > messages.QUIET
    data = TrainingData.from_folder(args.data) if args.data else None
    if args.resume and args.overwrite:
        raise InputError("--resume continues the run in RUN_DIR, --overwrite replaces it: choose one")
    if args.resume:
        result = resume_run(args.out, data, recipe=args.recipe, preset=args.preset, seed=args.seed,
                            overrides=overrides, progress=progress, processes=args.nproc)
    elif data is None:
        raise InputError("--data DIR is needed to start a run (only --resume reads it from RUN_DIR/config.json)")
    else:
        result = train(args.recipe, data, args.out, preset=args.preset or "paper", overrides=overrides,
                       seed=args.seed or 0, overwrite=args.overwrite, progress=progress, processes=args.nproc)
    if launched_rank():
        return 0  # under torchrun only rank 0 reports
    last = result.history[-1] if result.history else {}
    losses = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k not in ("step", "epoch", "lr", "seconds"))
    messages.result(f"trained {args.recipe} for {result.step} steps into {result.run_dir} ({losses})")
    for path in result.models.values() if messages.level > messages.QUIET else ():
        print(f"  {path}   use as: {networks.use_as(read_model_info(path)['arch'], args.recipe, path)}")
    return 0


def add(sub, common) -> None:
    train = subcommand(
        sub, "train", "train a learned normalizer or virtual stainer (`stainlab train RECIPE --help`)",
        "Train a network on DATA/A (source look) and DATA/B (target look); pairs when the file names\n"
        "match (ccgan, pcnet, pix2pix and derestainer need them). Defaults are the papers' settings;\n"
        "--preset tiny is a small run for a CPU in minutes. The run folder gets config.json, checkpoint.pt\n"
        "(--resume -o RUN_DIR continues it), log.csv, losses.png, samples/ and the model files\n"
        "(*.safetensors) to use with -m KIND --model. `stainlab train RECIPE --help` lists a recipe's options.",
        "examples:\n  stainlab train cyclegan --data tiles/ -o runs/teacher --skips --ssim-cycle\n"
        "  stainlab train cyclegan --resume -o runs/teacher --steps 80000\n"
        "  stainlab train distill --data tiles/ --teacher runs/teacher -o runs/unet\n"
        "  stainlab train distill --data tiles/ --teacher runs/teacher --student stainnet -o runs/stainnet\n"
        "  stainlab train ccgan --data pairs/ -o runs/ccgan --preset tiny\n"
        "  stainlab train cyclegan --data slides/ --slide-mpp 0.5 -o runs/gan --device cuda --precision bf16\n"
        "  torchrun --nproc_per_node 4 -m stainlab train derestainer --data BCI/ -o runs/bci --device cuda\n"
        "  stainlab normalize tiles/ -m unet --model runs/unet/student.safetensors -o out/", common)
    recipes = train.add_subparsers(dest="recipe", metavar="RECIPE", required=True, parser_class=_RecipeParser)
    options = _run_options()
    for name in networks.recipes():
        recipes.add_parser(name, recipe=name, help=_writes(name), parents=[common, options],
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           description=f"Writes {_writes(name)}.",
                           epilog=f"examples:\n  stainlab train {name} --data DIR -o RUN_DIR --preset tiny\n"
                                  f"  stainlab train {name} --resume -o RUN_DIR --steps N")
    train.set_defaults(run=run)
