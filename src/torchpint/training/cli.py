"""``torchpint train-mgrit``: train XOR, the 12-bit adder or digits by MGRIT over optimizer steps.

Works serially or under ``torchrun --nproc-per-node P -m torchpint train-mgrit ...`` (the
time slabs are spread over the ranks; only rank 0 prints and writes files).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``torchpint train-mgrit``."""
    a = parser.add_argument
    a("--problem", choices=["xor", "adder", "digits"], default="xor")
    a("--steps", type=int, default=1600, help="N, the number of optimizer steps")
    a("--solver", choices=["two-level", "V", "F"], default="F")
    a("--lr", type=float, default=None, help="fine learning rate (default: the problem's)")
    a("--lr-rule", choices=["naive", "geometric"], default="geometric")
    a("--lr-growth", type=float, default=2.0, help="geometric growth per level (2 or 1.25)")
    a("--lr-max", type=float, default=None, help="cap on coarse rates (default: problem's)")
    a("--data", choices=["full", "serial", "minibatch"], default=None,
      help="full batch (Solver 1), serialized i mod K (Solver 2) or minibatch")
    a("--batch-size", type=int, default=None)
    a("--momentum", type=float, default=0.0)
    a("--seed", type=int, default=0, help="initial weights and data keys")
    a("--cfactor", type=int, default=2)
    a("--relax", choices=["F", "FCF"], default="FCF")
    a("--max-coarse", type=int, default=10, help="coarsen down to <= this many points")
    a("--tol", type=float, default=None, help="absolute residual tolerance (1e-9 sqrt(N))")
    a("--max-iter", type=int, default=50)
    a("--no-verify", action="store_true", help="skip serial training and the comparison")
    a("--json", metavar="PATH", help="write the results as JSON")
    a("--plot", metavar="PATH", help="plot residuals and serial vs MGRIT loss curves")
    a("--checkpoint", metavar="PATH", help="save the MGRIT state here (one file per rank)")
    a("--checkpoint-every", type=int, default=1, help="iterations between checkpoints")
    a("--resume", action="store_true", help="continue from --checkpoint if it exists")
    a("--no-progress", action="store_true", help="no progress bar")
    a("--threads", type=int, default=1,
      help="torch and BLAS threads per process (1: the steps are tiny, more threads only "
      "contend; the parallelism is over time slabs)")


def _plot(path: str, result: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ver = result.verification
    fig, axes = plt.subplots(1, 2 if ver else 1, figsize=(11 if ver else 5.5, 4), squeeze=False)
    ax = axes[0][0]
    ax.semilogy(range(1, len(result.residuals) + 1), result.residuals, "o-")
    ax.axhline(result.settings["tol"], color="gray", ls="--", label="tolerance")
    ax.set(xlabel="MGRIT iteration", ylabel="||r||_2", title="residual history")
    ax.legend()
    if ver:
        ax = axes[0][1]
        ax.plot(ver.points, ver.loss_serial, label="serial training", lw=3, alpha=0.5)
        ax.plot(ver.points, ver.loss_mgrit, "--", label="MGRIT")
        ax.set(xlabel="optimizer step", ylabel="loss on the step's batch",
               title=f"max |w_mgrit - w_serial| = {ver.max_weight_diff:.2e}")
        ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Run one training by MGRIT; returns the exit status (3 on divergence)."""
    import torch

    from torchpint.core import DivergenceError, init_distributed
    from torchpint.training.api import train_mgrit
    from torchpint.training.problem import DIVERGENCE_HINT
    from torchpint.training.tasks import make_task

    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)  # NumPy's BLAS (the fast sigmoid-MLP engine)
    distributed = init_distributed()
    rank = torch.distributed.get_rank() if distributed else 0
    task = make_task(args.problem, args.seed)
    d = task.defaults
    lr = args.lr if args.lr is not None else d["lr"]
    lr_max = args.lr_max if args.lr_max is not None else d.get("lr_max", math.inf)
    data_rule = args.data or d["data_rule"]
    batch = args.batch_size or (d.get("batch_size") if data_rule == "minibatch" else None)
    say = print if rank == 0 else (lambda *a, **k: None)
    say(f"train-mgrit: {args.problem}, {sum(p.numel() for p in task.model.parameters())} "
        f"weights, N={args.steps}, solver={args.solver}, lr={lr} ({args.lr_rule}, growth "
        f"{args.lr_growth}, max {lr_max}), data={data_rule}"
        + (f" B={batch}" if batch else "")
        + (f", {torch.distributed.get_world_size()} processes" if distributed else ""))
    try:
        res = train_mgrit(
            task.model, task.loss_fn, task.data, args.steps, solver=args.solver, lr=lr,
            lr_rule=args.lr_rule, lr_growth=args.lr_growth, lr_max=lr_max,
            data_rule=data_rule, batch_size=batch, momentum=args.momentum, seed=args.seed,
            cfactor=args.cfactor, relax=args.relax, max_coarse=args.max_coarse, tol=args.tol,
            max_iter=args.max_iter, group="world" if distributed else None,
            verify_serial=not args.no_verify, checkpoint=args.checkpoint,
            checkpoint_every=args.checkpoint_every, resume=args.resume,
            progress=not args.no_progress and rank == 0,
        )
    except DivergenceError as err:
        if rank == 0:
            print(f"train-mgrit: MGRIT diverged: {err}", file=sys.stderr)
            if args.json:
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(args.json).write_text(json.dumps({"diverged": True, "error": str(err)}))
        return 3
    if rank != 0:
        return 0 if res.converged else 1
    s = res.settings
    tm = res.history.timings
    say(f"levels {s['levels']} (lr per level {[round(x, 4) for x in s['lr_per_level']]}), "
        f"engine {s['engine']}")
    say(f"MGRIT: {res.iterations} iterations, converged={res.converged}, final residual "
        f"{res.residuals[-1]:.3e} (tol {s['tol']:.3e}), solve {tm['solve']:.2f}s")
    if not res.converged:
        print(f"train-mgrit: not converged in {res.iterations} iterations. A residual that "
              "stalls from the first iterations usually means unstable coarse steps (a "
              "gradient step with rate a is unstable where a * lambda_max(Hessian) > 2; "
              f"see benchmarks/mgrit_sharpness.py): {DIVERGENCE_HINT}. A residual that sits "
              "on a plateau that lengthens with --steps usually means serial training itself "
              "amplifies errors by many orders of magnitude (see "
              "benchmarks/mgrit_sensitivity.py); then the iteration converges only about as "
              "fast as information travels step by step: take fewer steps or more "
              "--max-iter.", file=sys.stderr)
    out = res.to_dict()
    if res.verification is not None:
        v = res.verification
        say(f"serial training: {v.serial_seconds:.2f}s; max |w_mgrit - w_serial| = "
            f"{v.max_weight_diff:.3e} at w_N, {v.max_weight_diff_curve:.3e} over "
            f"{len(v.points)} sampled steps")
        say(f"final loss: MGRIT {v.loss_mgrit[-1]:.6g}, serial {v.loss_serial[-1]:.6g}")
    if task.accuracy is not None:
        out["accuracy"] = task.accuracy(res.model)
        say(f"training accuracy of the MGRIT weights: {out['accuracy']:.4f}")
    out["problem"] = args.problem
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
        say(f"wrote {args.json}")
    if args.plot:
        _plot(args.plot, res)
        say(f"wrote {args.plot}")
    return 0 if res.converged else 1
