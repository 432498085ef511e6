"""Time one optimizer step of the paper's problems with each loss-and-gradient engine.

The NumPy sigmoid-MLP engine against the autograd engine (``functional_call``) on XOR
(16 weights, 4 examples) and the 12-bit adder (12,032 weights, 500 examples), one thread,
rounds alternating the engines so that load drifting over the run hits both alike.
Prints a table (median microseconds per step and the ratio) and writes JSON.

    python benchmarks/bench_engines.py --json benchmarks/results/bench_engines.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from common import write_json  # this directory is on sys.path


def _time_steps(problem, steps: int) -> float:
    """Microseconds per step over ``steps`` consecutive steps from the initial state."""
    u = problem.initial_state()
    t = time.perf_counter()
    for i in range(steps):
        u = problem.step(u, i % problem.nt, 0)
    return (time.perf_counter() - t) / steps * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default="benchmarks/results/bench_engines.json")
    args = ap.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits

    from torchpint.training import TrainingProblem, make_task

    torch.set_num_threads(1)
    threadpool_limits(1)
    rows = []
    for name, steps in (("xor", 20000), ("adder", 300)):
        task = make_task(name, 0)
        probs = {
            eng: TrainingProblem(task.model, task.loss_fn, task.data, 100, lr=0.1, fast=fast)
            for eng, fast in (("numpy", True), ("autograd", False))
        }
        times: dict[str, list[float]] = {eng: [] for eng in probs}
        for p in probs.values():  # warm-up
            _time_steps(p, max(1, steps // 10))
        for _ in range(args.rounds):
            for eng, p in probs.items():
                n = steps if eng == "numpy" else max(1, steps // 10)
                times[eng].append(_time_steps(p, n))
        med = {eng: statistics.median(ts) for eng, ts in times.items()}
        rows.append(
            dict(
                problem=name,
                weights=probs["numpy"].n_weights,
                numpy_us=med["numpy"],
                autograd_us=med["autograd"],
                ratio=med["autograd"] / med["numpy"],
                all_us=times,
            )
        )

    print(
        f"{'problem':8s}{'weights':>9s}{'numpy us/step':>15s}{'autograd us/step':>18s}{'ratio':>8s}"
    )
    for r in rows:
        print(
            f"{r['problem']:8s}{r['weights']:>9d}{r['numpy_us']:>15.1f}"
            f"{r['autograd_us']:>18.1f}{r['ratio']:>7.1f}x"
        )
    write_json(args.json, {"rounds": args.rounds, "threads": 1, "rows": rows}, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
