"""Signatures of ltrain's own classes, read from their source, so checking a config needs no torch.

`config.resolve()` checks `init_args` against `__init__` signatures, and importing `ltrain.zoo` or
`ltrain.trainer` just to read them costs seconds (torch). For classes inside this package the
source answers instead: the class is found by following `from ... import` re-exports; its
`__init__` parameters and literal defaults are read with `ast`; annotations are evaluated with
builtins, typing, os and pathlib, and with stand-ins (`ClassByName`) for every other class, so
`nn.Module` is the class named `torch.nn.Module`; base classes are followed by name to tell what a
class derives from. A name from outside the standard library in an annotation is taken to be a
class, and a base class from outside ltrain is taken to have a plain metaclass and no `__new__`.

Wherever the source cannot answer exactly (a decorator, a computed default, a name bound inside an
`if`, an `__init__` inherited from outside ltrain), `read_class` returns None and the caller imports
the class. tests/test_cli.py compares every built-in class with what `inspect` says of it imported.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGE = "ltrain"
_ROOT = Path(__file__).resolve().parent.parent  # ltrain/

# outside-ltrain modules whose names an annotation gets for real: standard library, cheap to import
_REAL_MODULES = ("typing", "collections.abc", "os", "pathlib")
_BUILTINS = {
    name: getattr(builtins, name)
    for name in ("int", "float", "str", "bool", "bytes", "complex", "list", "dict", "tuple", "set")
}
# what an annotation may contain: names, attributes, subscripts, `X | Y` and constants, no calls
_HINT_NODES = (
    ast.Name,
    ast.Attribute,
    ast.Subscript,
    ast.BinOp,
    ast.BitOr,
    ast.Constant,
    ast.Tuple,
    ast.List,
    ast.Load,
)
# re-exports are a few levels deep; a cycle of aliases must end
_MAX_DEPTH = 32
_MISSING = object()

# a name's meaning in a module, as the reader follows it:
#   ("class", module, ClassDef)   a class defined in ltrain
#   ("module", module)            a module of ltrain
#   ("outside", dotted)           anything from outside ltrain, by the dotted name it was imported as
#   ("from", module, name)        `from <ltrain module> import name`, followed on demand
#   ("alias", module, expr)       `name = other.name`, followed on demand
#   ("unknown",)                  bound in a way the reader does not follow
Binding = tuple[Any, ...]


class ClassByName(type):
    """The metaclass of stand-ins: classes known by a dotted name only, never imported.

    `stand_in("torch").nn.Module` is the stand-in for `torch.nn.Module`. Stand-ins with one name are
    equal, so hints built from them compare (and deduplicate in unions) like real ones.
    """

    dotted: str

    def __getattr__(cls, name: str) -> type:
        if name.startswith("_"):  # typing probes private and dunder names, which are no classes
            raise AttributeError(name)
        return stand_in(f"{cls.dotted}.{name}")

    def __eq__(cls, other: object) -> bool:
        if isinstance(other, ClassByName):
            return cls.dotted == other.dotted
        return NotImplemented

    def __hash__(cls) -> int:
        return hash(cls.dotted)


def stand_in(dotted: str) -> type:
    """A class that stands for `dotted` (e.g. `torch.nn.Module`) in hints, without importing it."""
    module, _, name = dotted.rpartition(".")
    return ClassByName(name, (), {"dotted": dotted, "__module__": module, "__qualname__": name})


@dataclass(frozen=True)
class ClassInfo:
    """A class read from source: where it is defined, its `__init__` and what it derives from."""

    module: str
    qualname: str
    # as inspect.signature(cls) gives it: no `self`, literal defaults
    signature: inspect.Signature
    # as typing.get_type_hints(cls.__init__) gives them, with stand-ins for classes
    hints: dict[str, Any]
    # itself and every base: ltrain's by where they are defined, others as they were imported
    ancestors: frozenset[str]

    @property
    def path(self) -> str:
        return f"{self.module}.{self.qualname}"

    def derives_from(self, dotted: str) -> bool | None:
        """Whether the class subclasses the class named `dotted`; None when only importing can tell."""
        if dotted in self.ancestors:
            return True
        if _inside(dotted) or all(_inside(name) for name in self.ancestors):
            return False  # a class from outside ltrain never derives from one inside it
        return None


class SourceReader:
    """Reads ltrain's classes from source; one per config check, so each file is parsed once."""

    def __init__(self) -> None:
        self._scopes: dict[str, _Scope | None] = {}

    def read_class(self, dotted: str) -> ClassInfo | None:
        """The class `config` would get by importing `module` and taking `Class` from it.

        None when `dotted` is outside ltrain or the source cannot answer exactly.
        """
        module, _, name = dotted.rpartition(".")
        scope = self._scope(module)
        if scope is None or name not in scope.names:
            return None
        found = self._follow(scope.names[name], 0)
        if found is None or found[0] != "class":
            return None
        _, module, node = found
        ancestors = self._ancestors(module, node, 0)
        init = self._init(module, node, 0)
        if ancestors is None or init is None:
            return None
        return ClassInfo(module, node.name, init[0], init[1], ancestors)

    # ------------------------------------------------------------------ names
    def _scope(self, module: str) -> _Scope | None:
        if module not in self._scopes:
            self._scopes[module] = _parse_scope(module)
        return self._scopes[module]

    def _lookup(self, module: str, name: str, depth: int) -> Binding | None:
        """What `module.name` is once the module has run; a submodule if the module lacks it."""
        scope = self._scope(module)
        if scope is not None and name in scope.names:
            return self._follow(scope.names[name], depth + 1)
        if scope is not None and _source_file(f"{module}.{name}") is not None:
            return ("module", f"{module}.{name}")
        return None

    def _follow(self, binding: Binding, depth: int) -> Binding | None:
        if depth > _MAX_DEPTH or binding[0] == "unknown":
            return None
        if binding[0] == "from":
            return self._lookup(binding[1], binding[2], depth)
        if binding[0] == "alias":
            return self._reference(binding[1], binding[2], depth)
        return binding

    def _reference(self, module: str, node: ast.expr, depth: int) -> Binding | None:
        """What a `name` or `name.attr.attr` expression in `module` refers to."""
        if isinstance(node, ast.Name):
            scope = self._scope(module)
            if scope is None or node.id not in scope.names:
                return None
            return self._follow(scope.names[node.id], depth + 1)
        if isinstance(node, ast.Attribute):
            owner = self._reference(module, node.value, depth + 1)
            if owner is not None and owner[0] == "outside":
                return ("outside", f"{owner[1]}.{node.attr}")
            if owner is not None and owner[0] == "module":
                return self._lookup(owner[1], node.attr, depth + 1)
        return None  # a nested class, a call, ...: not followed

    # ------------------------------------------------------------------ classes
    def _ancestors(self, module: str, node: ast.ClassDef, depth: int) -> frozenset[str] | None:
        if depth > _MAX_DEPTH or node.keywords or node.decorator_list:
            return None  # a metaclass or a class decorator may change anything
        if any({"__new__", "__signature__"} & _bound_names(item) for item in node.body):
            return None  # inspect.signature would read these, even inherited ones, before __init__
        scope = self._scope(module)
        names = {f"{module}.{node.name}"}
        for base in node.bases:
            if isinstance(base, ast.Name) and base.id == "object" and "object" not in scope.names:
                continue
            found = self._reference(module, base, depth)
            if found is None:
                return None
            if found[0] == "outside":
                names.add(found[1])
            elif found[0] == "class":
                inherited = self._ancestors(found[1], found[2], depth + 1)
                if inherited is None:
                    return None
                names |= inherited
            else:
                return None
        return frozenset(names)

    def _init(
        self, module: str, node: ast.ClassDef, depth: int
    ) -> tuple[inspect.Signature, dict[str, Any]] | None:
        """`__init__`'s signature and hints: the class's own, or those of its one base in ltrain."""
        if depth > _MAX_DEPTH:
            return None
        own = [item for item in node.body if "__init__" in _bound_names(item)]
        if own:
            function = own[0]
            if len(own) > 1 or not isinstance(function, ast.FunctionDef):
                return None
            if function.decorator_list:
                return None
            return self._parameters(module, function)
        if not node.bases:
            return inspect.Signature(), {}
        if len(node.bases) > 1:
            return None  # which base's `__init__` wins is the MRO's call
        found = self._reference(module, node.bases[0], depth)
        if found is None or found[0] != "class":
            return None  # inherited from outside ltrain (or from `object` by name): import
        return self._init(found[1], found[2], depth + 1)

    def _parameters(
        self, module: str, function: ast.FunctionDef
    ) -> tuple[inspect.Signature, dict[str, Any]] | None:
        scope = self._scope(module)
        # without postponed annotations they are evaluated in the class body's scope, not read here
        if not scope.postponed_annotations:
            return None
        args = function.args
        kind = inspect.Parameter
        positional = [(a, kind.POSITIONAL_ONLY) for a in args.posonlyargs]
        positional += [(a, kind.POSITIONAL_OR_KEYWORD) for a in args.args]
        if not positional:
            return None  # no `self`
        defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
        listed = [(a, k, d) for (a, k), d in zip(positional, defaults, strict=True)][1:]
        if args.vararg:
            listed.append((args.vararg, kind.VAR_POSITIONAL, None))
        listed += [
            (a, kind.KEYWORD_ONLY, d)
            for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
        ]
        if args.kwarg:
            listed.append((args.kwarg, kind.VAR_KEYWORD, None))
        parameters: list[inspect.Parameter] = []
        hints: dict[str, Any] = {}
        for arg, arg_kind, default_node in listed:
            default = inspect.Parameter.empty
            if default_node is not None:
                try:
                    default = ast.literal_eval(default_node)
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    return None  # computed from names: only running the module gives its value
            parameters.append(inspect.Parameter(arg.arg, arg_kind, default=default))
            if arg.annotation is not None:
                hint = self._hint(module, scope, arg.annotation)
                if hint is _MISSING:
                    return None
                hints[arg.arg] = hint
        return inspect.Signature(parameters), hints

    def _hint(self, module: str, scope: _Scope, node: ast.expr) -> Any:
        """An annotation evaluated as typing.get_type_hints would, with stand-ins for classes."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return _MISSING  # a quoted hint inside a postponed one
        namespace: dict[str, Any] = {}
        for part in ast.walk(node):
            if not isinstance(part, _HINT_NODES):
                return _MISSING
            if isinstance(part, ast.Name):
                namespace[part.id] = self._value(module, scope, part.id)
                if namespace[part.id] is _MISSING:
                    return _MISSING
        try:
            code = compile(ast.Expression(node), f"<{module} annotation>", "eval")
            hint = eval(code, {"__builtins__": {}}, namespace)  # noqa: S307 - names limited above
        except Exception:
            return _MISSING
        return type(None) if hint is None else hint

    def _value(self, module: str, scope: _Scope, name: str) -> Any:
        """What a name in an annotation evaluates to: a builtin, a typing helper or a stand-in."""
        if name not in scope.names:
            return _BUILTINS.get(name, _MISSING)
        found = self._follow(scope.names[name], 0)
        if found is None:
            return _MISSING
        if found[0] == "class":
            return stand_in(f"{found[1]}.{found[2].name}")
        if found[0] == "outside":
            return _outside_value(found[1])
        return _MISSING  # a module of ltrain: attributes of it are not followed


@dataclass
class _Scope:
    """A module's top-level names, and whether its annotations are postponed (strings at runtime)."""

    names: dict[str, Binding]
    postponed_annotations: bool


