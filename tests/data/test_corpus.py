"""The character corpus: the standard library's sources by rule, a file, the split by
position, the vocabulary with its unknown id, and deterministic windows."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
import torch

from torchpint.data.corpus import (
    UNKNOWN,
    CharWindows,
    Corpus,
    CorpusError,
    Vocabulary,
    file_corpus,
    split_text,
    stdlib_corpus,
    stdlib_files,
    text_loaders,
)


def test_stdlib_corpus_is_deterministic_and_capped():
    a, b = stdlib_corpus(50_000), stdlib_corpus(50_000)
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    assert len(a.text) == 50_000 and a.source == "stdlib" and a.files >= 1
    assert stdlib_corpus(10_000).text == a.text[:10_000]  # a prefix: the order is fixed


def test_stdlib_files_leave_out_the_named_folders_in_sorted_order():
    files = stdlib_files()
    assert files and all(p.suffix == ".py" for p in files)
    names = [p.as_posix() for p in files]
    assert names == sorted(names)
    for p in files:
        assert not {"test", "tests", "idlelib", "site-packages"} & set(p.parts[:-1]), p
    root = Path(sysconfig.get_paths()["stdlib"])
    assert Path("os.py") in files and (root / "os.py").exists()


def test_stdlib_corpus_from_a_folder_of_our_own(tmp_path):
    (tmp_path / "b.py").write_text("bb")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.py").write_text("ax")
    (tmp_path / "a.py").write_bytes(b"a\xff")  # not UTF-8: replaced
    for skip in ("test", "tests", "idlelib", "site-packages"):
        (tmp_path / "a" / skip).mkdir()
        (tmp_path / "a" / skip / "s.py").write_text("SKIPPED")
    (tmp_path / "notes.txt").write_text("not python")
    c = stdlib_corpus(100, root=tmp_path)
    assert c.text == "a\ufffd" + "ax" + "bb" and c.files == 3  # a.py < a/x.py < b.py
    assert stdlib_corpus(3, root=tmp_path).text == "a\ufffda"


def test_file_corpus_and_its_errors(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("hello world\n" * 10)
    c = file_corpus(path, 20)
    assert c.text == ("hello world\n" * 2)[:20] and c.source == str(path)
    with pytest.raises(CorpusError, match="missing.txt: not found"):
        file_corpus(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(CorpusError, match="empty.txt: empty"):
        file_corpus(tmp_path / "empty.txt")
    with pytest.raises(CorpusError, match="cannot be read"):
        file_corpus(tmp_path)  # a folder
    assert issubclass(CorpusError, ValueError)  # bad input: exit code 2


def test_split_by_position_and_unknown_test_chars():
    train, test = split_text("abcdefghij" * 10)
    assert train == ("abcdefghij" * 10)[:90] and test == "abcdefghij"
    vocab = Vocabulary("abca")
    assert len(vocab) == 4 and vocab.chars == ["a", "b", "c"]
    ids = vocab.encode("abz")
    assert ids.tolist() == [1, 2, UNKNOWN]
    assert vocab.decode(ids) == "ab\ufffd"


def test_windows_are_inputs_and_next_chars_in_a_seeded_order():
    ids = torch.arange(23)
    w = CharWindows(ids, 5)
    assert len(w) == 4
    x, y = w[1]
    assert x.tolist() == [5, 6, 7, 8, 9] and y.tolist() == [6, 7, 8, 9, 10]
    text = "".join(chr(ord("a") + i % 7) for i in range(2000)) + "XYZ" * 20
    corpus = Corpus(text, "test")

    def batches(seed: int) -> list[torch.Tensor]:
        data = text_loaders(corpus, seq_len=8, batch_size=4, seed=seed)
        data.train.sampler.set_epoch(0)
        return [x for x, _ in data.train]

    a, b, c = batches(0), batches(0), batches(1)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))
    data = text_loaders(corpus, seq_len=8, batch_size=4)
    x, y = next(iter(data.test))
    assert x.shape == y.shape == (len(data.test.dataset), 8)
    assert data.unknown_test_chars > 0 and (x == UNKNOWN).any()  # X, Y, Z: test text only
    info = data.describe()
    assert info["sha256"] == corpus.sha256 and info["vocab_size"] == 8
    assert info["train_chars"] + info["test_chars"] == len(text)
    with pytest.raises(ValueError, match="fewer than a batch"):
        text_loaders(Corpus(text[:100], "t"), seq_len=8, batch_size=64)
