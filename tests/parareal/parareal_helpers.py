"""Helpers for the parareal tests: a literal reference of the equations, gradient checks."""

from __future__ import annotations

import torch
from torch import nn


def textbook(pre, fine, coarse, post, x, k):
    """ALGORITHMS.md section 3 written out literally (every C_j re-evaluated, no skipping)."""
    u = pre(x)
    lam = [u]
    for j, c in enumerate(coarse):
        lam.append(c(lam[j]))
    for _ in range(k):
        f = [fj(lam[j]) for j, fj in enumerate(fine)]
        y = [u]
        for j, c in enumerate(coarse):
            y.append(c(y[j]) + f[j] - c(lam[j]))
        lam = y
    return post(lam[-1])


def grads(m: nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: (None if p.grad is None else p.grad.clone()) for n, p in m.named_parameters()}


def assert_grads_close(a: dict, b: dict, atol: float = 1e-10) -> None:
    """Same gradients; a missing gradient counts as zero."""
    assert set(a) == set(b)
    for n in set(a) & set(b):
        ga, gb = a[n], b[n]
        if ga is None and gb is None:
            continue
        ref = ga if ga is not None else gb
        ga = torch.zeros_like(ref) if ga is None else ga
        gb = torch.zeros_like(ref) if gb is None else gb
        torch.testing.assert_close(ga, gb, atol=atol, rtol=1e-7, msg=f"grad of {n}")
