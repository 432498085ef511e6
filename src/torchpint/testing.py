"""Helpers for testing: check a problem against the solvers' contract, spawn Gloo groups.

:func:`check_problem` runs every check of a user's problem at once (XBraid's
``braid_TestAll``): the step's purity, shape, dtype and device, a fingerprint that
checkpoints can store, and MGRIT agreeing with serial time stepping. The tests and
benchmarks compare distributed runs with serial ones through :func:`spawn_gloo`; users
testing their own problems may do the same.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from torchpint.core.mgrit import MGRIT
from torchpint.core.problem import (
    STEP_RULES,
    Problem,
    has_transfers,
    level_states,
    serial_solve,
    step_faults,
)
from torchpint.runtime.checkpoint import fingerprint_diff, plain

CHECKS = {
    "initial_state": "initial_state() returns a torch.Tensor",
    "step_runs": "step(u, i, level) runs at the first and last index of every level",
    "step_tensor": "step returns a torch.Tensor",
    "step_shape": "step keeps the shape of its input",
    "step_dtype": "step keeps the dtype of its input",
    "step_device": "step keeps the device of its input",
    "step_pure": "step leaves its input unchanged (no in-place change)",
    "step_into": "step_into, where the problem gives one, writes exactly what step returns",
    "fingerprint": "fingerprint() is plain JSON data, the same at every call",
    "one_level": "one-level MGRIT equals serial_solve bit for bit",
    "two_level": "two-level MGRIT (F-relaxation, run to its finite-termination iteration "
                 "count) equals serial_solve to rounding",
}
"""Every check of :func:`check_problem`, by name, with what it asserts."""


@dataclass
class ProblemReport:
    """What :func:`check_problem` found for a problem that passed: the checks passed
    and those skipped, each with the reason (e.g. a grid too short for two levels)."""

    problem: str
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"{self.problem}: {len(self.passed)} checks passed"]
        lines += [f"  ok   {name}: {CHECKS[name]}" for name in self.passed]
        lines += [f"  skip {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


class ProblemCheckError(ValueError):
    """A problem failed :func:`check_problem`: ``failures`` maps every failed check to
    what is wrong; ``report`` has the checks that passed or were skipped."""

    def __init__(self, failures: dict[str, str], report: ProblemReport) -> None:
        self.failures, self.report = dict(failures), report
        lines = [f"{report.problem} fails {len(failures)} of the problem checks:"]
        lines += [f"  - {name}: {why}" for name, why in failures.items()]
        if report.passed:
            lines.append(f"  (passed: {', '.join(report.passed)})")
        super().__init__("\n".join(lines))


def _not_plain(obj: Any, where: str) -> Iterator[str]:
    """Why each part of a fingerprint is not plain JSON data that compares exactly."""
    if obj is None or isinstance(obj, (bool, str)):
        return
    if isinstance(obj, numbers.Real):
        if isinstance(obj, float) and math.isnan(obj):
            yield f"{where} is NaN, which never equals itself: no checkpoint would resume"
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, str):
                yield f"{where} has the key {k!r} ({type(k).__name__}); use str keys"
            yield from _not_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for j, v in enumerate(obj):
            yield from _not_plain(v, f"{where}[{j}]")
        return
    yield (f"{where} is a {type(obj).__name__}, which a checkpoint keeps only as its str(); "
           "give numbers, strings, lists or dicts (a tensor: torchpint.runtime.checkpoint."
           "tensor_digest)")


def _fingerprint_fault(problem: Problem, solver: MGRIT | None) -> str | None:
    """What is wrong with the problem's fingerprint (``None``: nothing)."""
    try:
        fp = problem.fingerprint()
        again = problem.fingerprint()
    except Exception as err:
        return f"fingerprint() raised {type(err).__name__}: {err}"
    if not isinstance(fp, Mapping):
        return f"fingerprint() returned a {type(fp).__name__}, not a dict"
    faults = list(_not_plain(fp, "fingerprint()"))
    if not faults and isinstance(again, Mapping) and fingerprint_diff(plain(fp), plain(again)):
        faults.append("fingerprint() changes between calls: "
                      + "; ".join(fingerprint_diff(plain(fp), plain(again))))
    if not faults and solver is not None:  # the fingerprint checkpoints store
        full = solver.fingerprint()
        if json.loads(json.dumps(full)) != full:
            faults.append("the solver's fingerprint does not survive a JSON round trip")
    return "; ".join(faults) or None


