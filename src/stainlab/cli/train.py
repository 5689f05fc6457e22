"""``stainlab train RECIPE``: train a learned normalizer or virtual stainer."""

from __future__ import annotations

import sys

from stainlab.cli import messages
from stainlab.cli.args import key_value, positive_int, subcommand


def run(args) -> int:
    from stainlab.training import TrainingData, train

    overrides = dict(args.set)
    for flag in ("steps", "teacher", "student", "device", "ablation", "comparator"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    for flag in ("skips", "ssim_cycle"):
        if getattr(args, flag):
            overrides[flag] = True
    if args.features is not None:
        overrides["features"] = None if args.features == "vgg16" else args.features
    data = TrainingData.from_folder(args.data)
    result = train(args.recipe, data, args.out, preset=args.preset, overrides=overrides, seed=args.seed,
                   resume=args.resume, overwrite=args.overwrite,
                   progress=sys.stderr.isatty() and messages.level > messages.QUIET)
    last = result.history[-1] if result.history else {}
    losses = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k not in ("step", "epoch", "lr", "seconds"))
    messages.result(f"trained {args.recipe} for {result.step} steps into {result.run_dir} ({losses})")
    if args.recipe == "comparator":  # a HER2 classifier, not a transform
        for path in result.models.values():
            print(f"  {path}   use as: train derestainer --comparator {path}, or evaluate --classifier {path}")
        return 0
    kind = {"distill": "unet" if overrides.get("student", "unet") == "unet" else "stainnet"}.get(args.recipe,
                                                                                                args.recipe)
    for path in result.models.values():
        print(f"  {path}   use as: -m {kind} --model {path}")
    return 0


def add(sub, common) -> None:
    train = subcommand(
        sub, "train", "train a learned normalizer (cyclegan, ccgan, pcnet, distill) or virtual stainer "
                      "(derestainer, pix2pix, comparator)",
        "Train a network on DATA/A (source look) and DATA/B (target look); pairs when the file names\n"
        "match (ccgan and pcnet need them). Defaults are the papers' settings; --preset tiny is a small\n"
        "run for a CPU in minutes. The run folder gets config.json, checkpoint.pt (--resume continues it),\n"
        "log.csv, losses.png, samples/ and the model files (*.safetensors) to use with -m KIND --model.",
        "examples:\n  stainlab train cyclegan --data tiles/ -o runs/teacher --skips --ssim-cycle\n"
        "  stainlab train distill --data tiles/ --teacher runs/teacher -o runs/unet\n"
        "  stainlab train distill --data tiles/ --teacher runs/teacher --student stainnet -o runs/stainnet\n"
        "  stainlab train ccgan --data pairs/ -o runs/ccgan --preset tiny\n"
        "  stainlab normalize tiles/ -m unet --model runs/unet/student.safetensors -o out/", common)
    train.add_argument("recipe", choices=("cyclegan", "ccgan", "pcnet", "distill", "pix2pix", "derestainer",
                                          "comparator"), help="what to train")
    train.add_argument("--data", required=True, metavar="DIR", help="folder with A/ and B/ (or the HEV layout)")
    train.add_argument("-o", "--out", required=True, metavar="RUN_DIR", help="run folder")
    train.add_argument("--preset", choices=("paper", "tiny"), default="paper",
                       help="paper: the papers' settings (default); tiny: small and quick, for a CPU")
    train.add_argument("--steps", type=positive_int, help="optimisation steps (default: the preset's)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    train.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its checkpoint")
    train.add_argument("--overwrite", action="store_true", help="start over in a RUN_DIR that holds a run")
    train.add_argument("--skips", action="store_true", help="cyclegan: paper 003's generator with skip connections")
    train.add_argument("--ssim-cycle", action="store_true",
                       help="cyclegan: paper 003's loss L_adv + 5 L_cycle + 5 L_ssim and its schedule")
    train.add_argument("--teacher", metavar="RUN_OR_FILE", help="distill: the trained CycleGAN (run folder)")
    train.add_argument("--student", choices=("unet", "stainnet"), help="distill: the student (default: unet)")
    train.add_argument("--ablation", choices=("full", "no_stain", "no_dab"),
                       help="derestainer: paper 002 Table 1b's ablation (default: full)")
    train.add_argument("--comparator", metavar="FILE|none",
                       help="derestainer: the HER2 classifier of `stainlab train comparator` (L_cmp), or none")
    train.add_argument("--features", metavar="vgg16|random|PATH",
                       help="pcnet: VGG16 weights for the Gram loss (default vgg16: vgg16-397923af.pth in the "
                            "torch cache; random: seeded random VGG16, offline)")
    train.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cpu)")
    train.add_argument("--set", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                       help="any recipe setting, e.g. --set lr=1e-4 --set batch_size=8 (repeatable)")
    train.set_defaults(run=run)
