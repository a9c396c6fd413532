"""The shape of the code: no import cycle among fastdqn's modules (function-level imports
included: a lazy import only hides a cycle from the interpreter, not from the reader)."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "fastdqn"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                for alias in node.names:  # `from . import backends` names a module
                    deps.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep, path + [dep])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = import_graph()
    assert "fastdqn.bench.jobs" in graph["fastdqn.bench.launchers"]  # relative imports resolved
    assert "fastdqn.envs.backends" in graph["fastdqn.envs.vector"]    # `from . import backends`, lazily


# --- flag sites ---------------------------------------------------------------------------

RECIPE = ("updates_per_step", "n_step", "double", "dueling", "priority_alpha")  # Hyperparams that switch a code path
TWO_SITES = {"no_grad": 2,  # action selection and the target net's forward
             "envs": 2}     # the host env copies (vector.py) and the device loop's games


def test_every_flag_is_marked_where_it_acts():
    import re
    from dataclasses import fields

    from fastdqn.config import Flags
    marks = re.findall(r"# flag site: (\w+)", "\n".join(p.read_text() for p in PKG.rglob("*.py")))
    counts = {name: marks.count(name) for name in set(marks)}
    names = [f.name for f in fields(Flags)] + list(RECIPE)
    want = {name: TWO_SITES.get(name, 1) for name in names}
    assert counts == want, {n: (counts.get(n, 0), want.get(n, 0)) for n in set(counts) | set(want)
                            if counts.get(n, 0) != want.get(n, 0)}


def test_every_fastdqn_loop_collects_through_the_one_round():
    """The serial loop, the device loop and the parallel players act, step and store through
    loops/collect.Collector; none sends to an env or writes a replay on its own (ptan's reference
    loop keeps ptan's pipeline)."""
    for name in ("serial", "device", "parallel"):
        tree = ast.parse((PKG / "loops" / f"{name}.py").read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "collect"
                    for a in n.names}
        calls = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
        assert "Collector" in imported, name
        assert not calls & {"send", "recv", "step", "start_where"}, (name, calls & {"send", "recv", "step", "start_where"})