def _compare(u: torch.Tensor, ref: torch.Tensor, exact: bool) -> str | None:
    """How ``u`` differs from ``ref`` (``None``: equal, or within rounding if not exact)."""
    if u.shape != ref.shape:
        return f"shape {tuple(u.shape)}, serial_solve {tuple(ref.shape)}"
    diff = (u.double() - ref.double()).abs()
    worst = float(diff.max()) if diff.numel() else 0.0
    scale = max(1.0, float(ref.double().abs().max()) if ref.numel() else 1.0)
    eps = torch.finfo(ref.dtype).eps if ref.dtype.is_floating_point else 0.0
    if (torch.equal(u, ref) if exact else worst <= math.sqrt(eps) * scale):
        return None
    bad = int(diff.reshape(len(diff), -1).amax(dim=1).argmax())
    return (f"differs by up to {worst:.3e} (most at point {bad}); a step "
            "must be a function of (u, i, level) alone, not of hidden state or call order")


def free_port() -> int:
    """A free TCP port on localhost, for spawning process groups in tests and benchmarks."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn_entry(rank: int, fn: Callable[..., Any], world: int, port: int, timeout: float,
                 args: tuple, results: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=timedelta(seconds=timeout)
    )
    try:
        results[rank] = fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def spawn_gloo(fn: Callable[..., Any], world: int, *args: Any, timeout: float = 120.0) -> list:
    """Run ``fn(rank, world, *args)`` on ``world`` Gloo processes on localhost.

    Returns the list of the ranks' return values (they must be picklable). Used by the
    tests and benchmarks to compare distributed runs with serial ones.
    """
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(
            _spawn_entry,
            args=(fn, world, free_port(), timeout, args, results),
            nprocs=world,
            join=True,
        )
        return [results[r] for r in range(world)]


def check_problem(problem: Problem, *, cfactor: int | None = None,
                  two_level: bool = True) -> ProblemReport:
    """Check ``problem`` against the solvers' contract; every check runs (see ``CHECKS``).

    The step is tried at the first and last index of every level of a two-level grid
    (coarsening factor ``cfactor``, default about ``nt / 4``, so the two-level solve
    needs at most 4 or 5 iterations): it must return a tensor of its input's shape, dtype
    and device and leave its input unchanged. The fingerprint must be plain JSON data,
    equal at every call. One-level MGRIT must equal :func:`serial_solve` bit for bit,
    and two-level MGRIT with F-relaxation, run for its finite-termination count of
    iterations (``ceil(nt / cfactor)``, after which it is exact), must equal it to
    rounding (``sqrt(eps)`` of the dtype, relative to ``max(1, max |u|)``): this catches
    steps that depend on hidden state or call order. ``two_level=False`` skips that
    solve (it takes about ``2 nt`` steps per iteration).

    Returns a :class:`ProblemReport` (checks passed and skipped) when all pass; raises
    one :class:`ProblemCheckError` (a ``ValueError``) listing every failed check
    otherwise. The problem is left bound to the check's grid (a solver binds its own).
    """
    failures: dict[str, str] = {}
    report = ProblemReport(type(problem).__name__)

    def done() -> ProblemReport:
        report.passed = [c for c in CHECKS if c not in failures and c not in report.skipped]
        if failures:
            raise ProblemCheckError(failures, report)
        return report

    try:
        u0 = problem.initial_state()
    except Exception as err:
        u0 = err
    if not isinstance(u0, torch.Tensor):
        failures["initial_state"] = (f"initial_state() raised {type(u0).__name__}: {u0}"
                                     if isinstance(u0, Exception) else
                                     f"initial_state() returned a {type(u0).__name__}")
        fault = _fingerprint_fault(problem, None)
        if fault:
            failures["fingerprint"] = fault
        report.skipped = {c: "no initial state" for c in CHECKS if c not in failures}
        return done()
    u0 = u0.detach()
    nt = problem.nt
    m = max(2, -(-nt // 4)) if cfactor is None else int(cfactor)
    solver: MGRIT | None = None
    try:  # binds the problem to a two-level grid, for the steps of level 1
        solver = MGRIT(problem, levels=2, cfactor=m, relax="F", iterations=-(-nt // m),
                       divergence_factor=math.inf)
    except ValueError as err:
        report.skipped["two_level"] = f"no two-level grid: {err}"
        solver = MGRIT(problem, levels=1, iterations=1)
    _check_steps(problem, u0, solver, failures, report)
    fault = _fingerprint_fault(problem, solver)
    if fault:
        failures["fingerprint"] = fault
    if any(c.startswith("step_") for c in failures):
        for c in ("one_level", "two_level"):
            report.skipped.setdefault(c, "the step breaks its contract (see step_*)")
        return done()
    _check_solves(problem, solver, failures, report, two_level)
    return done()


def _check_steps(problem: Problem, u0: torch.Tensor, solver: MGRIT,
                 failures: dict[str, str], report: ProblemReport) -> None:
    """The step rules at the first and last index of every level of ``solver``'s grid."""
    grid, untested = solver.grid, set()
    states = level_states(problem, u0, grid.num_levels)  # (restricted, with transfers)
    for level in range(grid.num_levels):
        for i in sorted({0, grid.n_steps(level) - 1}):
            try:
                _, faults = step_faults(problem, states[level], i, level)
            except Exception as err:
                failures.setdefault("step_runs", f"problem.step(u, {i}, level={level}) "
                                    f"raised {type(err).__name__}: {err}")
                continue
            for rule in STEP_RULES:
                if rule in faults:
                    failures.setdefault(f"step_{rule}", faults[rule])
            if "tensor" in faults:
                untested |= {"step_shape", "step_dtype", "step_device"}
    if "step_runs" in failures:
        untested |= {f"step_{r}" for r in STEP_RULES}
    for c in sorted(untested - set(failures)):
        report.skipped[c] = "a step raised or returned no tensor"


