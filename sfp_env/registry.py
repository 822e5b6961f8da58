"""A small named registry used for rewards, planners, backbones, tasks and world models.

``Registry("planner")`` behaves like a read-only mapping from names to objects; ``register`` adds
one (optionally as a decorator) and ``get`` resolves a name, raising :class:`RegistryError` that
lists the registered names and suggests the closest one.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from sfp_env.errors import ConfigError, RegistryError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Name -> object registry with helpful errors.

    Args:
        kind: what the registry holds, used in messages ("planner", "backbone", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(
        self, name: str, obj: T | None = None, *, overwrite: bool = False
    ) -> T | Callable[[T], T]:
        """Register ``obj`` under ``name``; without ``obj`` returns a decorator."""
        if obj is None:

            def decorator(o: T) -> T:
                self.register(name, o, overwrite=overwrite)
                return o

            return decorator
        if not isinstance(name, str) or not name:
            raise RegistryError(
                f"{self.kind} name must be a non-empty string, got {name!r}",
                fix=f"register the {self.kind} under a name such as 'my_{self.kind}'",
            )
        if name in self._items and not overwrite and self._items[name] is not obj:
            raise RegistryError(
                f"a {self.kind} named {name!r} is already registered",
                fix="choose another name, or pass overwrite=True to replace it",
            )
        self._items[name] = obj
        return obj

    def unregister(self, name: str) -> None:
        """Remove ``name`` (used by tests and plug-ins that clean up after themselves)."""
        self._items.pop(name, None)

    def get(self, name: str) -> T:  # type: ignore[override]
        """Resolve ``name``; unknown names raise :class:`RegistryError` with a suggestion."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            known = sorted(self._items)
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(known) or '(none)'}.{hint}",
                fix=f"use one of the registered names, or register yours with "
                f"register_{self.kind}({name!r}, ...) (in a plug-in module: import it first, "
                "or pass --plugins MODULE to the sfp command)",
            ) from None

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._items)})"


def check_factory_kwargs(
    kind: str,
    name: str,
    factory: Callable[..., Any],
    kwargs: Mapping[str, Any],
    *,
    fixed: Mapping[str, Any] | None = None,
) -> None:
    """Raise :class:`ConfigError` unless ``factory(**fixed, **kwargs)`` binds to its signature.

    ``kwargs`` are the user's options (a config's ``<kind>.kwargs``), ``fixed`` the arguments
    the caller supplies itself; the message names only the options the factory does not take
    and reminds that a config's ``<kind>.kwargs`` belong to its own ``<kind>.name``.
    """
    fixed = {k: v for k, v in (fixed or {}).items() if k not in kwargs}
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    try:
        signature.bind(**fixed, **kwargs)
    except TypeError as e:
        params = signature.parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        bad = [] if takes_any else sorted(set(kwargs) - set(params))
        own = [n for n in params if n not in fixed]
        raise ConfigError(
            f"{kind} {name!r}: invalid arguments {bad or sorted(kwargs)} ({e}); a config's "
            f"{kind}.kwargs belong to its own {kind}.name",
            fix=f"give {kind}.kwargs that {name!r} takes ({', '.join(own) or 'none'}), e.g. "
            f"{kind}.kwargs={{}} for its defaults",
        ) from e
