"""Every setting the code reads is in docs/configuration.rst, with its default.

The list comes from the code, so a new setting without docs fails here:

* the Flask settings: every key of
  :data:`flask_backstage_auth.config.settings.DEFAULTS`, which must be a row of
  the settings table with its default in the "Default" column;
* the app-config keys: a static scan (``ast``) of the package for literal keys
  passed to :class:`~flask_backstage_auth.config.reader.ConfigReader`'s
  getters (and to small helpers that pass their ``key`` on to one), with the
  prefix of the reader they are read from (``accessTokens.service`` for
  ``service = config.get_config("accessTokens.service")``, followed through
  the package's calls). Each must be a term of the page's definition lists
  (``accessTokens.service.*`` then ``maxTokenLifetimeDays``), or be named in
  the text of the nearest documented parent; a literal default passed to the
  getter (``get_bool``'s is ``False``) must be written in that entry.

A default a function applies after reading (``if value is None: return 3600``)
is not seen by the scan; the docs state those by hand.
"""

from __future__ import annotations

import ast
import functools
import importlib
import re
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flask_backstage_auth.config.settings import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flask_backstage_auth"
DOC = ROOT / "docs" / "configuration.rst"

#: The top-level keys of app-config the library reads. A literal key starting
#: with one of them is a full path, whatever reader it is read from.
ROOTS = {"app", "auth", "backend", "discovery", "permission", "accessTokens"}

#: Readers handed over where the scan cannot follow (a handler's
#: ``initialize`` called through a registry): (module, function, parameter)
#: to the prefixes of the readers passed in.
PARAMETER_PREFIXES: dict[tuple[str, str, str], set[str]] = {
    ("auth/external/static.py", "_initialize", "options"): {"backend.auth.externalAccess.options"},
    ("auth/external/jwks.py", "initialize", "options"): {"backend.auth.externalAccess.options"},
    ("auth/external/handler.py", "initialize", "options"): {"backend.auth.externalAccess.options"},
}

_READS = {"get", "get_string", "get_optional_string", "get_bool", "get_config", "get_config_list"}
_READER_ONLY = _READS - {"get"}
_SUBREADERS = {"get_config", "get_config_list"}
#: Defaults of the getters' signatures, when a call gives none.
_SIGNATURE_DEFAULTS = {"get_bool": False}
_NO_DEFAULT = object()


@dataclass(frozen=True)
class Read:
    """One literal key read through a reader; ``base`` is a parameter id or ``""`` (root)."""

    base: str
    key: str
    default: t.Any
    where: str


@dataclass
class _Function:
    module: str
    qualname: str
    node: ast.FunctionDef
    params: list[str]
    reader_params: set[str]
    # A helper reading ``reader.<getter>(key, default)`` with its own parameters.
    wrapper: tuple[int, int, int | None, t.Any] | None = None
    incoming: set[tuple[str, str, str]] = field(default_factory=set)

    def param_id(self, name: str) -> str:
        return f"{self.module}::{self.qualname}::{name}"


def _is_reader_annotation(node: ast.expr | None) -> bool:
    return node is not None and "ConfigReader" in ast.unparse(node)


def _own_nodes(function: ast.AST) -> t.Iterator[ast.AST]:
    """The nodes of a function's body, not those of the functions and classes in it."""
    todo = list(ast.iter_child_nodes(function))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))


#: A name's readers: (first line it holds them, {(base, suffix)}).
Env = t.Dict[str, t.List[t.Tuple[int, t.Set[t.Tuple[str, str]]]]]


def _lookup(env: Env, name: str, line: int) -> set[tuple[str, str]] | None:
    """The readers ``name`` holds at ``line``: its latest binding up to it."""
    bindings = env.get(name)
    if not bindings:
        return None
    before = [start for start, _ in bindings if start <= line]
    latest = max(before) if before else min(start for start, _ in bindings)
    found: set[tuple[str, str]] = set()
    for start, readers in bindings:
        if start == latest:
            found |= readers
    return found


