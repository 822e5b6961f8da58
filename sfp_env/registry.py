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
    section: str | None = None,
) -> None:
    """Raise :class:`ConfigError` unless ``factory(**fixed, **kwargs)`` fits its signature.

    ``kwargs`` are the user's options, ``fixed`` the arguments the caller supplies itself.
    Options the factory does not take and required ones that are missing are named apart;
    ``section`` (e.g. ``"planner.kwargs"``) is the config key the options come from, named in
    the fix (a config's ``planner.kwargs`` belong to its own ``planner.name``).
    """
    fixed = {k: v for k, v in (fixed or {}).items() if k not in kwargs}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = [n for n, p in params.items() if p.kind in named and n not in fixed]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    where = f" ({section})" if section else ""
    unknown = [] if takes_any else sorted(set(kwargs) - set(accepted))
    if unknown:
        owner = section.rsplit(".", 1)[0] if section else ""
        raise ConfigError(
            f"{kind} {name!r}: invalid arguments {unknown}{where}: it does not take them (it "
            f"takes {', '.join(accepted) or 'no options'})"
            + (f"; a config's {section} belong to its own {owner}.name" if section else ""),
            fix=(f"give {section} that {name!r} takes, e.g. {section}={{}} for its defaults"
                 if section else f"remove {unknown} from the {kind} options"),
        )
    missing = [n for n in accepted
               if params[n].default is inspect.Parameter.empty and n not in kwargs]
    if missing:
        raise ConfigError(
            f"{kind} {name!r} needs the arguments {missing}{where}",
            fix=f"pass {', '.join(f'{m}=...' for m in missing)}"
            + (f" in {section}" if section else ""),
        )
