"""What the subcommands share: rank-0 output, JSON files, devices, the process group,
and the one-line failure message of the exit-code contract."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from typing import Any

import torch

from torchpint.runtime.files import claim
from torchpint.runtime.outputs import check_writable, plot_path, write_json


def is_main() -> bool:
    """Rank 0 of the world (torchrun's ``RANK`` before the group is joined), or the only
    process."""
    return _rank() == 0


def say(*args: Any, **kwargs: Any) -> None:
    """``print`` on rank 0 only (every rank runs the same command under torchrun)."""
    if is_main():
        print(*args, **kwargs, flush=True)


def fail(command: str, what: str, err: BaseException | str, code: int,
         args: argparse.Namespace | None = None) -> int:
    """Print ``torchpint COMMAND: WHAT: message`` in one line and return ``code``; a
    diverged run with ``--json`` also records the error there. Under torchrun every rank
    prints its line, prefixed by its rank. ``TORCHPINT_TRACEBACK=1`` prints the traceback
    too, for debugging."""
    if os.environ.get("TORCHPINT_TRACEBACK") and isinstance(err, BaseException):
        import traceback

        traceback.print_exception(err, file=sys.stderr)
    text = " ".join(str(err).split()) if isinstance(err, BaseException) else str(err)
    from torchpint.runtime.comm import world_size

    per_rank = world_size() > 1  # under torchrun every worker says why it stopped
    if is_main() or per_rank:
        who = f"[rank {_rank()}] " if per_rank else ""
        print(f"torchpint {command}: {who}{what}: {text}", file=sys.stderr, flush=True)
    path = getattr(args, "json", None)
    if is_main() and path and what == "diverged":
        try:
            write_json(path, {"diverged": True, "error": str(err)})
        except ValueError as werr:
            print(f"torchpint {command}: error: {werr}", file=sys.stderr, flush=True)
    return code


def _rank() -> int:
    from torchpint.runtime.comm import world_rank

    return world_rank()


def save_outputs(args: argparse.Namespace, data: Any, plot: Callable[[str], None]) -> None:
    """Rank 0 writes ``data`` to ``--json`` and calls ``plot(path)`` for ``--plot`` (the
    path as :func:`check_outputs` resolved it), each written atomically."""
    if not is_main():
        return
    if getattr(args, "json", None):
        write_json(args.json, data)
        say(f"wrote {args.json}")
    if getattr(args, "plot", None):
        plot(args.plot)
        say(f"wrote {args.plot}")


def bounded(kind: type = float, low: float | None = None, high: float | None = None, *,
            low_open: bool = False, high_open: bool = False) -> Callable[[str], Any]:
    """An argparse ``type`` that parses ``kind`` (int or a finite float) within bounds, so a
    value that would be replaced, ignored or poison a run is refused at parse time."""
    lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
    want = " and ".join(x for x in (lo, hi) if x)
    noun = "a whole number" if kind is int else "a finite number"
    need = f"{noun} {want}".strip()

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {need}, got {text!r}") from None
        bad = kind is float and not math.isfinite(value)
        if low is not None:
            bad = bad or value < low or (low_open and value == low)
        if high is not None:
            bad = bad or value > high or (high_open and value == high)
        if bad:
            raise argparse.ArgumentTypeError(f"must be {need}, got {text!r}")
        return value

    return parse


POSITIVE = bounded(float, 0, low_open=True)
COUNT = bounded(int, 1)  # a count of steps, iterations, epochs, threads...


def checkpoint_path(args: argparse.Namespace) -> str | None:
    """The subcommand's ``--checkpoint``: a file, or a folder of one file per model."""
    return getattr(args, "checkpoint", None) or getattr(args, "checkpoint_dir", None)


def check_outputs(args: argparse.Namespace) -> None:
    """Before any work: every output option of the subcommand can be written, ``--resume``
    has a checkpoint to continue, and no other live run writes the same checkpoint."""
    saved = checkpoint_path(args)
    if getattr(args, "resume", False) and not saved:
        flag = "--checkpoint PATH" if hasattr(args, "checkpoint") else "--checkpoint DIR"
        raise ValueError(f"--resume needs {flag} (the run to continue)")
    for name in ("json", "plot", "checkpoint"):
        check_writable(getattr(args, name, None))
    if getattr(args, "plot", None):
        args.plot = str(plot_path(args.plot))  # a format matplotlib writes, .png if none
    for name in ("checkpoint_dir", "out"):
        check_writable(getattr(args, name, None), folder=True)
    if saved and is_main():
        claim(saved)  # a second live run writing the same checkpoint is refused now


class _Deprecated(argparse.Action):
    """An old spelling of an option: sets the new option's value (converted where the old
    one counted differently) and says, once, on stderr, what to write instead."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str,
                 convert: Callable[[Any], Any] | None = None, note: str = "",
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new, self.convert, self.note = new, convert, note

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if is_main():
            print(f"torchpint: warning: {option_string} is deprecated; use {self.new}"
                  f"{self.note}", file=sys.stderr, flush=True)
        setattr(namespace, self.dest, self.convert(values) if self.convert else values)


def deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str, dest: str,
                     convert: Callable[[Any], Any] | None = None, note: str = "",
                     **kwargs: Any) -> None:
    """Keep ``old`` working as a deprecated spelling of ``new`` (stored in ``dest``), so
    existing scripts keep running; hidden from ``--help``."""
    parser.add_argument(old, dest=dest, action=_Deprecated, new=new, convert=convert,
                        note=note, help=argparse.SUPPRESS, **kwargs)


def add_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout", type=POSITIVE, default=300.0,
        help="seconds a rank waits for its peers before it fails with an error (a peer "
        "died or hung; default 300)",
    )


def parse_devices(spec: str | None) -> list[torch.device] | None:
    """``"cuda:0,cuda:1"`` / ``"0,1"`` / ``"cpu"`` -> devices, checked to exist."""
    from torchpint.common.devices import resolve_device

    if spec is None or not spec.strip():
        return None
    return [resolve_device(item) for item in spec.split(",")]


def local_rank() -> int:
    """This process's rank on its machine under torchrun (0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", 0)))


def add_data_arguments(group: Any) -> None:
    """The data options of the training commands (on a parser or an argument group)."""
    from torchpint.data import AUGMENT_CHOICES, DATASET_NAMES, FILE_SPECS

    fashion = FILE_SPECS["fashion-mnist"]
    a = group.add_argument
    a("--dataset", default="digits", choices=DATASET_NAMES,
      help="digits and shapes are embedded; fashion-mnist is read from "
      f"{fashion.default_root} (apt-get install {fashion.package}) or --data-root; mnist, "
      "kmnist, cifar10, cifar100 and svhn from --data-root (default digits)")
    a("--data-root", default=None, metavar="DIR",
      help="folder holding the data set's files (never downloaded; layouts in docs/data.md)")
    a("--image-size", type=COUNT, default=None,
      help="input size (default: digits 16, shapes 32, else the data set's own)")
    a("--augment", nargs="?", const="standard", default="none", choices=AUGMENT_CHOICES,
      metavar="KIND",
      help="augment the training images of the sets read from files: standard (the flag "
      "alone: random crop padded by size/8, plus horizontal flips except for digits: "
      "mnist, kmnist, svhn), crop, flip, crop+flip or none (default none)")
    a("--workers", type=bounded(int, 0), default=0,
      help="DataLoader worker processes (default 0: load in the training process)")


def data_options(args: argparse.Namespace) -> dict[str, Any]:
    """``make_loaders``' keywords from the data options, refusing an ``--augment`` that
    would be ignored."""
    from torchpint.data import EMBEDDED

    augment = getattr(args, "augment", "none")
    if args.dataset in EMBEDDED and augment != "none":
        raise ValueError(f"--augment applies to the data sets read from files; {args.dataset} "
                         "is embedded, fixed tensors")
    return {"data_root": args.data_root, "image_size": args.image_size, "augment": augment,
            "num_workers": getattr(args, "workers", 0)}


def data_run_fields(args: argparse.Namespace) -> dict[str, Any]:
    """What the data options add to a run's fingerprint: the augmentation, when there is
    one (so checkpoints of runs without it still resume)."""
    augment = getattr(args, "augment", "none")
    return {} if augment == "none" else {"augment": augment}
