"""Tests of the library's shape: no import cycles, small trainer files, the module↔trainer contract.

Imports are read from the source with `ast`: those that run when a module is imported (not the
ones inside functions or under `if TYPE_CHECKING:`) form the graph that must have no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ltrain
from ltrain.module import TrainerContract

ROOT = Path(ltrain.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_time_imports(path: Path, known: set[str]) -> set[str]:
    """The ltrain modules `path` imports at module level (the submodule when one is named)."""
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for block in ("body", "orelse", "finalbody", "handlers"):
                    for part in getattr(node, block, []):
                        visit(part.body if isinstance(part, ast.ExceptHandler) else [part])
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in known)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    if submodule in known:
                        found.add(submodule)
                    elif node.module in known:
                        found.add(node.module)

    visit(ast.parse(path.read_text()).body)
    return found


def test_ltrain_modules_import_each_other_without_cycles():
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {name: import_time_imports(path, set(files)) - {name} for name, path in files.items()}
    cycles = []
    state: dict[str, str] = {}

    def walk(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                cycles.append(trail[trail.index(other) :] + [other])
            elif other not in state:
                walk(other, [*trail, other])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert cycles == []


def test_module_and_trainer_do_not_import_each_other():
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    assert not {
        name for name in import_time_imports(ROOT / "module.py", set(files))
        if name.startswith("ltrain.trainer")
    }  # fmt: skip
    module_source = (ROOT / "module.py").read_text()
    assert "ltrain.trainer" not in module_source


def test_no_file_of_the_package_is_over_600_lines():
    lengths = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in ROOT.rglob("*.py")
    }
    assert {name: n for name, n in lengths.items() if n > 600} == {}


def test_module_reads_no_private_trainer_member():
    tree = ast.parse((ROOT / "module.py").read_text())
    private = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and ast.unparse(node.value) in ("self.trainer", "self._trainer", "trainer", "self._trainer")
    ]
    assert private == []


def test_the_trainer_provides_everything_the_module_contract_names(tmp_path):
    trainer = ltrain.Trainer(default_root_dir=tmp_path, logger=False, accelerator="cpu")
    assert isinstance(trainer, TrainerContract)
    named = [n for n in dir(TrainerContract) if not n.startswith("_")]
    named += list(TrainerContract.__annotations__)
    assert all(hasattr(trainer, name) for name in named)
