"""Code digests for the workflow: the stargrad source a rule runs, found from the static
import graph of its entry points, so that editing a module reruns exactly the rules that
import it (directly or through other modules) and nothing else.

Snakemake tracks a `script:`'s own file but not the modules it imports; each rule passes
`code_digest(script, ...)` as a param instead. The graph is read with `ast`, never by importing:
every `import stargrad...` / `from stargrad... import` / relative import in a module counts,
wherever it stands (module level or inside a function) except under `if TYPE_CHECKING:`, and
importing a submodule counts its parent packages' `__init__` too, as Python runs them. Imports made by name at run time
(`importlib.import_module`, as `models.build` does for a family) are invisible to it: a rule
that builds a model names the family's module as a second entry point. A string literal equal
to the name of a file in `stargrad/data/` adds that file (the line list, the windows).
"""
from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = "stargrad"
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"


@lru_cache(maxsize=None)
def module_path(name: str) -> Path | None:
    """Source file (resolved) of a stargrad module name ('stargrad.models.mlp'), None if there
    is none."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = ROOT.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path.resolve()
    return None


def _module_name(path: Path) -> str | None:
    try:
        rel = path.resolve().relative_to(ROOT)
    except ValueError:
        return None
    parts = [PACKAGE, *rel.with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@lru_cache(maxsize=None)
def _data_names() -> frozenset[str]:
    return frozenset(p.name for p in DATA.iterdir()) if DATA.is_dir() else frozenset()


#: The fields of a node that hold statements: the only places an import statement can be.
_STATEMENT_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")


def _import_statements(tree: ast.AST):
    """The Import / ImportFrom statements of `tree`, visiting statements only (expressions
    cannot hold one) and skipping the bodies of `if TYPE_CHECKING:` blocks (their `else:` still
    counts)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif _is_type_checking_block(node):
            todo.extend(node.orelse)
        else:
            for field in _STATEMENT_FIELDS:
                todo.extend(getattr(node, field, ()))


def _named_data(tree: ast.AST, source: str) -> set[str]:
    """The data files (`DATA`) named by a string constant of `tree`; the whole tree is walked
    only when its `source` mentions one."""
    candidates = {name for name in _data_names() if name in source}
    if not candidates:
        return set()
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in candidates}


@lru_cache(maxsize=None)
def _direct_imports(path: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(stargrad modules imported by the file at `path`, data files it names)."""
    source = path.read_text()
    tree = ast.parse(source, filename=str(path))
    name = _module_name(path)
    package = (name if path.name == "__init__.py" else name.rsplit(".", 1)[0]) if name else None
    required, optional = set(), set()
    for node in _import_statements(tree):
        if isinstance(node, ast.Import):
            required.update(alias.name for alias in node.names)
        else:
            if node.level:
                if package is None:
                    continue
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1]
                                + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            required.add(base)
            optional.update(f"{base}.{alias.name}" for alias in node.names)
    modules = set()
    for imported in required | optional:
        if imported.split(".")[0] != PACKAGE:
            continue
        if imported in required and module_path(imported) is None:
            raise ImportError(f"{path}: imports {imported}, which is not a stargrad module")
        modules.update(m for m in _with_parents(imported) if module_path(m) is not None)
    return frozenset(modules), frozenset(_named_data(tree, source))


def _is_type_checking_block(node) -> bool:
    """`if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`): imports for annotations only."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def closure(*entries) -> list[Path]:
    """Every file the entries run: each entry is a script path or a stargrad module name;
    returns the entry scripts, the stargrad modules they import transitively, and the data
    files those modules name, sorted."""
    files: set[Path] = set()
    todo: list[Path] = []
    for entry in entries:
        path = module_path(entry) if str(entry).startswith(f"{PACKAGE}.") or entry == PACKAGE \
            else Path(entry)
        if path is None or not path.is_file():
            raise FileNotFoundError(f"code_digest: no source for entry point {entry!r}")
        todo.append(path.resolve())
        name = _module_name(path)
        todo += [module_path(m) for m in (_with_parents(name)[:-1] if name else [])]
    while todo:
        path = todo.pop()
        if path in files:
            continue
        files.add(path)
        modules, data = _direct_imports(path)
        todo += [module_path(m) for m in modules]
        files.update((DATA / name).resolve() for name in data)
    return sorted(files)


def code_digest(*entries) -> str:
    """Short SHA-1 over the contents (and names) of `closure(*entries)`."""
    digest = hashlib.sha1()
    for path in closure(*entries):
        try:
            label = path.relative_to(ROOT.parent)
        except ValueError:
            label = Path(path.name)
        digest.update(label.as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
