"""String-keyed registries of plugins, creatable from config dicts, open to entry points.

A registry maps a name to a factory (a class or function taking keyword parameters). Specs
are ``"name"`` or ``{"type": "name", "params": {...}}`` (what YAML files hold). Out-of-tree
plugins register through the entry-point group ``sagellm.<kind>`` (for example
``sagellm.routers``), loaded the first time a name is looked up and missing. Unknown and
duplicate names are errors that list the known names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from typing import Any, Generic, TypeVar

from control_plane.errors import ConfigError

__all__ = ["Registry", "parse_spec"]

T = TypeVar("T")


def parse_spec(spec: object, kind: str) -> tuple[str, dict[str, Any]]:
    """``"name"`` or ``{"type": name, "params": {...}}`` -> (name, params)."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        extra = set(spec) - {"type", "params"}
        if extra:
            raise ConfigError(f"{kind} spec has unknown keys {sorted(extra)}; "
                              "expected 'type' and optional 'params'")
        if "type" not in spec:
            raise ConfigError(f"{kind} spec {dict(spec)!r} lacks 'type'")
        name = spec["type"]
        params = spec.get("params") or {}
        if not isinstance(name, str):
            raise ConfigError(f"{kind} spec 'type' must be a string, got {name!r}")
        if not isinstance(params, Mapping):
            raise ConfigError(f"{kind} '{name}' params must be a mapping, got {params!r}")
        return name, dict(params)
    raise ConfigError(f"{kind} spec must be a name or a mapping with 'type', got {spec!r}")


class Registry(Generic[T]):
    """Names -> factories for one kind of plugin (policies, routers, scorers, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.group = f"sagellm.{kind}"
        self._factories: dict[str, Callable[..., T]] = {}
        self._entry_points_loaded = False

    def register(self, name: str, factory: Callable[..., T] | None = None):
        """Register ``factory`` under ``name``; usable as a decorator."""

        def add(f: Callable[..., T]) -> Callable[..., T]:
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{self.kind} name must be a non-empty string, got {name!r}")
            if name in self._factories:
                raise ConfigError(f"duplicate {self.kind} name {name!r}; "
                                  f"known: {', '.join(sorted(self._factories))}")
            self._factories[name] = f
            return f

        return add if factory is None else add(factory)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self.group):
            if ep.name in self._factories:
                raise ConfigError(f"entry point {ep.value!r} in group {self.group!r} "
                                  f"duplicates the {self.kind} name {ep.name!r}")
            try:
                factory = ep.load()
            except Exception as exc:  # a broken plugin must not be silently skipped
                raise ConfigError(f"cannot load {self.kind} plugin {ep.name!r} "
                                  f"({ep.value}): {exc}") from exc
            self._factories[ep.name] = factory

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._factories:
            self._load_entry_points()
        try:
            return self._factories[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: "
                              f"{', '.join(self.names())}") from None

    def create(self, spec: object, **context: Any) -> T:
        """Build a plugin from ``"name"`` or ``{"type": name, "params": {...}}``.

        ``context`` are keyword arguments the caller supplies (for example a sub-registry);
        only those the factory accepts are passed. Bad parameters raise ConfigError naming
        the plugin and parameter.
        """
        name, params = parse_spec(spec, self.kind)
        factory = self.get(name)
        try:
            sig = inspect.signature(factory)
        except (TypeError, ValueError):
            sig = None
        if sig is not None:
            accepts_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
            allowed = {n for n, p in sig.parameters.items()
                       if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
            unknown = set(params) - allowed if not accepts_any else set()
            if unknown:
                raise ConfigError(f"{self.kind} {name!r}: unknown parameter(s) "
                                  f"{sorted(unknown)}; accepted: {sorted(allowed) or 'none'}")
            for key, value in context.items():
                if (accepts_any or key in allowed) and key not in params:
                    params[key] = value
        try:
            return factory(**params)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.kind} {name!r} with params {params!r}: {exc}") from exc
