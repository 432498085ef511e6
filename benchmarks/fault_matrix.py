"""Fault matrix of the exit-code contract: every fault runs as real ``python -m torchpint``
processes (dead and stopped peers, full and read-only disks, two writers, signals, out of
memory, bad plot paths, injected bugs); the table shows every process's exit code, the
seconds, whether stderr holds a traceback, its line count and its first torchpint line.

``--code-root DIR`` runs the CLI of another checkout (``DIR/src`` first on PYTHONPATH);
``--compare-root OLD`` runs each case on OLD ("before") and then on ``--code-root``
("after"). Old spellings (``--checkpoint-dir``, ``mgrit --nt``, train-layer-parallel's
``--steps``) keep one command valid on both; the new code adds a deprecation line to stderr
for them (a ``d`` after the line count; ``deprecations`` in the JSON).

    git worktree add /tmp/old18 18f5874
    python benchmarks/fault_matrix.py --compare-root /tmp/old18 \\
        --json benchmarks/results/fault_matrix.json

The tmpfs cases (11, 12, 15) need root (mount); they are skipped with a note otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
TORCHRUN = str(Path(PY).with_name("torchrun"))
T = [PY, "-m", "torchpint"]
TRACEBACK = "Traceback (most recent call last)"
DEPRECATED = re.compile(r"torchpint: warning: --\S+ is deprecated")
OURS = re.compile(r"^(\[rank\d+\]:\s*)?torchpint [\w-]+:")  # a torchpint line, not a path
WORK = r"^MGRIT:|epoch 1/|^iter +1 "  # stdout lines that show the work was done
PP = ["train-parareal", "--model", "vgg-small", "--width", "4", "--image-size", "8",
      "--batch-size", "64", "--no-progress"]
LP = ["train-layer-parallel", "--image-size", "8", "--channels", "4", "--levels", "2",
      "--cfactor", "2", "--batch-size", "256", "--no-progress", "--steps", "4"]
TMV = ["train-mgrit", "--problem", "xor", "--no-progress", "--solver", "F", "--data",
       "serial", "--lr", "0.1", "--lr-max", "30", "--steps", "1600"]
TM = [*TMV, "--no-verify"]
FILLER = "filler.bin"
INJECT = ("import sys, torch\ndef boom(*a, **k):\n    raise {}('injected fault')\n"
          "torch.Tensor.backward = boom\nfrom torchpint.cli import main\n"
          "sys.exit(main(sys.argv[1:]))\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc), so that torchrun's workers die too."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        with contextlib.suppress(ValueError, OSError, IndexError):
            parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        top = todo.pop()
        todo += [c for c, p in parent.items() if p == top]
        out += [c for c, p in parent.items() if p == top]
    return out


class Proc:
    """A started process, its stdout/stderr files, its start and end times."""

    def __init__(self, name: str, cmd: list[str], popen: subprocess.Popen[bytes], out: Path,
                 err: Path) -> None:
        self.name, self.cmd, self.popen, self.out, self.err = name, cmd, popen, out, err
        self.t1: float | None = None
        self.t0, self.timed_out, self.victim = time.monotonic(), False, ""

    def text(self, err: bool = False) -> str:
        return (self.err if err else self.out).read_text(errors="replace")

    def kill(self) -> None:
        for pid in [*descendants(self.popen.pid), self.popen.pid]:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        self.popen.wait()
        self.t1 = self.t1 or time.monotonic()


class Disk:
    """A 2 MB tmpfs (root only): filled, remounted read-only, cleared between cases."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)],
                           capture_output=True, text=True)
        self.mounted, self.error = not r.returncode, r.stderr.strip()

    def remount(self, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True)

    def clear(self) -> None:
        self.remount("rw")
        for child in self.path.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()

    def fill(self) -> None:
        fd = os.open(self.path / FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        for chunk in (b"\0" * 65536, b"\0" * 4096, b"\0"):
            with contextlib.suppress(OSError):
                while os.write(fd, chunk):
                    pass
        os.close(fd)

    def hashes(self) -> dict[str, str]:
        return {str(p.relative_to(self.path)): hashlib.sha256(p.read_bytes()).hexdigest()[:12]
                for p in sorted(self.path.rglob("*")) if p.is_file() and p.name != FILLER}

    def unmount(self) -> None:
        if self.mounted:  # lazy: detached now even if a killed process still holds a file
            self.mounted = bool(subprocess.run(["umount", "-l", str(self.path)]).returncode)


class Runner:
    """Starts the CLI of one checkout (``root/src`` first on PYTHONPATH) in a case's folder
    and kills whatever it started when the case ends."""

    def __init__(self, root: Path, work: Path, disk: Disk | None, hard: float) -> None:
        self.root, self.work, self.disk, self.hard = root, work, disk, hard
        self.live: list[Proc] = []
        self.cwd = work

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TORCHPINT_", "MASTER_", "RANK", "LOCAL_", "WORLD_"))}
        path = [str(self.root / "src"), *filter(None, [env.get("PYTHONPATH")])]
        env.update(PYTHONPATH=os.pathsep.join(path), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        return {**env, **(extra or {})}

    def imported(self) -> str:
        return subprocess.run([PY, "-c", "import torchpint; print(torchpint.__file__)"],
                              env=self.env(), capture_output=True, text=True,
                              cwd=self.work).stdout.strip()

    def start(self, name: str, cmd: list[str], extra: dict[str, str] | None = None) -> Proc:
        out, err = self.cwd / f"{name}.out", self.cwd / f"{name}.err"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            popen = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=self.env(extra),
                                     cwd=self.cwd, start_new_session=True)
        self.live.append(Proc(name, cmd, popen, out, err))
        return self.live[-1]

    def ranks(self, args: list[str], world: int) -> list[Proc]:
        """``world`` ranks with the environment torchrun would give them."""
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
               "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world)}
        return [self.start(f"rank{r}", [*T, *args], {**env, "RANK": str(r),
                                                     "LOCAL_RANK": str(r)})
                for r in range(world)]

    def torchrun(self, args: list[str]) -> Proc:
        return self.start("torchrun", [TORCHRUN, "--nproc-per-node", "2", "--master-addr",
                                       "127.0.0.1", "--master-port", str(free_port()),
                                       "-m", "torchpint", *args])

    def finish(self, procs: list[Proc]) -> None:
        """Wait for ``procs``; kill those still running ``hard`` seconds after the start."""
        deadline = min(p.t0 for p in procs) + self.hard
        while any(p.t1 is None for p in procs):
            for p in procs:
                if p.t1 is None and p.popen.poll() is not None:
                    p.t1 = time.monotonic()
                elif p.t1 is None and time.monotonic() > deadline:
                    p.timed_out = True
                    p.kill()
            time.sleep(0.05)

    def run(self, name: str, cmd: list[str]) -> Proc:
        self.finish([self.start(name, cmd)])
        return self.live[-1]

    def wait_for(self, proc: Proc, test: Callable[[], bool], limit: float = 60.0) -> bool:
        end = time.monotonic() + limit
        while time.monotonic() < end and proc.popen.poll() is None:
            if test():
                return True
            time.sleep(0.05)
        return False

    def cleanup(self) -> None:
        for p in self.live:
            if p.popen.poll() is None or descendants(p.popen.pid):
                p.kill()
        self.live.clear()


Outcome = dict[str, Any]  # procs, and optionally fault_at, how, extra, note
Case = Callable[[Runner], Outcome]


def peer_fault(args: list[str], world: int, ready: str, delay: float, sig: int) -> Case:
    """Rank 1 is killed or stopped once rank 0 printed ``ready`` (+``delay`` s)."""
    def case(r: Runner) -> Outcome:
        procs = r.ranks(args, world)
        seen = r.wait_for(procs[0], lambda: bool(re.search(ready, procs[0].text(), re.M)))
        time.sleep(delay)
        victim, name = procs[1], signal.Signals(sig).name
        victim.victim = name + (" (killed at cleanup)" if sig == signal.SIGSTOP else "")
        fault_at = time.monotonic()
        os.kill(victim.popen.pid, sig)
        r.finish([p for p in procs if p is not victim])
        victim.kill()
        how = f"{world} ranks, torchrun's env; {name} rank 1 at {ready!r} +{delay:g} s"
        return {"procs": procs, "fault_at": fault_at, "how": how,
                "note": "" if seen else f"{ready!r} not seen in 60 s; fault injected anyway"}
    return case


def disk_case(prep: list[str], run: list[str], flag: str, name: str, full: bool) -> Case:
    """``prep`` writes a checkpoint/results file on a roomy disk; it is copied to the tmpfs,
    which is then filled (``full``) or remounted read-only, and ``run`` writes there."""
    def case(r: Runner) -> Outcome:
        if r.disk is None or not r.disk.mounted:
            return {"procs": [], "note": "skipped: no tmpfs (mount failed or not root)"}
        roomy, target = r.cwd / "roomy" / name, r.disk.path / name
        first = r.run("prep", [*T, *prep, flag, str(roomy)])
        r.disk.clear()
        if roomy.is_dir():
            shutil.copytree(roomy, target)
        elif roomy.exists():
            shutil.copy2(roomy, target)
        before = r.disk.hashes()
        r.disk.fill() if full else r.disk.remount("ro")
        proc = r.run("run", [*T, *run, flag, str(target)])
        after = r.disk.hashes()
        r.disk.clear()
        intact = bool(before) and all(after.get(k) == v for k, v in before.items())
        return {"procs": [proc], "extra": {
            "previous": ",".join(before) or "none", "previous_intact": intact,
            "left_behind": [k for k in after if k not in before]},
            "note": "" if first.popen.returncode == 0 else "the roomy first run failed"}
    return case


def two_writers(r: Runner) -> Outcome:
    procs = [r.start(f"writer{i}", [*T, *TM, "--checkpoint", "same.pt"]) for i in (1, 2)]
    r.finish(procs)
    return {"procs": procs, "extra": {"files": sorted(p.name for p in r.cwd.glob("same.pt*"))}}


def torchrun_threads(r: Runner) -> Outcome:
    r.finish([r.torchrun([*PP, "--epochs", "1", "--checkpoint-dir", "D"])])
    return {"procs": r.live[-1:], "extra": {"checkpoints": sorted(
        p.name for p in r.cwd.glob("D/*"))}}


def sigterm(torchrun: bool) -> Case:
    """SIGTERM to one train-parareal once its first checkpoint is there, or to torchrun
    running train-mgrit 4 s after the header (the solve takes ~25 s)."""
    def case(r: Runner) -> Outcome:
        if torchrun:
            proc = r.torchrun([*TM, "--steps", "8000", "--checkpoint", "ck"])
            seen = r.wait_for(proc, lambda: "train-mgrit:" in proc.text())
            time.sleep(4.0)
        else:
            proc = r.start("run", [*T, *PP, "--epochs", "20", "--checkpoint-dir", "ck"])
            seen = r.wait_for(proc, (r.cwd / "ck" / "parareal.pt").exists)
        fault_at = time.monotonic()
        os.kill(proc.popen.pid, signal.SIGTERM)
        r.finish([proc])
        files = [str(p.relative_to(r.cwd)) for p in sorted(r.cwd.glob("ck*")) if p.is_file()]
        return {"procs": [proc], "fault_at": fault_at, "note": "" if seen else "sent early",
                "extra": {"files": files + [f"ck/{p.name}" for p in r.cwd.glob("ck/*")]}}
    return case


def single(args: list[str], ulimit: bool = False, files: str = "") -> Case:
    def case(r: Runner) -> Outcome:
        cmd = args if args[0] == PY else [*T, *args]
        if ulimit:  # a cap on the address space keeps the machine safe
            cmd = ["bash", "-c", f"ulimit -v 16000000; exec {shlex.join(cmd)}"]
        proc = r.run("run", cmd)
        extra: dict[str, Any] = {"work_done": bool(re.search(WORK, proc.text(), re.M))}
        if files:
            extra["files"] = sorted(p.name for p in r.cwd.glob(files + "*"))
            extra["stdout_says"] = [s for s in proc.text().splitlines() if files in s]
        return {"procs": [proc], "extra": extra}
    return case


def cases() -> list[tuple[str, str, Case]]:
    dist = ["--executor", "distributed", "--chunks", "2", "--timeout", "10", "--epochs", "200"]
    out: list[tuple[str, str, Case]] = []
    for i, (what, args, world, ready, delay) in enumerate([
            ("parareal", [*PP, *dist], 2, r"epoch 1/", 0.0),
            ("parareal 2x2", [*PP, *dist, "--data-parallel", "2"], 4, r"epoch 1/", 0.0),
            ("train-mgrit", [*TM, "--steps", "8000", "--timeout", "10"], 2, "^train-mgrit:", 4),
            ("mgrit", ["mgrit", "--problem", "dahlquist", "--nt", "200001", "--timeout", "10"],
             2, "time points", 1.5),
            ("layer-par", [*LP, "--epochs", "200", "--timeout", "10"], 2, r"epoch 1/", 0.0)]):
        for j, sig in enumerate((signal.SIGKILL, signal.SIGSTOP)):
            out.append((str(2 * i + j + 1), f"{sig.name} peer {what}",
                        peer_fault(args, world, ready, delay, sig)))
    # the full disk's run writes a bigger file than the previous one it must keep whole
    disk = [([*PP, "--epochs", "1"], ["--width", "8"], "--checkpoint-dir", "ck"),
            (TM, ["--steps", "3200"], "--checkpoint", "m.pt"),
            ([*LP, "--epochs", "1"], ["--channels", "16"], "--checkpoint-dir", "lp")]
    for full, num in ((True, "11"), (False, "12")):
        for (base, bigger, flag, name), sub in zip(disk, "abc", strict=True):
            out.append((num + sub, ("full disk " if full else "read-only ") + base[0],
                        disk_case(base, [*base, *bigger] if full else base, flag, name, full)))
    oom = ["train-parareal", "--image-size", "4096", "--epochs", "1", "--no-progress"]
    return out + [
        ("13", "two writers train-mgrit", two_writers),
        ("14", "torchrun, executor threads", torchrun_threads),
        ("15", "results file on full disk", disk_case(TM, TMV, "--json", "r.json", True)),
        ("16", "SIGTERM train-parareal", sigterm(False)),
        ("17", "SIGTERM torchrun train-mgrit", sigterm(True)),
        ("18a", "out of memory train-parareal", single(oom, ulimit=True)),
        ("18b", "out of memory mgrit", single(["mgrit", "--nt", "100000001", "--nx", "1025"],
                                              ulimit=True)),
        ("19a", "--plot out.xyz", single([*TM, "--plot", "out.xyz"])),
        ("19b", "--plot noext", single([*TM, "--plot", "noext"], files="noext")),
        ("20", "train-mgrit defaults", single(["train-mgrit", "--no-progress"])),
        *[(f"21{s}", f"injected {e}", single([PY, "-c", INJECT.format(e), *PP, "--epochs", "1"]))
          for s, e in (("a", "ZeroDivisionError"), ("b", "TypeError"))]]


def describe(p: Proc) -> dict[str, Any]:
    err = p.text(err=True).splitlines()
    rest = [s for s in err if s.strip() and not DEPRECATED.search(s)]
    return {"name": p.name, "rc": None if p.timed_out else p.popen.returncode,
            "timed_out": p.timed_out, "victim": p.victim,
            "seconds": round((p.t1 or time.monotonic()) - p.t0, 2),
            "traceback": any(TRACEBACK in s for s in err), "stderr_lines": len(err),
            "deprecations": sum(bool(DEPRECATED.search(s)) for s in err),
            "first": rest[0] if rest else "", "last": rest[-1] if rest else "",
            "torchpint_lines": [s for s in rest if OURS.match(s)][:6],
            "stdout_tail": p.text().splitlines()[-2:]}


def run_case(fn: Case, r: Runner, cid: str) -> dict[str, Any]:
    r.cwd = r.work / cid
    r.cwd.mkdir(parents=True)
    t0 = time.monotonic()
    try:
        res = fn(r)
    except Exception as err:  # noqa: BLE001 - a broken case is a row, not the end
        res = {"procs": [], "note": f"harness error: {type(err).__name__}: {err}"}
    finally:
        r.cleanup()
    procs: list[Proc] = res["procs"]
    ends = [p.t1 for p in procs if p.t1 and not p.victim]
    fault = res.get("fault_at")
    main = ([p for p in procs if p.name == "run"] or procs or [None])[0]
    argv = [f"$INJECT({m[1]})" if (m := re.search(r"raise (\w+)", a)) else a
            for a in (main.cmd if main else [])]
    command = (shlex.join(argv).replace(shlex.join(T), "T").replace(PY, "python")
               .replace(TORCHRUN, "torchrun").replace(str(r.work.parent), "$WORK"))
    return {"command": (f"[{res['how']}] " if "how" in res else "") + command,
            "procs": [describe(p) for p in procs], "wall_s": round(time.monotonic() - t0, 2),
            "after_fault_s": round(max(ends) - fault, 2) if fault and ends else None,
            "extra": res.get("extra", {}), "note": res.get("note", "")}


def row(cid: str, title: str, ver: str, c: dict[str, Any]) -> str:
    ps = c["procs"]
    codes = ",".join("T/O" if p["timed_out"] else str(p["rc"]) for p in ps) or "-"
    secs = max((p["seconds"] for p in ps if not p["victim"]), default=0.0)
    tf = "-" if c["after_fault_s"] is None else f"{c['after_fault_s']:.1f}"
    tb = "".join("y" if p["traceback"] else "n" for p in ps) or "-"
    lines = ",".join(f"{p['stderr_lines']}" + "d" * bool(p["deprecations"]) for p in ps)
    said = [s for p in ps if not p["victim"]
            for s in p["torchpint_lines"] or [p["last"] if p["traceback"] else p["first"]]]
    extra = [f"{k}={v}" for k, v in c["extra"].items()] + [c["note"]] * bool(c["note"])
    return (f"{cid:4} {title[:30]:30} {ver:6} {codes:10} {secs:6.1f} {tf:>5} {tb:4} "
            f"{lines or '-':9} {next((s for s in said if s), '')[:90]}"
            + (f"\n{'':43}{' '.join(extra)[:150]}" if extra else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--code-root", type=Path, default=REPO,
                    help="checkout whose src/ runs (default: this repo)")
    ap.add_argument("--compare-root", type=Path, default=None,
                    help="run every case on this checkout first too (the 'before' column)")
    ap.add_argument("--cases", default="", help="comma-separated case ids (default all)")
    ap.add_argument("--hard-timeout", type=float, default=120.0,
                    help="seconds before a case's processes are killed (default 120)")
    ap.add_argument("--json", type=Path, default=None, help="write the matrix as JSON")
    args = ap.parse_args()
    t0, wanted = time.monotonic(), {c for c in args.cases.split(",") if c}
    work = Path(tempfile.mkdtemp(prefix="fault_matrix_"))
    disk = Disk(work / "disk") if os.geteuid() == 0 else None
    roots = [("before", args.compare_root)] * bool(args.compare_root) + [
        ("after", args.code_root)]
    runners = {v: Runner(root.resolve(), work / v, disk, args.hard_timeout) for v, root in roots}
    meta: dict[str, Any] = {
        "python": PY, "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "hard_timeout_s": args.hard_timeout, "inject": INJECT, "roots": {},
        "tmpfs": "none: not root" if disk is None else disk.error or "2 MB tmpfs"}
    matrix: list[dict[str, Any]] = []
    try:
        for v, r in runners.items():
            r.work.mkdir()
            meta["roots"][v] = {"root": str(r.root), "imports": r.imported()}
            if not meta["roots"][v]["imports"].startswith(str(r.root / "src")):
                sys.exit(f"{v}: torchpint is not imported from {r.root / 'src'}: {meta}")
        print(f"{'case':35} {'ver':6} {'codes':10} {'secs':>6} {'t_f':>5} {'tb':4} "
              f"{'lines':9} first torchpint line (else first stderr line)", flush=True)
        for cid, title, fn in cases():
            if not wanted or cid in wanted:
                matrix.append({"id": cid, "title": title})
                for v, r in runners.items():
                    matrix[-1][v] = run_case(fn, r, cid)
                    print(row(cid, title, v, matrix[-1][v]), flush=True)
    finally:
        for r in runners.values():
            r.cleanup()
        if disk is not None:
            disk.unmount()
        shutil.rmtree(work, ignore_errors=True)
    meta["total_s"] = round(time.monotonic() - t0, 1)
    print(f"\ncommands (T = python -m torchpint, python = {PY}, $WORK a temporary folder, "
          "$INJECT(E) = meta.inject in the JSON: torch.Tensor.backward raises E):")
    for e in matrix:
        print(f"  {e['id']:4} {e['after']['command']}")
    print(f"total {meta['total_s']} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "cases": matrix}, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
