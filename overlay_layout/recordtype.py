"""Small immutable records for the boot path: tuple subclasses with named fields and defaults, like
collections.namedtuple, without its cost on a slow board: importing `collections` (operator, keyword,
reprlib, itertools) and compiling a constructor per record type with eval. Equality, hashing, ordering and
unpacking are the tuple's; `_fields` names the fields and `_field_defaults` gives the defaults, as
namedtuple's do (the typed twins the checker sees are checked against them by tests/unit/test_records.py)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def make_record(name: str, fields: str, defaults: tuple[Any, ...] = ()) -> type:
    """A record type `name` with the space-separated `fields`; `defaults` apply to the last fields."""
    names = tuple(fields.split())
    if len(defaults) > len(names):
        raise ValueError(f"{name}: more defaults than fields")
    first_default = len(names) - len(defaults)
    index = {f: i for i, f in enumerate(names)}

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        if len(args) > len(names):
            raise TypeError(f"{name}() takes at most {len(names)} arguments ({len(args)} given)")
        values = list(args) + [defaults[i - first_default] if i >= first_default else _MISSING
                               for i in range(len(args), len(names))]
        for key, value in kwargs.items():
            i = index.get(key)
            if i is None:
                raise TypeError(f"{name}() got an unexpected keyword argument {key!r}")
            if i < len(args):
                raise TypeError(f"{name}() got multiple values for argument {key!r}")
            values[i] = value
        missing = [names[i] for i, v in enumerate(values) if v is _MISSING]
        if missing:
            raise TypeError(f"{name}() missing argument(s): {', '.join(missing)}")
        return tuple.__new__(cls, values)

    def __repr__(self: tuple[Any, ...]) -> str:
        return f"{name}({', '.join(f'{f}={v!r}' for f, v in zip(names, self, strict=True))})"

    def _replace(self: tuple[Any, ...], **changes: Any) -> Any:
        return type(self)(**{**dict(zip(names, self, strict=True)), **changes})

    def __getnewargs__(self: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(self)

    body: dict[str, Any] = {"__slots__": (), "__new__": __new__, "__repr__": __repr__, "_replace": _replace,
                            "__getnewargs__": __getnewargs__, "_fields": names,
                            "_field_defaults": dict(zip(names[first_default:], defaults, strict=True))}
    for i, f in enumerate(names):
        body[f] = property(_getter(i), doc=f"field {i}: {f}")
    return type(name, (tuple,), body)


def _getter(i: int) -> Callable[[tuple[Any, ...]], Any]:
    def get(self: tuple[Any, ...]) -> Any:
        return tuple.__getitem__(self, i)

    return get


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()
