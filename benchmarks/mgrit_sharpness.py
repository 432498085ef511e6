"""Why some initial weights stall MGRIT: the sharpness of the loss along the serial path.

A coarse step of MGRIT training is one gradient step with a larger rate alpha_l. On a
quadratic that step is stable only when alpha_l * lambda_max(H) < 2, and the coarse-grid
correction can only converge if the coarse propagator is stable. This script measures,
for each seed, the peak sharpness lambda* = max_i lambda_max(H(w_i)) along ordinary
serial training at the fine rate (H: the Hessian of the step's loss, by power iteration
on Hessian-vector products, warm-started from the previous point), prints 2 / lambda*
(the largest stable coarse rate at the sharpest point), and runs MGRIT with each of
``--lr-max`` so the two can be read side by side.

    python benchmarks/mgrit_sharpness.py --problem xor --steps 800 --seeds 0 1 2 3 4 5 \
        --json benchmarks/results/mgrit_sharpness_xor.json
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import time
from typing import Any

import torch

from common import write_json  # this directory is on sys.path
from torchpint.core import MGRIT, DivergenceError
from torchpint.training import TrainingProblem, make_task
from torchpint.training.config import default_tol, solver_options
from torchpint.training.tasks import ADDER_VARIANTS, adder_options


def peak_sharpness(
    task: Any, steps: int, lr: float, data: str, every: int, iters: int
) -> tuple[float, int]:
    """``(lambda*, step)``: the largest Hessian eigenvalue met along serial training."""
    model, loss_fn = copy.deepcopy(task.model).double(), task.loss_fn
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    problem = TrainingProblem(
        model, loss_fn, task.data, steps, lr=lr, lr_rule="naive", data_rule=data, fast=False
    )  # torch tensors for autograd

    def loss(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        params = {
            n: t.view(s) for n, t, s in zip(names, torch.split(w, sizes), shapes, strict=True)
        }
        return loss_fn(torch.func.functional_call(model, params, (x,)), y)

    grad = torch.func.grad(loss)
    u = problem.initial_state()
    v = torch.randn(
        problem.n_weights, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    peak, where = -math.inf, 0
    for i in range(steps):
        if i % every == 0:
            w = problem.weights(u)
            x, y = problem.batch(i)
            grad_i = functools.partial(grad, x=x, y=y)
            lam = 0.0
            for _ in range(iters):
                v = v / v.norm()
                hv = torch.func.jvp(grad_i, (w,), (v,))[1]
                lam, v = float(v @ hv), hv
            if lam > peak:
                peak, where = lam, i
        u = problem.step(u, i, 0)
    return peak, where


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", choices=("xor", "adder"), default="xor")
    ap.add_argument("--adder-variant", choices=ADDER_VARIANTS, default="trask",
                    help="the adder's weights and data (the stored results used uniform)")
    ap.add_argument("--pairs", type=int, default=None, help="the adder's pairs (default 500)")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lr", type=float, default=None, help="fine rate (default: the task's)")
    ap.add_argument("--lr-max", type=float, nargs="*", default=[2.0, 4.0, 8.0])
    ap.add_argument("--solver", choices=("two-level", "V", "F"), default="F")
    ap.add_argument("--data", choices=("full", "serial"), default="full")
    ap.add_argument("--every", type=int, default=1, help="measure every k-th step")
    ap.add_argument("--power-iters", type=int, default=10)
    ap.add_argument("--max-iter", type=int, default=50)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)

    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    head = " ".join(f"{'amax=' + format(a, 'g'):>9s}" for a in args.lr_max)
    print(
        f"{args.problem}: N={args.steps}, solver={args.solver}, data={args.data}; MGRIT "
        "iterations per a_max (50+ = not converged, div = diverged)"
    )
    print(f"{'seed':>4s} {'lambda*':>9s} {'at step':>7s} {'2/lambda*':>9s} {head}")
    for seed in args.seeds:
        task = make_task(args.problem, seed, **adder_options(args.problem, args.adder_variant,
                                                                args.pairs))
        lr = args.lr if args.lr is not None else task.defaults["lr"]
        peak, where = peak_sharpness(task, args.steps, lr, args.data, args.every, args.power_iters)
        row: dict[str, Any] = dict(
            seed=seed, lr=lr, peak=peak, peak_step=where, stable_rate=2.0 / peak, iterations={}
        )
        for amax in args.lr_max:
            p = TrainingProblem(
                task.model,
                task.loss_fn,
                task.data,
                args.steps,
                lr=lr,
                lr_rule="geometric",
                lr_max=amax,
                data_rule=args.data,
            )
            try:
                res = MGRIT(
                    p,
                    relax="FCF",
                    tol=default_tol(args.steps),
                    max_iter=args.max_iter,
                    **solver_options(args.solver),
                ).solve()
                it = str(res.iterations) if res.converged else f"{args.max_iter}+"
            except DivergenceError:
                it = "div"
            row["iterations"][format(amax, "g")] = it
        rows.append(row)
        cells = " ".join(f"{row['iterations'][format(a, 'g')]:>9s}" for a in args.lr_max)
        print(f"{seed:4d} {peak:9.3f} {where:7d} {2 / peak:9.2f} {cells}", flush=True)
    print(f"wall {time.perf_counter() - t0:.0f}s")
    write_json(args.json, {"args": vars(args), "rows": rows}, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
