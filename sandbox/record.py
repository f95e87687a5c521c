"""Frozen records: what `@dataclass(frozen=True)` gives Policy, Mount and Caller, without its imports.

Hand-written because dataclasses imports inspect (and with it ast, dis, tokenize): ~5 ms on
every sandboxed `pypm run`, more than the sandbox's own set-up syscalls. Fields come from the
class's annotations, in order; a class attribute of the same name is the field's default
(immutable defaults only, as in every use here). `__post_init__` runs after `__init__`.
"""

from __future__ import annotations

__all__ = ["record", "fields_of", "as_dict", "replace"]

# `typing` is not imported at run time (this module is on the `pypm run` hot path); mypy reads
# the name TYPE_CHECKING as true, so it sees `dataclass_transform` (PEP 681) and checks every
# record's constructor calls and frozen fields as it would a frozen dataclass's.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar, dataclass_transform

    _R = TypeVar("_R")
else:
    def dataclass_transform(**_: object):
        return lambda decorator: decorator


@dataclass_transform(frozen_default=True)
def record(cls: type[_R]) -> type[_R]:
    """Class decorator: __init__ (positional or keyword), __eq__, __hash__, __repr__, frozen attributes."""
    names = tuple(n for c in reversed(cls.__mro__) for n in c.__dict__.get("__annotations__", {}))
    names = tuple(dict.fromkeys(names))
    defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
    post_init = getattr(cls, "__post_init__", None)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(names):
            raise TypeError(f"{cls.__name__}() takes {len(names)} positional arguments but {len(args)} were given")
        values = dict(zip(names, args))
        for k, v in kwargs.items():
            if k not in names:
                raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {k!r}")
            if k in values:
                raise TypeError(f"{cls.__name__}() got multiple values for argument {k!r}")
            values[k] = v
        for n in names:
            if n in values:
                object.__setattr__(self, n, values[n])
            elif n in defaults:
                object.__setattr__(self, n, defaults[n])
            else:
                raise TypeError(f"{cls.__name__}() missing required argument: {n!r}")
        if post_init is not None:
            post_init(self)

    def _values(self: object) -> tuple[Any, ...]:
        return tuple(getattr(self, n) for n in names)

    def __eq__(self: object, other: object) -> bool:
        return other.__class__ is self.__class__ and _values(self) == _values(other)

    def __hash__(self: object) -> int:
        return hash(_values(self))

    def __repr__(self: object) -> str:
        return f"{cls.__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in names)})"

    def __setattr__(self: object, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: {cls.__name__} is frozen")

    def __delattr__(self: object, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: {cls.__name__} is frozen")

    for fn in (__init__, __eq__, __hash__, __repr__, __setattr__, __delattr__):
        fn.__qualname__ = f"{cls.__qualname__}.{fn.__name__}"
        setattr(cls, fn.__name__, fn)
    setattr(cls, "__record_fields__", names)
    return cls


def fields_of(obj: object) -> tuple[str, ...]:
    names: tuple[str, ...] = getattr(type(obj), "__record_fields__")
    return names


def as_dict(obj: object) -> dict[str, Any]:
    """Field name -> value, one level deep (records inside are left as they are)."""
    return {n: getattr(obj, n) for n in fields_of(obj)}


def replace(obj: _R, **changes: Any) -> _R:
    """A copy of `obj` with some fields changed (validated again by __post_init__)."""
    return type(obj)(**{**as_dict(obj), **changes})
