"""A character-level text corpus for language models: by default the Python standard
library's own ``.py`` sources, which every machine that runs torchpint has.

The default corpus is the files under ``sysconfig.get_paths()["stdlib"]`` ending in
``.py``, leaving out every ``test``, ``tests``, ``idlelib`` and ``site-packages`` folder,
decoded as UTF-8 (errors replaced), concatenated in sorted relative-path order and cut at
``max_chars``. Its sha256 (of the UTF-8 text) tells whether two machines trained on the
same text. The split is by position (the last ``test_fraction`` is the test text); the
vocabulary is the training text's characters, with one unknown id for the test text's
others. Batches are ``(input chars, next chars)`` windows of ``seq_len``, shuffled by
(seed, epoch) through :class:`~torchpint.data.EpochSampler`.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

DEFAULT_CHARS = 2_000_000
EXCLUDED_DIRS = frozenset({"test", "tests", "idlelib", "site-packages"})
UNKNOWN = 0  # the id of a character the training text does not hold


class CorpusError(ValueError):
    """A corpus file that is missing, unreadable or empty (the message names it)."""


@dataclass(frozen=True)
class Corpus:
    """A text and where it came from: ``"stdlib"`` or a file's path, and its files."""

    text: str
    source: str
    files: int = 1

    @property
    def sha256(self) -> str:
        """The sha256 of the text as UTF-8: equal texts on any machine, equal digests."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def stdlib_files(root: str | os.PathLike | None = None) -> list[Path]:
    """The standard library's ``.py`` files (``root``: its folder, default this Python's),
    relative to it, in sorted order, the excluded folders left out."""
    base = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    found = []
    for folder, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if d not in EXCLUDED_DIRS]
        rel = Path(folder).relative_to(base)
        found += [rel / f for f in files if f.endswith(".py")]
    return sorted(found, key=lambda p: p.as_posix())


def stdlib_corpus(max_chars: int = DEFAULT_CHARS, root: str | os.PathLike | None = None
                  ) -> Corpus:
    """The standard library's sources as one text, at most ``max_chars`` characters."""
    _check_cap(max_chars)
    base = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    parts, size, used = [], 0, 0
    for rel in stdlib_files(base):
        if size >= max_chars:
            break
        try:
            text = (base / rel).read_bytes().decode("utf-8", errors="replace")
        except OSError:  # (a file that vanished or is unreadable: not part of the text)
            continue
        parts.append(text[: max_chars - size])
        size += len(parts[-1])
        used += 1
    if not size:
        raise CorpusError(f"the standard library at {base} holds no .py source to read")
    return Corpus("".join(parts), "stdlib", used)


def file_corpus(path: str | os.PathLike, max_chars: int = DEFAULT_CHARS) -> Corpus:
    """The text of the file at ``path`` (UTF-8, errors replaced), at most ``max_chars``."""
    _check_cap(max_chars)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"corpus file {path}: not found") from None
    except OSError as err:
        raise CorpusError(f"corpus file {path}: cannot be read ({err.strerror or err})") from None
    text = raw.decode("utf-8", errors="replace")[:max_chars]
    if len(text) < 2:
        raise CorpusError(f"corpus file {path}: empty (a text of at least 2 characters "
                          "is needed)")
    return Corpus(text, os.fspath(path))


def _check_cap(max_chars: int) -> None:
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 2:
        raise ValueError(f"max_chars must be an integer >= 2, got {max_chars!r}")


def split_text(text: str, test_fraction: float = 0.1) -> tuple[str, str]:
    """``(train, test)``: the text before and after its last ``test_fraction``, by position."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    cut = len(text) - max(1, round(len(text) * test_fraction))
    if cut < 1:
        raise ValueError(f"a text of {len(text)} characters is too short to split")
    return text[:cut], text[cut:]


class Vocabulary:
    """The training text's characters, sorted, as ids ``1 ..``; id 0 is the unknown one."""

    def __init__(self, text: str) -> None:
        self.chars = sorted(set(text))
        self._ids = {c: i + 1 for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> torch.Tensor:
        """The ids of ``text`` (int64), the unknown id for a character not in the vocabulary."""
        get = self._ids.get
        return torch.tensor([get(c, UNKNOWN) for c in text], dtype=torch.int64)

    def decode(self, ids: torch.Tensor) -> str:
        """The text of ``ids`` (the unknown id as U+FFFD)."""
        return "".join(self.chars[i - 1] if i > 0 else "\ufffd" for i in ids.tolist())


class CharWindows(Dataset):
    """Non-overlapping windows of ``ids``: item ``i`` is ``(ids[a:a+L], ids[a+1:a+L+1])``
    with ``a = i L``, the input characters and the next ones."""

    def __init__(self, ids: torch.Tensor, seq_len: int) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.ids, self.seq_len = ids, int(seq_len)

    def __len__(self) -> int:
        return max(0, (len(self.ids) - 1) // self.seq_len)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        a = i * self.seq_len
        return self.ids[a:a + self.seq_len], self.ids[a + 1:a + self.seq_len + 1]


@dataclass
class TextBundle:
    """Train and test loaders of a corpus, its vocabulary and what identifies the text."""

    corpus: Corpus
    vocab: Vocabulary
    train: DataLoader
    test: DataLoader
    train_chars: int
    test_chars: int
    unknown_test_chars: int

    def describe(self) -> dict[str, object]:
        """What a run's JSON records of its text."""
        return {"source": self.corpus.source, "sha256": self.corpus.sha256,
                "chars": len(self.corpus.text), "files": self.corpus.files,
                "train_chars": self.train_chars, "test_chars": self.test_chars,
                "vocab_size": len(self.vocab), "unknown_test_chars": self.unknown_test_chars}


def text_loaders(corpus: Corpus, *, seq_len: int = 64, batch_size: int = 50, seed: int = 0,
                 test_fraction: float = 0.1, test_batch_size: int | None = None
                 ) -> TextBundle:
    """Training windows in an order keyed by (seed, epoch), the last incomplete batch
    dropped; test windows in order (the test text's last ``< seq_len + 1`` characters left
    out)."""
    from torchpint.data import EpochSampler

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    train_text, test_text = split_text(corpus.text, test_fraction)
    vocab = Vocabulary(train_text)
    train_ids, test_ids = vocab.encode(train_text), vocab.encode(test_text)
    train, test = CharWindows(train_ids, seq_len), CharWindows(test_ids, seq_len)
    if len(train) < batch_size:
        raise ValueError(
            f"the training text ({len(train_text)} characters) makes {len(train)} windows of "
            f"{seq_len + 1}, fewer than a batch of {batch_size}: use a longer text "
            "(--corpus-chars), a shorter --seq-len or a smaller --batch-size")
    if len(test) < 1:
        raise ValueError(
            f"the test text ({len(test_text)} characters, the last {test_fraction:.0%}) is "
            f"shorter than one window of {seq_len + 1}: use a longer text or a shorter "
            "--seq-len")
    sampler = EpochSampler(len(train), seed)
    train_loader = DataLoader(train, batch_size=batch_size, sampler=sampler, drop_last=True)
    test_loader = DataLoader(test, batch_size=test_batch_size or max(batch_size, 256),
                             shuffle=False)
    unknown = int((test_ids == UNKNOWN).sum())
    return TextBundle(corpus, vocab, train_loader, test_loader, len(train_text),
                      len(test_text), unknown)
