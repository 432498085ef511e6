"""The saved-tensor tracker: each saved storage counted once, released with the graph,
parameters left out, worker threads seen through their modules; tensor byte counts."""

from __future__ import annotations

import threading

import torch
from torch import nn

from torchpint.common.memory import tensor_bytes, track_saved


def test_peak_counts_each_saved_storage_once_and_releases_it():
    w = nn.Parameter(torch.randn(8, 8))
    x = torch.randn(4, 8)
    with track_saved([w]) as tr:
        h = torch.tanh(x @ w)  # mm saves x (w is a parameter); tanh saves its output h
        loss = (h * h).sum()  # mul saves h twice: one storage
    assert tr.peak == x.nbytes + h.nbytes
    loss.backward()
    del loss, h
    assert tr.current == 0 and not tr.live


def test_modules_in_worker_threads_are_tracked():
    lin = nn.Linear(16, 16)
    x = torch.randn(32, 16, requires_grad=True)
    out: list[torch.Tensor] = []

    def run() -> None:
        out.append(torch.relu(lin(x)))

    for thread_modules, seen in (([], False), ([lin], True)):
        with track_saved(lin.parameters(), thread_modules) as tr:
            t = threading.Thread(target=run)
            t.start()
            t.join()
        assert (tr.peak > 0) == seen
        out.clear()


def test_tensor_bytes_counts_views_of_one_buffer_once():
    a = torch.zeros(10)
    b = torch.zeros(3, dtype=torch.float64)
    assert tensor_bytes([a, a.view(2, 5), b, None]) == 40 + 24
    assert tensor_bytes([a[:5], a[5:]]) == 40  # distinct views: both counted
