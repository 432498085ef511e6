"""``torchpint train-layer-parallel --model gpt``: a character-level GPT whose blocks are
solved by layer-parallel MGRIT, forward and adjoint.

Each pre-norm transformer block is one layer (one time step, ``--layers`` of them); the
embeddings are ``open``, the final norm and head ``close``. The text is the Python standard
library's own sources by default (every machine has them; their sha256 is printed and
stored, so runs on other Pythons can be compared) or ``--corpus PATH``; the last 10% is
the test text. ``--serial-baseline`` trains the same GPT by exact serial backprop from the
same initial weights on the same batches. Test loss is in nats per character.
"""

from __future__ import annotations

import argparse
import platform
from typing import Any

import torch

from torchpint.cli._common import COUNT, bounded, say
from torchpint.data.corpus import DEFAULT_CHARS, file_corpus, stdlib_corpus, text_loaders

MODELS = ("conv_resnet", "gpt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model`` and the options of ``--model gpt``."""
    parser.add_argument(
        "--model", choices=MODELS, default="conv_resnet",
        help="conv_resnet (default: a convolutional ResNet on --dataset) or gpt (a "
        "character-level transformer on a text, one block per layer)")
    g = parser.add_argument_group("--model gpt")
    a = g.add_argument
    a("--corpus", default=None, metavar="PATH",
      help="a UTF-8 text file (default: the Python standard library's .py sources, without "
      "test, tests, idlelib and site-packages folders, in sorted path order)")
    a("--corpus-chars", type=bounded(int, 2), default=DEFAULT_CHARS,
      help=f"characters of the text kept, its last 10%% for testing (default {DEFAULT_CHARS:,})")
    a("--seq-len", type=COUNT, default=64, help="characters per window (default 64)")
    a("--width", type=COUNT, default=64, help="width of the residual stream (default 64)")
    a("--heads", type=COUNT, default=4, help="attention heads; divides --width (default 4)")
    a("--dropout", type=bounded(float, 0, 1, high_open=True), default=0.0,
      help="dropout of the embeddings, attention and both branches; each block's masks "
      "are keyed by (batch, block), the same in every MGRIT iteration (default 0)")


def check_options(args: argparse.Namespace) -> None:
    """Refuse an option of the other model, which would be ignored."""
    if args.model == "gpt":
        given = [flag for flag, on in (
            ("--dataset", args.dataset != "digits"), ("--data-root", args.data_root),
            ("--image-size", args.image_size),
            ("--augment", getattr(args, "augment", "none") != "none")) if on]
        if given:
            raise ValueError(f"{', '.join(given)} applies to --model conv_resnet; --model gpt "
                             "trains on --corpus (default: the standard library's sources)")
    else:
        given = [flag for flag, on in (
            ("--corpus", args.corpus), ("--corpus-chars", args.corpus_chars != DEFAULT_CHARS),
            ("--seq-len", args.seq_len != 64), ("--width", args.width != 64),
            ("--heads", args.heads != 4), ("--dropout", args.dropout != 0)) if on]
        if given:
            raise ValueError(f"{', '.join(given)} applies to --model gpt")
    if args.width % args.heads:
        raise ValueError(f"--width {args.width} must be a multiple of --heads {args.heads}")


def build(args: argparse.Namespace, options: dict[str, Any], device: torch.device
          ) -> tuple[Any, Any, dict[str, Any], str, dict[str, Any]]:
    """The GPT as LayerParallel (``options``: the solver's and the ranks'), its text's
    loaders, the run's identity, a few words for the log and the text's description."""
    from torchpint.layerparallel import gpt_layer_parallel

    corpus = (file_corpus(args.corpus, args.corpus_chars) if args.corpus
              else stdlib_corpus(args.corpus_chars))
    data = text_loaders(corpus, seq_len=args.seq_len, batch_size=args.batch_size,
                        seed=args.seed)
    torch.manual_seed(args.seed)
    net = gpt_layer_parallel(len(data.vocab), args.layers, args.width, args.heads,
                             args.seq_len, args.dropout, **options).to(device)
    text = {**data.describe(), "python": platform.python_version()}
    run_id = {"model": "gpt", "steps": args.layers, "width": args.width, "heads": args.heads,
              "seq_len": args.seq_len, "dropout": args.dropout, "T": args.T,
              "corpus_sha256": corpus.sha256, "batch_size": args.batch_size}
    source = "the standard library" if text["source"] == "stdlib" else text["source"]
    say(f"corpus: {source} (Python {text['python']}), {text['chars']:,} characters from "
        f"{text['files']} file(s), sha256 {text['sha256']}; vocabulary {text['vocab_size']}, "
        f"{text['unknown_test_chars']} unknown test characters")
    what = (f"GPT of N={args.layers} blocks, width {args.width}, {args.heads} heads, windows "
            f"of {args.seq_len}")
    return net, data, run_id, what, {"corpus": text}
