"""The import rules of docs/ARCHITECTURE.md, checked by walking the package's imports.

Layers, bottom up: the floor ``runtime``; ``core`` and ``common`` (neither imports the
other); ``problems``, ``models``, ``data``, ``testing``; the trainer; the applications
``training``, ``parareal``, ``layerparallel``; ``cli`` on top.
A module may import its own package and the layers below it, never a sibling at its own
layer; nothing imports ``cli``; module-level imports form no cycle; and no module imports
another module's private (underscore) names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import torchpint

ROOT = Path(torchpint.__file__).parent
LAYER = {
    "runtime": 0,
    "core": 1, "common": 1,
    "problems": 2, "models": 2, "data": 2, "testing": 2,
    "trainer": 3,
    "training": 4, "parareal": 4, "layerparallel": 4,
    "cli": 5, "__main__": 6,
}  # fmt: skip


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(name: str) -> list[tuple[str, list[str], bool]]:
    """``(imported module, imported names, at module level)`` for every torchpint import
    of module ``name`` (relative imports resolved; TYPE_CHECKING blocks left out)."""
    tree = ast.parse(MODULES[name].read_text())
    is_pkg = MODULES[name].name == "__init__.py"
    found: list[tuple[str, list[str], bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names if a.name.startswith("torchpint")]
                found.extend((n, [], top) for n in names)
            elif isinstance(child, ast.ImportFrom):
                mod = child.module or ""
                if child.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - child.level + 1]
                    mod = ".".join([*base, mod] if mod else base)
                if mod.startswith("torchpint"):
                    found.append((mod, [a.name for a in child.names], top))
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            visit(child, top and not nested)

    visit(tree, True)
    return found


def _package(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else None


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m != "torchpint"))
def test_layering(name):
    pkg = _package(name)
    assert pkg in LAYER, f"{name}: package {pkg!r} has no layer; add it to ARCHITECTURE.md"
    for mod, _names, _top in _imports(name):
        other = _package(mod)
        assert other is not None, f"{name} imports the package root; import the subpackage"
        if other == pkg:
            continue
        assert other != "cli" or pkg == "__main__", f"{name} imports {mod}: only __main__ may"
        assert LAYER[other] < LAYER[pkg], (
            f"{name} (layer {LAYER[pkg]}) imports {mod} (layer {LAYER[other]}): a module "
            "may import only its own package and the layers below"
        )


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_names_from_other_modules(name):
    for mod, names, _top in _imports(name):
        if mod == name:
            continue
        private = [
            n for n in names
            if n.startswith("_") and not n.startswith("__")
            and not (f"{mod}.{n}" in MODULES and _package(mod) == _package(name))
        ]  # a package's own private submodules are fine; private names never
        assert not private, f"{name} imports private names {private} from {mod}"


def test_no_import_cycles():
    graph = {
        name: {m for m, _, top in _imports(name) if top and m in MODULES and m != name}
        for name in MODULES
    }
    # a package's __init__ importing its own modules is not a cycle with them
    graph = {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}

    def walk(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycle = path[path.index(m):] + [m] if m in path else [n, m]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if m not in state:
                walk(m, [*path, m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            walk(n, [n])


def test_executors_know_nothing_of_the_network():
    """Parareal executors get the chunks' modules (``Stages``), never the network: they
    import only each other, ``common`` and the floor (``runtime``)."""
    allowed = ("torchpint.parareal.executors", "torchpint.common", "torchpint.runtime")
    for name in MODULES:
        if name.startswith("torchpint.parareal.executors"):
            beyond = sorted({m for m, _, _ in _imports(name) if not m.startswith(allowed)})
            assert not beyond, f"{name} imports {beyond}"


def test_the_rules_can_fail(tmp_path, monkeypatch):
    """The walker sees a core module importing an application (so the tests can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from torchpint.training import train_mgrit\n")
    monkeypatch.setitem(MODULES, "torchpint.core.bad", bad)
    with pytest.raises(AssertionError, match="layer 1"):
        test_layering("torchpint.core.bad")


def test_public_api_resolves():
    """Every name the package root exports is importable, and nothing else is listed."""
    assert sorted(torchpint.__all__) == sorted(torchpint._EXPORTS)
    for name in torchpint.__all__:
        assert getattr(torchpint, name) is not None


# torch.distributed's communication functions: only the floor (torchpint.runtime) calls them
COMMUNICATION = frozenset({
    "send", "recv", "isend", "irecv", "all_reduce", "all_gather", "all_gather_object",
    "all_gather_into_tensor", "gather_object", "broadcast", "broadcast_object_list",
    "barrier", "monitored_barrier", "reduce", "scatter", "scatter_object_list", "gather",
    "batch_isend_irecv", "reduce_scatter", "reduce_scatter_tensor", "all_to_all",
    "all_to_all_single", "new_group", "new_subgroups",
})  # fmt: skip


def _communication_calls(path: Path) -> list[str]:
    """``line: call`` for every call of a ``torch.distributed`` communication function in
    the module at ``path``: ``dist.all_reduce(...)`` where ``dist`` is bound to
    ``torch.distributed`` (``import torch.distributed as dist``, at any depth),
    ``torch.distributed.all_reduce(...)``, and names imported from it
    (``from torch.distributed import all_reduce``)."""
    tree = ast.parse(path.read_text())
    modules: set[str] = set()  # local names bound to the torch.distributed module
    functions: dict[str, str] = {}  # local name -> communication function imported
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "torch.distributed" and a.asname:
                    modules.add(a.asname)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            for a in node.names:
                if node.module == "torch" and a.name == "distributed":
                    modules.add(a.asname or a.name)
                elif node.module in ("torch.distributed", "torch.distributed.distributed_c10d") \
                        and a.name in COMMUNICATION:
                    functions[a.asname or a.name] = a.name

    def dotted(node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            base = dotted(node.value)
            return None if base is None else f"{base}.{node.attr}"
        return None

    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id in functions:
            found.append((node.lineno, f.id))
        elif isinstance(f, ast.Attribute) and f.attr in COMMUNICATION:
            base = dotted(f.value)
            c10d = ("torch.distributed", "torch.distributed.distributed_c10d")
            if base in modules or base in c10d or (
                base is not None and base.split(".")[0] in modules
                and base.split(".", 1)[-1] == "distributed_c10d"
            ):
                found.append((node.lineno, f"{base}.{f.attr}"))
    return [f"{line}: {call}" for line, call in sorted(found)]


@pytest.mark.parametrize(
    "name", sorted(m for m in MODULES if not m.startswith("torchpint.runtime"))
)
def test_only_the_floor_calls_torch_distributed_communication(name):
    """Every message goes through :mod:`torchpint.runtime.comm` (timeouts, typed peer
    errors): no module outside the floor calls torch.distributed's communication functions
    (``get_rank``, ``get_world_size``, ``is_initialized``... are fine)."""
    calls = _communication_calls(MODULES[name])
    assert not calls, (
        f"{name} calls torch.distributed directly at {calls}: use the floor's communicator "
        "(torchpint.runtime.comm: Comm / GroupComm, new_group)"
    )


def test_the_communication_rule_can_fail(tmp_path, monkeypatch):
    """The walker sees each way of calling torch.distributed's communication functions,
    and lets the harmless ones pass."""
    bad = {
        "import torch.distributed as dist\ndist.all_reduce(t)\n": "dist.all_reduce",
        "import torch\ntorch.distributed.barrier()\n": "torch.distributed.barrier",
        "from torch import distributed as d\nd.gather_object(o, out)\n": "d.gather_object",
        "from torch.distributed import all_gather as ag\nag(ts, t)\n": "ag",
        "def f():\n    import torch.distributed as dist\n    dist.new_group([0])\n":
            "dist.new_group",
    }
    for i, (text, call) in enumerate(bad.items()):
        path = tmp_path / f"bad{i}.py"
        path.write_text(text)
        monkeypatch.setitem(MODULES, f"torchpint.core.bad{i}", path)
        with pytest.raises(AssertionError, match=call.replace(".", r"\.")):
            test_only_the_floor_calls_torch_distributed_communication(f"torchpint.core.bad{i}")
    fine = tmp_path / "fine.py"
    fine.write_text("import torch.distributed as dist\ndist.get_rank(); dist.is_initialized()\n"
                    "comm.all_reduce(t, 'sum', 'x')\n")
    monkeypatch.setitem(MODULES, "torchpint.core.fine", fine)
    test_only_the_floor_calls_torch_distributed_communication("torchpint.core.fine")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name):
    """Small modules with one clear job: no file in src/ over 500 lines."""
    lines = MODULES[name].read_text().count("\n")
    assert lines <= 500, f"{name} has {lines} lines; split it by job"
