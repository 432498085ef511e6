"""The ``torchpint`` command line: a thin dispatcher over one module per subcommand.

Each subcommand module gives ``add_arguments(parser)`` and ``run(args) -> int``. Only the
invoked subcommand's module is imported (``torchpint --help`` imports none), and every
subcommand shares one exit-code contract, applied here from the exception's type:

====  ================================================================
0     success
1     the solver did not converge within its iteration budget
2     bad usage or input (a one-line message, no traceback)
3     diverged (NaN/inf, a growing residual or state)
4     a peer rank died, hung or closed its connection
130   interrupted (Ctrl-C); the checkpoint written so far is kept
====  ================================================================
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType
from typing import NoReturn

EXIT_OK, EXIT_NOT_CONVERGED, EXIT_USAGE, EXIT_DIVERGED, EXIT_PEER = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130  # SIGINT, as shells report it

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "mgrit": ("torchpint.cli.mgrit", "solve a model problem with MGRIT / parareal"),
    "train-mgrit": ("torchpint.cli.train_mgrit",
                    "train a network by MGRIT over its optimizer steps"),
    "train-parareal": ("torchpint.cli.train_parareal", "train a parareal neural network"),
    "train-layer-parallel": ("torchpint.cli.train_layer_parallel",
                             "train a ResNet by layer-parallel MGRIT (forward and adjoint)"),
    "demo": ("torchpint.cli.demo", "the main demo on embedded data (no download, no GPU)"),
}


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (what was wrong and where to look), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the subcommand named in ``argv`` gets its options (and imports)."""
    parser = _Parser(
        prog="torchpint",
        description="Parallel-in-time deep learning on PyTorch.",
        epilog="exit codes: 0 success, 1 not converged, 2 bad usage or input, 3 diverged, "
        "4 a peer rank failed, 130 interrupted",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = next((a for a in (argv or []) if not a.startswith("-")), None)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == wanted:
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``torchpint`` with ``argv`` (default: the process's) and return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(argv).parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error argparse printed (2)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    mod: ModuleType = args._module
    return _run(args.command, mod, args)


def _run(command: str, mod: ModuleType, args: argparse.Namespace) -> int:
    from torchpint.cli._common import fail
    from torchpint.core import DivergenceError, RankTimeoutError

    try:
        return int(mod.run(args) or 0)
    except KeyboardInterrupt:
        saved = getattr(args, "checkpoint", None) or getattr(args, "checkpoint_dir", None)
        where = (f"checkpoint at {saved}, resume with --resume" if saved else
                 "nothing saved (--checkpoint / --checkpoint-dir keep progress)")
        return fail(command, "interrupted", where, EXIT_INTERRUPTED, args)
    except DivergenceError as err:
        return fail(command, "diverged", err, EXIT_DIVERGED, args)
    except RankTimeoutError as err:
        return fail(command, "a peer rank failed", err, EXIT_PEER, args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        return fail(command, "error", err, EXIT_USAGE, args)
    except ModuleNotFoundError as err:  # an optional extra that is not installed
        if err.name is not None and err.name.split(".")[0] == "torchpint":
            raise
        return fail(command, "error", err, EXIT_USAGE, args)


if __name__ == "__main__":
    sys.exit(main())