def _parse_scope(module: str) -> _Scope | None:
    file = _source_file(module)
    if file is None:
        return None
    try:
        tree = ast.parse(file.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    scope = _Scope({}, postponed_annotations=False)

    def bind(name: str, binding: Binding) -> None:
        # a name bound twice is whatever ran last, which only running the module tells
        if scope.names.get(name, binding) != binding:
            binding = ("unknown",)
        scope.names[name] = binding

    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            bind(node.name, ("class", module, node))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                imported = alias.name if alias.asname else alias.name.partition(".")[0]
                bind(alias.asname or imported, _module_binding(imported))
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, package)
            if source == "__future__":
                scope.postponed_annotations |= any(a.name == "annotations" for a in node.names)
                continue
            for alias in node.names:
                if alias.name == "*":
                    return None  # any name may come from there
                local = alias.asname or alias.name
                if _inside(source):
                    bind(local, ("from", source, alias.name))
                else:
                    bind(local, ("outside", f"{source}.{alias.name}"))
        elif (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, (ast.Name, ast.Attribute))
        ):
            bind(node.targets[0].id, ("alias", module, node.value))
        else:
            for name in _bound_names(node):
                bind(name, ("unknown",))
    return scope


def _bound_names(node: ast.stmt) -> set[str]:
    """Names a statement binds or changes: a function's name, not its locals."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    names: set[str] = set()
    for part in ast.walk(node):
        if isinstance(part, ast.Name) and isinstance(part.ctx, (ast.Store, ast.Del)):
            names.add(part.id)
        elif isinstance(part, (ast.Attribute, ast.Subscript)) and not isinstance(
            part.ctx, ast.Load
        ):
            root = part.value
            while isinstance(root, (ast.Attribute, ast.Subscript)):
                root = root.value
            if isinstance(root, ast.Name):
                names.add(root.id)  # `Cls.__init__ = ...` changes the class
        elif isinstance(part, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(part.name)
        elif isinstance(part, ast.alias):
            names.add(part.asname or part.name.partition(".")[0])
        elif isinstance(part, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and part.name:
            names.add(part.name)
        elif isinstance(part, ast.MatchMapping) and part.rest:
            names.add(part.rest)
    return names


def _module_binding(module: str) -> Binding:
    return ("module", module) if _inside(module) else ("outside", module)


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def _inside(dotted: str) -> bool:
    return dotted == PACKAGE or dotted.startswith(PACKAGE + ".")


def _source_file(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != PACKAGE or not all(part.isidentifier() for part in parts):
        return None
    folder = _ROOT.joinpath(*parts[1:])
    candidates = [folder / "__init__.py"]
    if len(parts) > 1:
        candidates.append(folder.with_suffix(".py"))  # a package wins over a module of its name
    return next((path for path in candidates if path.is_file()), None)


def _outside_value(dotted: str) -> Any:
    """A name from outside ltrain: typing's, os's and pathlib's for real, others by name only."""
    if dotted.partition(".")[0] not in sys.stdlib_module_names:
        return stand_in(dotted)
    if dotted in _REAL_MODULES:
        return importlib.import_module(dotted)
    module, _, name = dotted.rpartition(".")
    if module in _REAL_MODULES:
        return getattr(importlib.import_module(module), name, _MISSING)
    return _MISSING  # other standard-library names may be aliases or generics: import the class
