"""Argument types and option groups that several commands share, spelled the same everywhere."""

from __future__ import annotations

import argparse
import json


def parse_value(text: str):
    """``true``/``false``/``none`` and JSON numbers or lists become Python values; anything else a string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def key_value(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` as ``(key, parsed value)``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), parse_value(value.strip())


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def common_options() -> argparse.ArgumentParser:
    """The options every command takes: ``--debug``, ``--quiet`` and ``-v``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks for errors")
    loudness = common.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                          help="print errors only: no progress bar, warnings or summary")
    loudness.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                          help="print every per-file note instead of one line per kind")
    common.add_argument("--threads", type=positive_int, default=argparse.SUPPRESS, metavar="N",
                        help="compute threads in all (default: the cores not already busy)")
    return common


def subcommand(sub, name: str, help_: str, description: str, epilog: str, common) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_, description=description, epilog=epilog, parents=[common],
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def add_method_options(parser: argparse.ArgumentParser, reference_required: bool = False,
                       fitted: bool = True) -> None:
    """``-m METHOD``, ``--model``, ``-r REF``, ``--param`` (and ``-t FITTED.json`` with ``fitted``): the
    transform, as :func:`stainlab.build.build_transform` takes it."""
    parser.add_argument("-m", "--method", metavar="METHOD",
                        help="method name, or KIND:PATH for a learned model (see `stainlab methods`)")
    parser.add_argument("--model", metavar="PATH",
                        help="model file of a learned method: -m unet --model run/student.safetensors is "
                             "-m unet:run/student.safetensors (so is --model unet:run/student.safetensors)")
    if fitted:
        parser.add_argument("-t", "--transform", metavar="FITTED.json",
                            help="a transform saved by `stainlab fit` (holds method, parameters and reference)")
    parser.add_argument("-r", "--reference", action="append", metavar="REF", required=reference_required,
                        help="reference image, slide or folder giving the target appearance; repeat to fit on "
                             "several (pooled; large slides are sampled over their tissue)")
    parser.add_argument("--param", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                        help="method parameter, e.g. --param mask=true or --param lut_bits=8 (repeatable)")


def device_name(text: str) -> str:
    """A torch device that works here (``cpu``, ``cuda``, ``cuda:1``...), else a usage error (exit status 2)
    with the reason of :func:`stainlab.nets.devices.torch_device`, before any work."""
    from stainlab.errors import InputError
    from stainlab.nets.devices import torch_device

    try:
        torch_device(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def add_device_options(parser: argparse.ArgumentParser, batches: str | None = None) -> None:
    """``--device`` and, where windows are ``batches`` (what they are, for the help), ``--batch-size``:
    where a network runs (:func:`stainlab.build.run_on`)."""
    parser.add_argument("--device", type=device_name, metavar="DEVICE",
                        help="where a network runs: cpu (default), cuda, cuda:1, mps; an unavailable device is "
                             "refused before any work; classical methods run on the CPU (a GPU asked for them is "
                             "ignored with a warning); the outputs, and so a resumed run's finished work, do not "
                             "depend on it")
    if batches:
        parser.add_argument("--batch-size", type=positive_int, metavar="N",
                            help=f"{batches} per network call (default: on a GPU as many as fit in half its free "
                                 "memory, capped; on the CPU one, as batches were no faster there)")


def transform_from(args, read=None):
    """The transform of :func:`add_method_options`' options (and :func:`add_device_options`', if added)."""
    from stainlab.build import build_transform

    return build_transform(args.method, args.model, getattr(args, "transform", None), dict(args.param),
                           args.reference or [], read, getattr(args, "device", None), getattr(args, "batch_size", None))
