"""The package's static import graph (`stargrad.pipeline.codedigest`), which the rules' code
digests are built from: no cycles, and no import made by name that the digests cannot see
beyond the two that are declared (a family built by name, `stargrad.load`)."""
import ast
from pathlib import Path

from stargrad.pipeline import codedigest

SRC = codedigest.ROOT


def _modules() -> dict[str, Path]:
    return {codedigest._module_name(path): path for path in SRC.rglob("*.py")}


def _import_graph() -> dict[str, set[str]]:
    """Module -> stargrad modules it imports (anywhere in the file), parent packages of an
    imported module left out: Python runs them, but they import nothing of their children."""
    graph = {}
    for name, path in _modules().items():
        imported, _ = codedigest._direct_imports(path)
        own_parents = set(codedigest._with_parents(name))
        graph[name] = {m for m in imported if m not in own_parents
                       and not any(other.startswith(m + ".") for other in imported)}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle():
    graph = _import_graph()
    assert "stargrad.api" in graph and "stargrad.attribution.explain" in graph["stargrad.api"]
    assert _cycles(graph) == []


def test_no_import_is_hidden_from_the_digests_but_the_declared_two():
    by_name = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(
                    node.func, "id", None)) in ("import_module", "__import__"):
                by_name.append(name)
    # models._module builds a family by name (rules name the family module as a second entry
    # point, common.smk family_module); the package's `load` is looked up lazily so that
    # `import stargrad` imports nothing; no rule calls stargrad.load.
    assert sorted(by_name) == ["stargrad", "stargrad.models"]


def test_prediction_digests_leave_the_attribution_engine_out_and_the_api_has_it():
    predict = {p.relative_to(SRC).as_posix()
               for p in codedigest.closure("stargrad.stages.predict")}
    api = {p.relative_to(SRC).as_posix() for p in codedigest.closure("stargrad.api")
           if SRC in p.parents}
    assert "applied.py" in predict
    assert not any(p.startswith("attribution/") for p in predict)
    assert {"attribution/explain.py", "attribution/jacobian.py"} <= api