class _Scan:
    def __init__(self) -> None:
        self.functions: dict[str, _Function] = {}  # by module::qualname
        self.classes: dict[str, str] = {}  # class name -> module
        self.reads: list[Read] = []
        self.namespaces: dict[str, dict[str, t.Any]] = {}

    # -- collecting ---------------------------------------------------------

    def collect(self) -> None:
        for path in sorted(PACKAGE.rglob("*.py")):
            rel = path.relative_to(PACKAGE).as_posix()
            if rel.startswith("db/migrations/"):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            modname = "flask_backstage_auth." + rel[:-3].replace("/", ".").removesuffix(".__init__")
            self.namespaces[rel] = vars(importlib.import_module(modname))
            self._collect(rel, tree, "")

    def _collect(self, module: str, node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                self.classes.setdefault(child.name, module)
                self._collect(module, child, f"{prefix}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = child.args
                every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
                function = _Function(
                    module,
                    prefix + child.name,
                    child,  # type: ignore[arg-type]
                    [a.arg for a in every],
                    {a.arg for a in every if _is_reader_annotation(a.annotation)},
                )
                self.functions[f"{module}::{function.qualname}"] = function
                self._collect(module, child, f"{prefix}{child.name}.")
            else:
                self._collect(module, child, prefix)

    def find_wrappers(self) -> None:
        for function in self.functions.values():
            for call in _own_nodes(function.node):
                if not (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr in _READS
                    and isinstance(call.func.value, ast.Name)
                    and call.func.value.id in function.reader_params
                    and call.args
                    and isinstance(call.args[0], ast.Name)
                    and call.args[0].id in function.params
                ):
                    continue
                default_index: int | None = None
                default: t.Any = _SIGNATURE_DEFAULTS.get(call.func.attr, _NO_DEFAULT)
                if len(call.args) > 1:
                    second = call.args[1]
                    if isinstance(second, ast.Name) and second.id in function.params:
                        default_index = function.params.index(second.id)
                    else:
                        default = self._value(function.module, second)
                function.wrapper = (
                    function.params.index(call.func.value.id),
                    function.params.index(call.args[0].id),
                    default_index,
                    default,
                )

    # -- evaluating -----------------------------------------------------------

    def _value(self, module: str, node: ast.expr) -> t.Any:
        """A constant expression's value in its module (``_GUEST_KEY``, ``DAY``), else missing."""
        if isinstance(node, ast.Constant):
            return node.value
        if not isinstance(node, (ast.Name, ast.Attribute, ast.BinOp, ast.List, ast.UnaryOp)):
            return _NO_DEFAULT
        try:
            return eval(
                compile(ast.Expression(node), module, "eval"), dict(self.namespaces[module])
            )  # noqa: S307
        except Exception:
            return _NO_DEFAULT

    def _callee(self, caller: _Function, call: ast.Call) -> tuple[_Function, int] | None:
        """The package's function ``call`` calls, and how many leading parameters it skips."""
        func = call.func
        if isinstance(func, ast.Name):
            scope = caller.qualname
            while True:
                scope = scope.rpartition(".")[0]
                key = f"{caller.module}::{scope + '.' if scope else ''}{func.id}"
                if key in self.functions:
                    return self.functions[key], 0
                if func.id in self.classes:
                    init = self.functions.get(f"{self.classes[func.id]}::{func.id}.__init__")
                    return (init, 1) if init else None
                if not scope:
                    return None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            owner = func.value.id
            if owner in ("self", "cls"):
                cls = caller.qualname.rpartition(".")[0]
                found = self.functions.get(f"{caller.module}::{cls}.{func.attr}")
            elif owner in self.classes:
                found = self.functions.get(f"{self.classes[owner]}::{owner}.{func.attr}")
            else:
                return None
            if found is None:
                return None
            first = found.params[:1]
            return found, 1 if first in (["self"], ["cls"]) else 0
        return None

    # -- reading ------------------------------------------------------------

    def scan(self) -> None:
        for function in self.functions.values():
            env: Env = {
                name: [(0, {(function.param_id(name), "")})] for name in function.reader_params
            }
            # Closures see the readers of the functions around them.
            outer = function.qualname.rpartition(".")[0]
            while outer:
                enclosing = self.functions.get(f"{function.module}::{outer}")
                if enclosing is not None:
                    for name in enclosing.reader_params:
                        env.setdefault(name, [(0, {(enclosing.param_id(name), "")})])
                outer = outer.rpartition(".")[0]
            for _ in range(3):  # bindings may refer to later ones
                self._bind(function, env)
            self._reads(function, env)

    def _reader(self, function: _Function, node: ast.expr, env: Env) -> set[tuple[str, str]] | None:
        if isinstance(node, ast.Name):
            return _lookup(env, node.id, node.lineno)
        if not isinstance(node, ast.Call):
            return None
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("ConfigReader", "as_reader"):
            return {("", "")}
        base: set[tuple[str, str]] | None = None
        key: t.Any = None
        if isinstance(func, ast.Attribute) and func.attr in _SUBREADERS and node.args:
            key = self._value(function.module, node.args[0])
            base = self._reader(function, func.value, env)
        else:
            # A helper returning readers for its key (``_mappings(reader, "keys")``).
            callee = self._callee(function, node)
            wrapper = callee[0].wrapper if callee is not None else None
            if callee is not None and wrapper is not None:
                target, skip = callee
                if _is_reader_annotation(target.node.returns):
                    reader_index, key_index = wrapper[:2]
                    args = [None] * skip + list(node.args)
                    if len(args) > max(reader_index, key_index):
                        base = self._reader(function, args[reader_index], env)  # type: ignore[arg-type]
                        key = self._value(function.module, args[key_index])  # type: ignore[arg-type]
        if isinstance(key, str) and base is not None:
            return {(b, f"{s}.{key}" if s else key) for b, s in base}
        return None

    def _bind(self, function: _Function, env: Env) -> None:
        bindings: list[tuple[int, list[ast.expr], ast.expr]] = []
        for node in _own_nodes(function.node):
            if isinstance(node, ast.Assign):
                bindings.append((node.lineno, node.targets, node.value))
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                bindings.append((node.lineno, [node.target], node.value))
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                bindings.append((node.lineno, [node.target], node.iter))
            elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
                # A comprehension's names hold from its first line.
                bindings.extend((node.lineno, [g.target], g.iter) for g in node.generators)
        for line, targets, value in bindings:
            if (
                isinstance(value, ast.Call)
                and isinstance(value.func, ast.Name)
                and value.func.id == "enumerate"
                and value.args
                and len(targets) == 1
                and isinstance(targets[0], ast.Tuple)
            ):
                targets, value = [targets[0].elts[-1]], value.args[0]
            reader = self._reader(function, value, env)
            if reader is None:
                continue
            for target in targets:
                if isinstance(target, ast.Name):
                    held = env.setdefault(target.id, [])
                    if (line, reader) not in held:
                        held.append((line, reader))

    def _reads(self, function: _Function, env: Env) -> None:
        for call in _own_nodes(function.node):
            if not isinstance(call, ast.Call):
                continue
            where = f"{function.module}:{call.lineno}"
            func = call.func
            if isinstance(func, ast.Attribute) and func.attr in _READS | {"has"} and call.args:
                key = self._value(function.module, call.args[0])
                if not isinstance(key, str):
                    continue
                default = _SIGNATURE_DEFAULTS.get(func.attr, _NO_DEFAULT)
                if len(call.args) > 1:
                    default = self._value(function.module, call.args[1])
                base = self._reader(function, func.value, env)
                if base is None:
                    # A reader the scan cannot see (``self.state.config``): a
                    # getter only ConfigReader has, or a full dotted path.
                    if func.attr not in _READER_ONLY and not (
                        "." in key and key.split(".")[0] in ROOTS
                    ):
                        continue
                    base = {(f"?{where}", "")}
                self._add(base, key, default, where)
            callee = self._callee(function, call)
            if callee is None:
                continue
            target, skip = callee
            for index, arg in enumerate(call.args):
                reader = self._reader(function, arg, env)
                position = index + skip
                if reader is not None and position < len(target.params):
                    name = target.params[position]
                    target.incoming.update((target.param_id(name), b, s) for b, s in reader)
            for keyword in call.keywords:
                reader = self._reader(function, keyword.value, env) if keyword.arg else None
                if reader is not None:
                    target.incoming.update(
                        (target.param_id(str(keyword.arg)), b, s) for b, s in reader
                    )
            if target.wrapper is not None:
                reader_index, key_index, default_index, default = target.wrapper
                args = [None] * skip + list(call.args)
                if len(args) <= max(reader_index, key_index):
                    continue
                base = self._reader(function, args[reader_index], env)  # type: ignore[arg-type]
                key = self._value(function.module, args[key_index])  # type: ignore[arg-type]
                if default_index is not None:
                    default = (
                        self._value(function.module, args[default_index])  # type: ignore[arg-type]
                        if default_index < len(args)
                        else _NO_DEFAULT
                    )
                if base is not None and isinstance(key, str):
                    self._add(base, key, default, where)

    def _add(self, base: set[tuple[str, str]], key: str, default: t.Any, where: str) -> None:
        for b, suffix in base:
            self.reads.append(Read(b, f"{suffix}.{key}" if suffix else key, default, where))

    # -- resolving ----------------------------------------------------------

    def prefixes(self) -> dict[str, set[str]]:
        """Each reader parameter's prefixes: the readers passed in, and the table's."""
        found: dict[str, set[str]] = {}
        for (module, name, param), known in PARAMETER_PREFIXES.items():
            for function in self.functions.values():
                if function.module == module and function.qualname.split(".")[-1] == name:
                    found.setdefault(function.param_id(param), set()).update(known)
        edges = [edge for f in self.functions.values() for edge in f.incoming]
        for _ in range(10):
            for param, base, suffix in edges:
                rooted = base == "" or suffix.split(".")[0] in ROOTS
                sources = {""} if rooted else found.get(base, set())
                for source in sources:
                    full = ".".join(p for p in (source, suffix) if p)
                    found.setdefault(param, set()).add(full)
        return found


@functools.lru_cache(maxsize=1)  # the code does not change during a run
def app_config_reads() -> tuple[dict[str, list[Read]], list[str]]:
    """The full paths read (without list indices), and the reads the scan could not place."""
    scan = _Scan()
    scan.collect()
    scan.find_wrappers()
    scan.scan()
    prefixes = scan.prefixes()
    paths: dict[str, list[Read]] = {}
    unplaced = []
    for read in scan.reads:
        if read.base and read.key.split(".")[0] in ROOTS:
            sources = {""}
        elif read.base == "":
            sources = {""}
        else:
            sources = prefixes.get(read.base, set())
            if not sources:
                unplaced.append(f"{read.key!r} at {read.where}")
                continue
        for source in sources:
            paths.setdefault(".".join(p for p in (source, read.key) if p), []).append(read)
    return paths, unplaced


# -- the page -------------------------------------------------------------------

_TERM = re.compile(r"^(\s*)``([^`]+)``\s*$")


def documented_terms(text: str) -> dict[str, str]:
    """Definition-list terms of the page as full paths, each with its entry's text."""
    lines = text.splitlines()
    terms: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for index, line in enumerate(lines):
        match = _TERM.match(line)
        following = next((n for n in lines[index + 1 :] if n.strip()), "")
        if not match:
            continue
        indent = len(match.group(1))
        if len(following) - len(following.lstrip()) <= indent:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        name = match.group(2).removesuffix(".*")
        if stack and name.split(".")[0] not in ROOTS:
            name = f"{stack[-1][1]}.{name}"
        body = []
        for later in lines[index + 1 :]:
            if later.strip() and len(later) - len(later.lstrip()) <= indent:
                break
            body.append(later)
        terms[name] = "\n".join(body)
        stack.append((indent, name))
    return terms


def _renderings(value: t.Any) -> list[str]:
    if isinstance(value, bool):
        return [f"``{str(value).lower()}``"]
    if isinstance(value, (int, float)):
        number = int(value) if float(value).is_integer() else value
        return [str(number)]
    if isinstance(value, str):
        return [f"``{value}``"]
    if isinstance(value, list):
        return [f"``[{', '.join(map(str, value))}]``"]
    return [repr(value)]


def _written(default: t.Any, body: str) -> bool:
    return any(
        re.search(rf"(?<![\w.]){re.escape(r)}(?![\w])", body, re.IGNORECASE)
        for r in _renderings(default)
    )


def undocumented_app_config(text: str) -> list[str]:
    terms = documented_terms(text)
    paths, unplaced = app_config_reads()
    problems = [
        f"{read}: the scan cannot tell whose reader this is (add its prefix to"
        " PARAMETER_PREFIXES in tests/test_docs_settings.py)"
        for read in unplaced
    ]
    for path in sorted(paths):
        parts = path.split(".")
        term = next(
            (".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in terms),
            None,
        )
        if term is None:
            if not any(name.startswith(path + ".") for name in terms):
                problems.append(f"{path} (read at {paths[path][0].where}) is not documented")
            continue
        body = terms[term]
        words = {
            w
            for literal in re.findall(r"``(.+?)``", body, re.S)
            for w in re.findall(r"\w+", literal)
        }
        missing = [p for p in parts[len(term.split(".")) :] if p not in words]
        if missing:
            problems.append(
                f"{path} (read at {paths[path][0].where}) is not named in the entry of {term}"
            )
            continue
        for read in paths[path]:
            if read.default not in (_NO_DEFAULT, None) and not _written(read.default, body):
                problems.append(
                    f"{path}: its default {_renderings(read.default)[0]} (at {read.where})"
                    f" is not written in the entry of {term}"
                )
                break
    return problems


_ROW = re.compile(r"^\s*\* - ``(BACKSTAGE_AUTH_\w+)``\s*\n\s*- ``(.*?)``", re.M)


def _setting_default(value: t.Any) -> set[str]:
    if isinstance(value, str):
        return {f'"{value}"', f"'{value}'"}
    return {repr(value)}


def flask_settings_read() -> dict[str, str]:
    """Every ``BACKSTAGE_AUTH_*`` key written out in the package, and where."""
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"BACKSTAGE_AUTH_[A-Z0-9_]+", node.value)
            ):
                where = f"{path.relative_to(PACKAGE).as_posix()}:{node.lineno}"
                found.setdefault(node.value, where)
    return found


def flask_setting_problems(text: str) -> list[str]:
    """What the settings table lacks or gets wrong, one line per setting."""
    rows = dict(_ROW.findall(text))
    problems = [
        f"{key} (default {value!r}) has no row in docs/configuration.rst"
        for key, value in sorted(DEFAULTS.items())
        if key not in rows
    ]
    problems += [
        f"{key}: the docs say {rows[key]}, the code {sorted(_setting_default(value))[0]}"
        for key, value in sorted(DEFAULTS.items())
        if key in rows and rows[key] not in _setting_default(value)
    ]
    problems += [
        f"{key} has a row but the code has no such setting"
        for key in sorted(rows)
        if key not in DEFAULTS
    ]
    return problems


def test_every_flask_setting_is_documented_with_its_default() -> None:
    problems = flask_setting_problems(DOC.read_text(encoding="utf-8"))
    assert not problems, "docs/configuration.rst's settings table:\n  " + "\n  ".join(problems)


def test_every_flask_setting_the_code_names_is_a_declared_one() -> None:
    """A ``BACKSTAGE_AUTH_*`` key read outside ``DEFAULTS`` would have no default and no row."""
    undeclared = {key: where for key, where in flask_settings_read().items() if key not in DEFAULTS}
    assert not undeclared, "Settings the code names that DEFAULTS lacks: " + ", ".join(
        f"{key} ({where})" for key, where in sorted(undeclared.items())
    )


def test_every_app_config_key_is_documented_with_its_default() -> None:
    problems = undocumented_app_config(DOC.read_text(encoding="utf-8"))
    assert not problems, "docs/configuration.rst lacks:\n  " + "\n  ".join(problems)


def test_the_scan_finds_the_keys_it_must() -> None:
    """The scan follows readers into helpers and sub-readers (else it would pass vacuously)."""
    paths, unplaced = app_config_reads()
    assert not unplaced
    expected = {
        "backend.baseUrl": _NO_DEFAULT,
        "backend.auth.dangerouslyDisableDefaultAuthPolicy": False,
        "backend.auth.pluginKeyStore.type": "database",
        "backend.auth.pluginKeyStore.static.keys.keyId": _NO_DEFAULT,
        "backend.auth.externalAccess.options.url": _NO_DEFAULT,
        "backend.auth.keys.accessRestrictions.plugin": _NO_DEFAULT,
        "accessTokens.service.maxRotationGraceSeconds": 86400,
        "accessTokens.personal.enabled": False,
        "auth.providers.guest.userEntityRef": "user:development/guest",
        "auth.omitIdentityTokenOwnershipClaim": True,
        "discovery.endpoints.target.internal": _NO_DEFAULT,
        "permission.enabled": False,
    }
    for path, default in expected.items():
        assert path in paths, path
        assert any(read.default == default for read in paths[path]), (path, paths[path])


def test_a_new_key_without_docs_fails() -> None:
    text = DOC.read_text(encoding="utf-8")
    before = set(undocumented_app_config(text))
    without = text.replace("``maxTokensPerUser``", "``maxTokensPerUzer``")
    (problem,) = set(undocumented_app_config(without)) - before
    assert problem.startswith(
        "accessTokens.personal.maxTokensPerUser (read at access_tokens/settings.py:"
    )
    assert problem.endswith("is not named in the entry of accessTokens.personal")
    wrong_default = text.replace("Default 20.", "Default 21.")
    (problem,) = set(undocumented_app_config(wrong_default)) - before
    assert problem.startswith("accessTokens.personal.maxTokensPerUser: its default 20 ")


def test_a_new_setting_without_a_row_fails() -> None:
    text = DOC.read_text(encoding="utf-8")
    before = set(flask_setting_problems(text))
    renamed = text.replace("``BACKSTAGE_AUTH_JWKS_WAIT``", "``BACKSTAGE_AUTH_JWKS_WAITS``")
    assert set(flask_setting_problems(renamed)) - before == {
        "BACKSTAGE_AUTH_JWKS_WAIT (default 2) has no row in docs/configuration.rst",
        "BACKSTAGE_AUTH_JWKS_WAITS has a row but the code has no such setting",
    }
    other_default = text.replace('- ``"/api"``', '- ``"/apis"``')
    assert set(flask_setting_problems(other_default)) - before == {
        'BACKSTAGE_AUTH_PLUGIN_PREFIX: the docs say "/apis", the code "/api"'
    }


def test_a_new_setting_in_the_code_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    text = DOC.read_text(encoding="utf-8")
    before = set(flask_setting_problems(text))
    monkeypatch.setitem(DEFAULTS, "BACKSTAGE_AUTH_SHARED_LIMIT", 30)
    assert set(flask_setting_problems(text)) - before == {
        "BACKSTAGE_AUTH_SHARED_LIMIT (default 30) has no row in docs/configuration.rst"
    }
