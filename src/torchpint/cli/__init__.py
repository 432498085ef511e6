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
70    an unexpected error (a bug): one line; ``TORCHPINT_TRACEBACK=1`` shows the traceback
130   interrupted by SIGINT (Ctrl-C), at the next batch or iteration, checkpoint written
143   stopped by SIGTERM (a scheduler's preemption), the same way
====  ================================================================
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType
from typing import NoReturn

EXIT_OK, EXIT_NOT_CONVERGED, EXIT_USAGE, EXIT_DIVERGED, EXIT_PEER = 0, 1, 2, 3, 4
EXIT_INTERNAL = 70  # EX_SOFTWARE: an unexpected error, never 1
EXIT_INTERRUPTED = 130  # SIGINT, as shells report it (143: SIGTERM)

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "mgrit": ("torchpint.cli.mgrit", "solve a model problem with MGRIT / parareal"),
    "train-mgrit": ("torchpint.cli.train_mgrit",
                    "train a network by MGRIT over its optimizer steps"),
    "train-parareal": ("torchpint.cli.train_parareal", "train a parareal neural network"),
    "train-layer-parallel": ("torchpint.cli.train_layer_parallel",
                             "train a ResNet or a GPT by layer-parallel MGRIT (forward and "
                             "adjoint)"),
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
        "4 a peer rank failed, 70 unexpected error, 130 SIGINT, 143 SIGTERM",
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
    """Run ``torchpint`` with ``argv`` (default: the process's) and return the exit code.
    Called as the process's entry (``argv`` None), a peer failure ends the process at once
    with its code (:func:`~torchpint.runtime.comm.abandon`)."""
    entry = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(argv).parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error argparse printed (2)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    mod: ModuleType = args._module
    return _run(args.command, mod, args, entry)


def _run(command: str, mod: ModuleType, args: argparse.Namespace, entry: bool) -> int:
    import signal

    from torchpint.cli._common import checkpoint_path, fail
    from torchpint.core import DivergenceError
    from torchpint.runtime import signals
    from torchpint.runtime.comm import PeerError, abandon
    from torchpint.runtime.files import claims

    signals.install()
    try:
        with claims():  # the command's checkpoints are free again when it ends
            return int(mod.run(args) or 0)
    except signals.Interrupted as err:
        return fail(command, "interrupted", err, err.exit_code, args)
    except KeyboardInterrupt:
        stopped = signals.Interrupted(signal.SIGINT, checkpoint=checkpoint_path(args))
        return fail(command, "interrupted", stopped, EXIT_INTERRUPTED, args)
    except DivergenceError as err:
        return fail(command, "diverged", err, EXIT_DIVERGED, args)
    except PeerError as err:
        code = fail(command, "a peer rank failed", err, EXIT_PEER, args)
        if entry:  # before the error's frames, holding Gloo's pending work, are freed
            abandon(code)
        return code
    except (ValueError, FileNotFoundError) as err:  # bad input: the library's typed errors
        return fail(command, "error", err, EXIT_USAGE, args)
    except ModuleNotFoundError as err:  # an optional extra that is not installed
        if err.name is not None and err.name.split(".")[0] == "torchpint":
            return _internal(command, err, args)
        return fail(command, "error", err, EXIT_USAGE, args)
    except MemoryError as err:
        return fail(command, "out of memory", _memory_hint(mod, err), EXIT_USAGE, args)
    except RuntimeError as err:
        if _is_out_of_memory(err):
            return fail(command, "out of memory", _memory_hint(mod, err), EXIT_USAGE, args)
        return _internal(command, err, args)
    except Exception as err:  # noqa: BLE001 - the contract: one line and its own code
        return _internal(command, err, args)
    finally:
        signals.uninstall()


def _is_out_of_memory(err: BaseException) -> bool:
    """An allocator's failure: CUDA's OutOfMemoryError or the CPU allocator's message."""
    import torch

    text = str(err).lower()
    return isinstance(err, torch.OutOfMemoryError) or "can't allocate memory" in text \
        or "out of memory" in text


def _memory_hint(mod: ModuleType, err: BaseException) -> str:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    lower = getattr(mod, "MEMORY_HINT", "the problem's size")
    return f"{first}; lower {lower}"


def _internal(command: str, err: BaseException, args: argparse.Namespace) -> int:
    from torchpint.cli._common import fail

    what = f"unexpected error ({type(err).__name__}; TORCHPINT_TRACEBACK=1 shows where)"
    return fail(command, what, err, EXIT_INTERNAL, args)


if __name__ == "__main__":
    sys.exit(main())
