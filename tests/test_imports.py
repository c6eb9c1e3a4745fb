"""The shape of ltrain's imports: no cycles, the library never imports the app, no private names across.

The graph is read from the source with `ast`, function-level imports included: an import inside a
function runs as surely as one at the top, only later. Imports under `if TYPE_CHECKING:` never run
and are left out. Parent packages a dotted import runs on the way are left out too: Python finishes
those before it starts the child, so they cannot close a cycle that matters.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ltrain"
# The app's entry modules: `python -m ltrain` runs the command (Python runs __main__ as a script),
# and `ltrain.cli` is LightningCLI, user-facing Python API built on the app's config machinery.
# Both may import ltrain.app; the library imports neither.
APP = ("ltrain.app", "ltrain.__main__", "ltrain.cli")


def module_files() -> dict[str, Path]:
    files = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def imports_of(path: Path, module: str, modules: set[str]) -> list[tuple[str, str]]:
    """(imported module, imported name or '') for every ltrain import in `path` that can run."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, "") for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{source}" if node.module else base
            for alias in node.names:
                if f"{source}.{alias.name}" in modules:
                    found.append((f"{source}.{alias.name}", ""))
                elif source in modules:
                    found.append((source, alias.name))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _is_type_checking(test: ast.expr) -> bool:
    name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", None)
    return name == "TYPE_CHECKING"


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {
        module: {target for target, _ in imports_of(path, module, set(files))} - {module}
        for module, path in files.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    done: set[str] = set()

    def visit(path: list[str]) -> list[str] | None:
        for target in sorted(graph[path[-1]]):
            if target in path:
                return path[path.index(target) :] + [target]
            if target not in done:
                cycle = visit([*path, target])
                if cycle:
                    return cycle
        done.add(path[-1])
        return None

    for module in sorted(graph):
        if module not in done:
            cycle = visit([module])
            if cycle:
                return cycle
    return None


def _in_app(module: str) -> bool:
    return any(module == app or module.startswith(app + ".") for app in APP)


def test_find_cycle_finds_a_cycle_through_three_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_ltrain_import_graph_has_no_cycle():
    graph = import_graph()
    assert "ltrain.app.cli" in graph and "ltrain.module" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_library_never_imports_the_app():
    reaching = {
        module: sorted(t for t in targets if _in_app(t))
        for module, targets in import_graph().items()
        if not _in_app(module)
    }
    assert {module: targets for module, targets in reaching.items() if targets} == {}


def test_app_imports_no_private_names_from_other_modules():
    files = module_files()
    private = [
        f"{module} imports {name} from {source}"
        for module, path in files.items()
        if _in_app(module)
        for source, name in imports_of(path, module, set(files))
        if name.startswith("_") and not name.endswith("__") and source != module
    ]
    assert private == []


def test_every_module_imports_when_it_is_the_first_one_imported():
    """The static graph leaves out the packages a dotted import runs on the way, so a cycle that
    closes through a package's `__init__` only shows when that module is imported first: import
    each one first, in one fresh interpreter (ltrain's modules dropped between two; torch stays)."""
    import subprocess
    import sys

    script = (
        "import importlib, sys, torch\n"
        f"names = {sorted(m for m in module_files() if not m.endswith('__main__'))!r}\n"
        "failed = []\n"
        "for name in names:\n"
        "    for key in [k for k in sys.modules if k == 'ltrain' or k.startswith('ltrain.')]:\n"
        "        del sys.modules[key]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as error:\n"
        "        failed.append(f'{name}: {error}')\n"
        "print('\\n'.join(failed))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""
