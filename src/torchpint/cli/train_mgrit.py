"""``torchpint train-mgrit``: train XOR, the 12-bit adder or digits by MGRIT over optimizer steps.

Works serially or under ``torchrun --nproc-per-node P -m torchpint train-mgrit ...`` (the
time slabs are spread over the ranks; only rank 0 prints and writes files).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from torchpint.cli import _plots as plots
from torchpint.cli._common import (
    COUNT,
    POSITIVE,
    add_timeout,
    bounded,
    check_outputs,
    is_main,
    save_outputs,
    say,
)
from torchpint.core.mgrit import RELAXATIONS
from torchpint.training.config import SOLVERS, TrainingConfig
from torchpint.training.problem import DIVERGENCE_HINT
from torchpint.training.rules import DATA_RULES, LR_RULES
from torchpint.training.tasks import ADDER_VARIANTS, TASKS

_NOT_CONVERGED = (
    "A residual that stalls from the first iterations usually means unstable coarse steps "
    "(a gradient step with rate a is unstable where a * lambda_max(Hessian) > 2): "
    f"{DIVERGENCE_HINT}. A residual that sits on a plateau that lengthens with --steps "
    "usually means serial training itself amplifies errors by many orders of magnitude; "
    "then the iteration converges only about as fast as information travels step by "
    "step: take fewer steps or more --max-iter."
)


MEMORY_HINT = "--steps (optimizer steps), or the problem's size"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``torchpint train-mgrit``; their names are :class:`TrainingConfig`'s."""
    a = parser.add_argument
    a("--problem", choices=sorted(TASKS), default="xor",
      help="training task (default xor, with the paper's Solver 2 F-cycle: converges in "
      "about 8 iterations)")
    a("--steps", type=COUNT, default=1600, help="N, the number of optimizer steps (default 1600)")
    a("--solver", choices=SOLVERS, default=None,
      help="MGRIT variant (default: the problem's; F, the adder two-level)")
    a("--adder-variant", choices=ADDER_VARIANTS, default="trask",
      help="the adder's weights and data: trask (the paper's source: N(-0.1, 0.2^2) "
      "weights, 11-bit operands) or uniform (U[-1, 1) weights, wrapping 12-bit sums)")
    a("--lr", type=POSITIVE, default=None, help="fine learning rate (default: the problem's)")
    a("--lr-rule", choices=LR_RULES, default="geometric", help="coarse rates (default geometric)")
    a("--lr-growth", type=bounded(float, 1), default=2.0,
      help="geometric growth per level (default 2)")
    a("--lr-max", type=POSITIVE, default=None, help="cap on coarse rates (default: problem's)")
    a("--data", dest="data_rule", choices=DATA_RULES, default=None,
      help="full batch (Solver 1), serialized i mod K (Solver 2) or minibatch "
      "(default: the problem's)")
    a("--batch-size", type=COUNT, default=None, help="minibatch size (default: the problem's)")
    a("--momentum", type=bounded(float, 0, 1, high_open=True), default=0.0,
      help="SGD momentum (default 0)")
    a("--seed", type=bounded(int, 0), default=0, help="initial weights and data keys (default 0)")
    a("--cfactor", type=bounded(int, 2), default=2, help="coarsening factor (default 2)")
    a("--relax", choices=RELAXATIONS, default="FCF", help="relaxation (default FCF)")
    a("--max-coarse", type=COUNT, default=10,
      help="coarsen down to <= this many points (default 10)")
    a("--tol", type=POSITIVE, default=None, help="absolute residual tolerance (1e-9 sqrt(N))")
    a("--max-iter", type=COUNT, default=50, help="iteration budget (default 50)")
    a("--no-verify", action="store_true", help="skip serial training and the comparison")
    a("--json", metavar="PATH", help="write the results as JSON")
    a("--plot", metavar="PATH", help="plot residuals and serial vs MGRIT loss curves")
    a("--checkpoint", metavar="PATH", help="save the MGRIT state here (one file per rank)")
    a("--checkpoint-every", type=COUNT, default=1,
      help="iterations between checkpoints (default 1)")
    a("--resume", action="store_true", help="continue from --checkpoint if it exists")
    a("--no-progress", action="store_true", help="no progress bar")
    a("--threads", type=COUNT, default=1,
      help="torch and BLAS threads per process (default 1: the steps are tiny, more "
      "threads only contend; the parallelism is over time slabs)")
    add_timeout(parser)


def _config(args: argparse.Namespace, defaults: dict) -> TrainingConfig:
    """The options that name a :class:`TrainingConfig` field over the task's defaults (the
    task's batch size only for minibatches)."""
    given = {f.name: getattr(args, f.name) for f in fields(TrainingConfig) if hasattr(args, f.name)}
    settings = {**defaults, **{k: v for k, v in given.items() if v is not None}}
    if settings.get("data_rule") != "minibatch" and args.batch_size is None:
        settings.pop("batch_size", None)
    return TrainingConfig.build(**settings)


def run(args: argparse.Namespace) -> int:
    """Train by MGRIT; 0 converged, 1 not converged (3 on divergence, via the dispatcher)."""
    import torch

    from torchpint.core import init_distributed
    from torchpint.training.api import train_mgrit
    from torchpint.training.tasks import adder_options, make_task

    check_outputs(args)
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)  # NumPy's BLAS (the fast sigmoid-MLP engine)
    distributed = init_distributed(timeout=args.timeout)
    task = make_task(args.problem, args.seed, **adder_options(args.problem, args.adder_variant))
    cfg = _config(args, task.defaults)
    n_weights = sum(p.numel() for p in task.model.parameters())
    say(f"train-mgrit: {args.problem}, {n_weights} weights, N={cfg.steps}, solver={cfg.solver}, "
        f"lr={cfg.lr} ({cfg.lr_rule}, growth {cfg.lr_growth}, max {cfg.lr_max}), "
        f"data={cfg.data_rule}" + (f" B={cfg.batch_size}" if cfg.batch_size else "")
        + (f", {torch.distributed.get_world_size()} processes" if distributed else ""))
    res = train_mgrit(
        task.model, task.loss_fn, task.data, config=cfg,
        group="world" if distributed else None, verify_serial=not args.no_verify,
        checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
        resume=args.resume, progress=not args.no_progress and is_main(), timeout=args.timeout,
    )
    if not is_main():
        return 0 if res.converged else 1
    s, tm = res.settings, res.history.timings
    say(f"levels {s['levels']} (lr per level {[round(x, 4) for x in s['lr_per_level']]}), "
        f"engine {s['engine']}")
    say(f"MGRIT: {res.iterations} iterations, converged={res.converged}, final residual "
        f"{res.residuals[-1]:.3e} (tol {s['tol']:.3e}), solve {tm['solve']:.2f}s")
    if not res.converged:
        print(f"train-mgrit: not converged in {res.iterations} iterations. {_NOT_CONVERGED}",
              file=sys.stderr)
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
    save_outputs(args, out, lambda path: plots.plot_training_mgrit(res, path))
    return 0 if res.converged else 1
