"""MGRIT checkpoints: the saved state, its fingerprint, resuming it, and re-slabbing.

What a solve saves is the fine iterate of this rank's slab (its ghost included), the
residual history and a *fingerprint* of everything that defines the solution (problem,
u_0, solver settings). Resuming accepts only the same run, on any number of ranks: a
checkpoint written by other ranks is re-cut into this rank's slab from the files of all
of them. Every rank takes part in one collective even when its own load failed, so all
ranks agree (resume, or raise) and none is left waiting. File handling (atomic writes,
safe loading, fingerprint comparison) is :mod:`torchpint.runtime.checkpoint`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from torchpint.core.grid import is_integer
from torchpint.runtime.checkpoint import (
    RESUME_HINT,
    CheckpointError,
    check_fingerprint,
    load_checkpoint,
    plain,
    rank_file,
    rank_files,
    tensor_digest,
)

if TYPE_CHECKING:
    from torchpint.core.problem import Problem
    from torchpint.runtime.comm import Comm

RESUME_SET_HINT = "delete the files to start afresh, or run without resume"
FORMAT = 2  # the layout of a checkpoint's dict


def solver_fingerprint(problem: Problem, u0: torch.Tensor, settings: dict[str, Any]) -> dict:
    """What a checkpoint must match to be resumed, as plain JSON-able types: the problem's
    :meth:`~torchpint.core.problem.Problem.fingerprint`, a digest of ``u0`` and the solver
    ``settings`` that shape the iterates."""
    return plain({"problem": problem.fingerprint(), "u0": tensor_digest(u0),
                  "solver": settings})


@dataclass
class Progress:
    """How far a solve got: what a checkpoint restores besides the fine iterate.

    ``step_counts`` is ``None`` after a re-slab (the per-rank counts restart at zero).
    """

    iteration: int
    residuals: list[float]
    iter_times: list[float]
    step_counts: list[int] | None


class SlabCheckpoint:
    """This rank's checkpoint files: what it writes and how it resumes them.

    Args:
        comm: the ranks of the solve (this rank's number, how many write).
        slab: the fine points this rank owns.
        nt: the fine steps of the problem (a checkpoint must cover all its points).
        fine: this rank's fine iterate buffer, ghost row first (loads write into it).
    """

    def __init__(self, comm: Comm, slab: range, nt: int, fine: torch.Tensor) -> None:
        self.comm, self.slab, self.nt, self.fine = comm, slab, int(nt), fine

    def path(self, path: str | Path) -> Path:
        """The file this rank writes for checkpoint ``path``."""
        return rank_file(path, self.comm.rank, self.comm.size)

    def state_dict(self, fingerprint: dict, progress: Progress, steps: list[int]) -> dict:
        """Tensors and plain types only, so it loads with ``torch.load(weights_only=True)``."""
        return {
            "format": FORMAT, "fingerprint": fingerprint,
            "u": self.fine.cpu(), "iteration": progress.iteration,
            "residuals": list(progress.residuals), "iter_times": list(progress.iter_times),
            "step_counts": list(progress.step_counts or []), "steps": list(steps),
            "slab": (self.slab.start, self.slab.stop), "world": self.comm.size,
            "rank": self.comm.rank,
        }

    def load_state_dict(
        self, state: dict[str, Any], fingerprint: dict, path: str | Path = "the state"
    ) -> Progress:
        """Load ``state``, written by this rank's layout, into the fine buffer.

        Raises :class:`CheckpointMismatchError` when it is from another run and
        :class:`CheckpointError` when it is from another layout.
        """
        check_fingerprint(state.get("fingerprint"), fingerprint, path)
        mine = {"slab": (self.slab.start, self.slab.stop), "world": self.comm.size}
        theirs = {"slab": tuple(state.get("slab", ())), "world": state.get("world")}
        if theirs != mine:
            raise CheckpointError(
                f"checkpoint does not match this solver's layout: {path} has {theirs}, this "
                f"rank has {mine}; MGRIT.solve(checkpoint=..., resume=True) re-slabs it"
            )
        self._check_rows(state, path, self.slab.stop - self.slab.start + 1)
        self.fine.copy_(state["u"].to(self.fine.device))
        return Progress(int(state["iteration"]), [float(r) for r in state["residuals"]],
                        [float(t) for t in state["iter_times"]],
                        [int(c) for c in state["step_counts"]])

    def _check_rows(self, state: dict[str, Any], path: str | Path, rows: int) -> None:
        u, ref = state.get("u"), self.fine
        want = (rows, *ref.shape[1:])
        if not isinstance(u, torch.Tensor) or tuple(u.shape) != want or u.dtype != ref.dtype:
            got = (tuple(u.shape), u.dtype) if isinstance(u, torch.Tensor) else type(u).__name__
            raise CheckpointError(
                f"checkpoint {path} holds an iterate of {got}, expected shape {want}, dtype "
                f"{ref.dtype}; {RESUME_HINT}"
            )

    # -- resuming ------------------------------------------------------------------------
    def resume(self, path: str | Path, fingerprint: dict) -> Progress | None:
        """Load the checkpoint at ``path`` if there is one (``None``: there is none); all
        ranks agree or raise.

        Every rank takes part in one all-reduce even when its own load failed, so a bad
        file is an error on every rank, never a peer left waiting.
        """
        err: Exception | None = None
        progress: Progress | None = None
        world = 0
        try:
            progress, world = self._load(Path(path), fingerprint)
        except CheckpointError as e:
            err = e
        except Exception as e:  # a malformed state: name the file, keep the cause
            err = CheckpointError(
                f"checkpoint {path} cannot be resumed ({type(e).__name__}: {e}); {RESUME_HINT}"
            )
            err.__cause__ = e
        if self.comm.size > 1:
            resumed = progress is not None
            mine = [float(err is not None), float(resumed),
                    float(progress.iteration if progress is not None else -1), float(world)]
            flags = torch.tensor(mine + [-x for x in mine[1:]], dtype=torch.float64,
                                 device=self.fine.device)
            flags = self.comm.all_reduce(flags, "max", "the checkpoint check").tolist()
            failed, hi, lo = flags[0], flags[1:4], [-x for x in flags[4:]]
            if err is None:
                err = self._disagreement(path, failed, hi, lo)
        if err is not None:
            raise err
        return progress

    def _source(self, path: Path) -> tuple[int, dict[int, Path], dict[Path, Any]]:
        """The newest checkpoint set under ``path``: the ranks that wrote it, the files of
        it that exist by rank, and the states already read (to read no file twice).

        One rank writes ``path``, P ranks ``path.rank0 .. path.rank<P-1>`` (P is read from
        ``path.rank0``, or the lowest rank file there is). World 0: no file at all.
        """
        ranks = rank_files(path)
        single = path if path.is_file() else None
        if single is None and not ranks:
            return 0, {}, {}
        if single is not None and ranks:  # both layouts: the most recently written wins
            newest = max(f.stat().st_mtime for f in ranks.values())
            if single.stat().st_mtime >= newest:
                ranks = {}
            else:
                single = None
        if single is not None:
            return 1, {0: single}, {}
        lowest = ranks[min(ranks)]
        state = load_checkpoint(lowest)
        world = state.get("world")
        if not is_integer(world) or world < 2:
            raise CheckpointError(
                f"checkpoint {lowest} does not say how many ranks wrote it (world={world!r}); "
                f"{RESUME_HINT}"
            )
        world = int(world)
        return world, {r: f for r, f in ranks.items() if r < world}, {lowest: state}

    def _load(self, path: Path, fingerprint: dict) -> tuple[Progress | None, int]:
        """Load the checkpoint at ``path`` into this rank's slab: (its progress, or None
        without one; the ranks that wrote it)."""
        world, files, read = self._source(path)
        if not world:
            return None, 0
        own = files.get(self.comm.rank)
        if world == self.comm.size and own is not None:
            state = read.pop(own, None) or load_checkpoint(own)
            if tuple(state.get("slab", ())) == (self.slab.start, self.slab.stop):
                return self.load_state_dict(state, fingerprint, own), world
            read[own] = state
        return self._load_reslabbed(path, fingerprint, world, files, read), world

    def _load_reslabbed(
        self, path: Path, fingerprint: dict, world: int, files: dict[int, Path],
        read: dict[Path, Any],
    ) -> Progress:
        """Assemble this rank's slab (and ghost) from the slabs ``world`` ranks wrote."""
        missing = [str(rank_file(path, r, world)) for r in range(world) if r not in files]
        if missing:
            raise CheckpointError(
                f"checkpoint {path} is incomplete: it was written by {world} ranks, but "
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing. "
                "Restore the missing files, or delete the others to start afresh (or run "
                "without resume)"
            )
        lo, hi, nt = self.slab.start, self.slab.stop, self.nt
        U = self.fine
        U.zero_()
        covered, head = 0, None
        for r in range(world):
            f = files[r]
            state = read.pop(f, None) or load_checkpoint(f)
            check_fingerprint(state.get("fingerprint"), fingerprint, f)
            slab = tuple(state.get("slab", ()))
            if state.get("world") != world or len(slab) != 2 or slab[0] != covered:
                raise CheckpointError(
                    f"checkpoint {f} does not continue the slabs of {path} (rank {r} of "
                    f"{world}: slab {slab}, world {state.get('world')}, expected a slab from "
                    f"point {covered}): the files are from different runs; {RESUME_SET_HINT}"
                )
            a, b = int(slab[0]), int(slab[1])
            self._check_rows(state, f, b - a + 1)
            if head is None:
                head = {k: state[k] for k in ("iteration", "residuals", "iter_times")}
                head["file"] = f
            elif int(state["iteration"]) != int(head["iteration"]):
                raise CheckpointError(
                    f"the files of checkpoint {path} are from different iterations ("
                    f"{head['file']}: {head['iteration']}, {f}: {state['iteration']}): the "
                    f"run stopped while writing them; {RESUME_SET_HINT}"
                )
            # rows 1.. of a file are points a .. b-1; this rank needs lo-1 (ghost) .. hi-1
            first, last = max(a, lo - 1, 0), min(b, hi)
            if first < last:
                U[first - lo + 1 : last - lo + 1] = state["u"][first - a + 1 : last - a + 1].to(U)
            covered = b
            del state
        if covered != nt + 1 or head is None:
            raise CheckpointError(
                f"checkpoint {path} covers points 0 .. {covered - 1}, not the {nt + 1} fine "
                f"points of this problem; {RESUME_HINT}"
            )
        return Progress(int(head["iteration"]), [float(x) for x in head["residuals"]],
                        [float(x) for x in head["iter_times"]], None)

    def _disagreement(
        self, path: str | Path, failed: float, hi: list[float], lo: list[float]
    ) -> CheckpointError | None:
        """The error every rank raises when the ranks' resumes disagree (``hi``/``lo``: the
        largest and smallest of resumed, iteration, writers' world over the ranks)."""
        if failed:
            return CheckpointError(
                f"rank {self.comm.rank}: another rank could not resume from checkpoint "
                f"{path}; see its error"
            )
        if hi[0] != lo[0]:
            return CheckpointError(
                f"some ranks found checkpoint {path} and others did not: every rank must "
                f"see the same files (a shared file system); {RESUME_SET_HINT}"
            )
        if hi[2] != lo[2]:
            return CheckpointError(
                f"the ranks found checkpoints of {path} written by {lo[2]:g} and by "
                f"{hi[2]:g} ranks: files of different runs are mixed there; {RESUME_SET_HINT}"
            )
        if hi[1] != lo[1]:
            return CheckpointError(
                f"the ranks' files of checkpoint {path} are from different iterations "
                f"({lo[1]:g} and {hi[1]:g}): the run stopped while writing them; "
                f"{RESUME_SET_HINT}"
            )
        return None
