"""The ``torchpint`` command line: a thin dispatcher over subcommand modules.

Each subcommand lives beside the code it drives and exposes two functions:
``add_arguments(parser)`` and ``run(args) -> int``. They are imported lazily, so
``torchpint mgrit`` never pays for the neural-network imports of the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
_COMMANDS: dict[str, tuple[str, str]] = {
    "mgrit": ("torchpint.core.cli", "solve a model problem with MGRIT / parareal"),
    "train-mgrit": ("torchpint.training.cli", "train a network by MGRIT over its optimizer steps"),
    "train-parareal": ("torchpint.parareal.cli", "train a parareal neural network"),
    "demo": ("torchpint.demo", "the main demo on embedded data (no download, no GPU)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchpint", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:  # a subcommand whose module is not built yet
            if err.name is not None and err.name.startswith("torchpint"):
                p.set_defaults(_run=_missing(name, err))
                continue
            raise
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _missing(name: str, err: Exception):
    def run(args: argparse.Namespace) -> int:
        print(f"torchpint {name}: not available ({err})", file=sys.stderr)
        return 2

    return run


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