def _check_solves(problem: Problem, solver: MGRIT, failures: dict[str, str],
                  report: ProblemReport, two_level: bool) -> None:
    """One-level MGRIT (exact) and two-level MGRIT (to rounding) against serial_solve."""
    try:
        ref = serial_solve(problem)
        one = MGRIT(problem, levels=1, iterations=1).solve()
        fault = _compare(one.u, ref, exact=True)
    except Exception as err:
        ref, fault = None, f"raised {type(err).__name__}: {err}"
    if fault:
        failures["one_level"] = fault
    if "two_level" in report.skipped:
        return
    if not two_level:
        report.skipped["two_level"] = "two_level=False"
        return
    if has_transfers(problem):
        report.skipped["two_level"] = ("the levels' states differ in shape (restrict and "
                                       "interpolate): F-relaxation does not terminate")
        return
    if ref is None:
        report.skipped["two_level"] = "serial_solve failed (see one_level)"
        return
    try:
        problem.bind(solver.grid)
        fault = _compare(solver.solve().u, ref, exact=False)
    except Exception as err:
        fault = f"raised {type(err).__name__}: {err}"
    if fault:
        failures["two_level"] = (f"MGRIT(levels=2, cfactor={solver.grid.m[0]}, relax='F', "
                                 f"iterations={solver.max_iter}): {fault}")
