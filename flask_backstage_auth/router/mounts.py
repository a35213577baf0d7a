"""Where routing mounts each blueprint: the prefix a registration really has.

Flask joins a blueprint's own rules to the ``url_prefix`` of its registration
(``register_blueprint(bp, url_prefix=...)``, the blueprint's own
``url_prefix``, a parent's, or none at all) and keeps only the joined rule.
The prefix is recovered from the rule that matched: the blueprint's own,
unjoined rules are read by replaying Flask's recorded ``add_url_rule`` calls
against a recorder (no other recorded function runs), and the prefix is what
the routed rule has in front of its own rule. Nothing is guessed from the
blueprint's name.
"""

from __future__ import annotations

import typing as t

from flask import Flask
from flask.sansio.blueprints import Blueprint
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect, Rule

#: The function ``Blueprint.add_url_rule`` records (Flask 3.x).
_ADD_URL_RULE = "Blueprint.add_url_rule.<locals>.<lambda>"


class _RuleRecorder:
    """Stands in for ``BlueprintSetupState``: records each rule, unjoined."""

    url_prefix = None
    subdomain = None
    name_prefix = ""

    def __init__(self) -> None:
        self.url_defaults: dict[str, t.Any] = {}
        self.rules: dict[str, list[str]] = {}

    def add_url_rule(
        self,
        rule: str,
        endpoint: str | None = None,
        view_func: t.Callable[..., t.Any] | None = None,
        **options: t.Any,
    ) -> None:
        if endpoint is None and view_func is not None:
            endpoint = view_func.__name__
        if endpoint is not None:
            self.rules.setdefault(endpoint, []).append(rule)


def own_rules(blueprint: Blueprint) -> dict[str, list[str]]:
    """A blueprint's own rules by endpoint, before any prefix is joined."""
    recorder = _RuleRecorder()
    for deferred in blueprint.deferred_functions:
        if getattr(deferred, "__qualname__", "") == _ADD_URL_RULE:
            deferred(recorder)  # type: ignore[arg-type]
    return recorder.rules


def _prefixes_of(full: str, own: t.Iterable[str]) -> set[str]:
    """Every prefix that, joined as Flask joins it to one of ``own``, gives ``full``."""
    found = set()
    for rule in own:
        if not rule:
            found.add(full.rstrip("/"))
            continue
        if full == rule:
            found.add("")  # no prefix: Flask keeps the rule as it is
        suffix = "/" + rule.lstrip("/")
        if full.endswith(suffix):
            found.add(full[: -len(suffix)].rstrip("/"))
    return found


class Mounts:
    """The mounts of one app's blueprint registrations, computed once each.

    Flask refuses new routes once an app has served a request, so what is
    computed at the first requests stays true.
    """

    def __init__(self, app: Flask) -> None:
        self._app = app
        self._own: dict[str, dict[str, list[str]]] = {}
        self._mounts: dict[str, str | None] = {}

    def _own_rules(self, name: str) -> dict[str, list[str]]:
        rules = self._own.get(name)
        if rules is None:
            blueprint = self._app.blueprints.get(name)
            rules = self._own[name] = own_rules(blueprint) if blueprint is not None else {}
        return rules

    def of_rule(self, rule: Rule, name: str) -> str | None:
        """The mount of registration ``name``, read from one of its routed rules."""
        endpoint = rule.endpoint or ""
        if not endpoint.startswith(name + "."):
            return None
        candidates = _prefixes_of(
            rule.rule, self._own_rules(name).get(endpoint[len(name) + 1 :], ())
        )
        return min(candidates, key=len) if candidates else None

    def of(self, name: str) -> str | None:
        """The mount of registration ``name`` (``""``: the root); ``None`` when unknown."""
        if name in self._mounts:
            return self._mounts[name]
        mount = self._compute(name)
        self._mounts[name] = mount
        return mount

    def _compute(self, name: str) -> str | None:
        candidates: set[str] | None = None
        for rule in self._app.url_map.iter_rules():
            endpoint = rule.endpoint or ""
            if endpoint.rpartition(".")[0] != name:
                continue
            ep = endpoint[len(name) + 1 :]
            found = _prefixes_of(rule.rule, self._own_rules(name).get(ep, ()))
            candidates = found if candidates is None else candidates & found
        if candidates:
            return min(candidates, key=len)
        if candidates is None:
            return self._from_children(name)
        return None

    def _from_children(self, name: str) -> str | None:
        """A parent without rules of its own: its mount, read back from a child's."""
        parent = self._app.blueprints.get(name)
        # Flask keeps a blueprint's nested registrations here (since 2.0).
        nested = getattr(parent, "_blueprints", ())
        for child_name, child in self._app.blueprints.items():
            if child_name.rpartition(".")[0] != name:
                continue
            child_mount = self.of(child_name)
            if child_mount is None:
                continue
            for blueprint, options in nested:
                if (
                    blueprint is not child
                    or options.get("name", child.name) != child_name.rpartition(".")[2]
                ):
                    continue
                own_prefix = options.get("url_prefix")
                if own_prefix is None:
                    own_prefix = child.url_prefix
                if own_prefix is None or not own_prefix.strip("/"):
                    return child_mount
                suffix = "/" + own_prefix.strip("/")
                if child_mount.endswith(suffix):
                    return child_mount[: -len(suffix)]
        return None

    def plugin_at(self, path: str) -> tuple[str, str] | None:
        """``(name, mount)`` of the top-level registration whose mount holds ``path``
        (the longest such mount; the root mount never claims an unrouted path)."""
        best: tuple[str, str] | None = None
        for name in self._app.blueprints:
            if "." in name:
                continue
            mount = self.of(name)
            if not mount or not (path == mount or path.startswith(mount + "/")):
                continue
            if best is None or len(mount) > len(best[1]):
                best = (name, mount)
        return best

    def can_route(self, name: str, path: str) -> bool:
        """Whether routing could send ``path`` to registration ``name`` (or one nested in it)."""
        adapter = self._app.url_map.bind("localhost")
        try:
            endpoint, _ = adapter.match(path)
        except (MethodNotAllowed, RequestRedirect):
            return True
        except NotFound:
            return False
        except Exception:  # host or subdomain matching: cannot tell, so do not warn
            return True
        return str(endpoint).startswith(name + ".")
