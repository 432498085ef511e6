"""The figures the subcommands and the demo write: residual histories and loss curves."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torchpint.runtime.outputs import save_figure


@contextmanager
def figure(path: str | os.PathLike, ncols: int = 1, width: float = 5.5,
           height: float = 4.0) -> Iterator[Any]:
    """A row of ``ncols`` axes, saved at ``path`` on exit (its suffix gives the format,
    PNG without one; written atomically, parent created)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    try:
        yield axes[0]
        fig.tight_layout()
        fig.set_dpi(120)
        save_figure(fig, path)
    finally:
        plt.close(fig)


def residual_axes(ax: Any, histories: dict[str, Sequence[float]], tol: float | None = None,
                  title: str = "") -> None:
    """Residual histories on a log scale, one line per label, with the tolerance."""
    for label, res in histories.items():
        ax.semilogy(range(1, len(res) + 1), [max(r, 1e-300) for r in res], "o-", label=label)
    if tol is not None:
        ax.axhline(tol, color="gray", ls="--", label="tolerance")
    ax.set(xlabel="iteration", ylabel="residual 2-norm", title=title or "residual history")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()


def plot_residuals(histories: dict[str, Sequence[float]], path: str | os.PathLike,
                   title: str = "") -> None:
    """A PNG of residual histories (log scale), one line per label."""
    with figure(path, width=6) as (ax,):
        residual_axes(ax, histories, title=title or "MGRIT residual history")


def plot_training_mgrit(result: Any, path: str | os.PathLike) -> None:
    """The MGRIT residual history and, when verified, serial vs MGRIT loss curves."""
    ver = result.verification
    with figure(path, ncols=2 if ver else 1) as axes:
        residual_axes(axes[0], {"MGRIT": result.residuals}, result.settings["tol"])
        if ver:
            ax = axes[1]
            ax.plot(ver.points, ver.loss_serial, label="serial training", lw=3, alpha=0.5)
            ax.plot(ver.points, ver.loss_mgrit, "--", label="MGRIT")
            ax.set(xlabel="optimizer step", ylabel="loss on the step's batch",
                   title=f"max |w_mgrit - w_serial| = {ver.max_weight_diff:.2e}")
            ax.set_yscale("log")
            ax.legend()


def plot_training_curves(
    results: dict[str, Any],
    path: str | os.PathLike,
    labels: Sequence[str] = ("parareal", "baseline"),
    residuals: dict[str, Sequence[float]] | None = None,
) -> None:
    """Train/test loss and test accuracy per epoch of each run in ``labels`` (the first
    drawn solid, the others dashed); with ``residuals`` a third panel of MGRIT residual
    histories."""
    with figure(path, ncols=3 if residuals else 2, width=5) as axes:
        ax_loss, ax_acc = axes[0], axes[1]
        for k, label in enumerate(labels):
            r = results.get(label)
            if not r:
                continue
            style = "-" if k == 0 else "--"
            hist = r["history"]
            ep = [h["epoch"] for h in hist]
            ax_loss.plot(ep, [h["train_loss"] for h in hist], style, label=f"{label} train")
            ax_loss.plot(ep, [h["test_loss"] for h in hist], style, label=f"{label} test")
            ax_acc.plot(ep, [h["test_accuracy"] for h in hist], style, marker="o", label=label)
        ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
        ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
            ax.legend()
        if residuals:
            residual_axes(axes[2], residuals, title="MGRIT residuals, last batch")
