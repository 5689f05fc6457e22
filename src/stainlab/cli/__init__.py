"""The ``stainlab`` command line: thin commands, one module each, over library functions.

``stainlab methods | fit | normalize | slide | evaluate | train | data make-benchmark | demo``. Each
module in this package adds its sub-command (``add``) and runs it (``run``) by calling the library:
:mod:`stainlab.build` makes the transform, :mod:`stainlab.batch` plans, runs and resumes many files,
and the rest lives in its own package. Problems are reported one line each as ``stainlab: error:
FILE: reason`` (``--debug`` adds tracebacks, ``--quiet`` prints errors only, ``-v`` every detail).
:func:`main` returns the exit status, so tests and scripts can call it directly.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings

from stainlab import __version__
from stainlab.batch import describe_error
from stainlab.cli import data, demo, evaluate, fit, messages, methods, normalize, slide, train
from stainlab.cli.args import common_options
from stainlab.threads import free_cores, limit_threads

COMMANDS = (methods, fit, normalize, slide, evaluate, train, data, demo)

EPILOG = """\
examples:
  stainlab methods
  stainlab normalize tiles/ -m macenko -r reference.png -o normalized/
  stainlab fit -m vahadane -r ref1.png -r ref2.png -o vahadane.json
  stainlab normalize tiles/ -t vahadane.json -o normalized/ --workers 4
  stainlab slide case1.svs -t vahadane.json -o slides/
  stainlab demo

Images are read as 8-bit RGB: grey is replicated, 16-bit scaled (x/257), alpha dropped when opaque or
composited on white; each conversion is reported. Inputs are never modified; outputs are written
atomically. Run `stainlab COMMAND --help` for the options of each command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=messages.PROG, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        parents=[common_options()],
        description="Stain normalization and virtual staining of histology images: map H&E or IHC colours "
                    "onto a reference\nappearance with classical methods or trained networks, over tiles, "
                    "whole slides and cohorts.")
    parser.add_argument("--version", action="version", version=f"{messages.PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = common_options()
    for command in COMMANDS:
        command.add(sub, common)
    return parser


def main(argv=None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, usage errors
        return int(done.code or 0)
    debug = getattr(args, "debug", False)
    args.debug = debug
    args.threads = limit_threads(getattr(args, "threads", None) or free_cores())
    messages.level = (messages.QUIET if getattr(args, "quiet", False)
                      else messages.VERBOSE if getattr(args, "verbose", False) else messages.NORMAL)
    notes = messages.Notes()  # library warnings read as stainlab's one-line warnings, each kind once
    try:
        with warnings.catch_warnings():
            warnings.showwarning = lambda message, *_, **__: notes.add_message(str(message))
            return args.run(args)
    except KeyboardInterrupt:
        messages.error("interrupted; run the same command again to resume (finished outputs are kept)")
        return 130
    except Exception as err:
        messages.error(describe_error(err))
        if debug:
            traceback.print_exc()
        return 1
    finally:
        notes.summary()
        messages.level = messages.NORMAL


if __name__ == "__main__":
    sys.exit(main())
