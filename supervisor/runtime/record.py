"""Frozen records for the runtime's data (specs, mount plans, seccomp plans) without attrs.

The runtime is on the path of a one-shot `pysup run`, where importing attrs costs ~15 ms of a
~50 ms start; these classes need only a small part of it: an `__init__` (positional or keyword-only
arguments, defaults, converters, validators), immutability, equality, hashing, `repr`,
`to_dict()` and `replace()`.

    @record(kw_only=True)
    class MountSpec:
        type: str
        target: str
        options: tuple[str, ...] = field(default=(), converter=tuple)

`fields(cls)` lists the fields. Records also carry `__attrs_attrs__` (name, alias, init), enough for
`attrs.evolve(record, ...)` in code written for the former attrs classes; prefer `.replace()`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

TYPE_CHECKING = False  # typing stays unimported: the zygote imports this module (~0.4 MB of its memory)
if TYPE_CHECKING:
    from typing import Any

_NOTHING = object()


class Field(collections.namedtuple("Field", "name default converter validator init",
                                   defaults=(_NOTHING, None, None, True))):
    """name: str; default: Any; converter: Callable[[Any], Any] | None; validator:
    Callable[[Any, Any, Any], None] | None (attrs' signature: instance, attribute, value); init:
    bool (attrs.evolve reads it and `alias`). A plain namedtuple: typing stays unimported."""

    __slots__ = ()

    @property
    def alias(self) -> str:
        return self.name


class _FieldSpec:
    __slots__ = ("default", "converter", "validator")

    def __init__(self, default: Any, converter: Any, validator: Any):
        self.default, self.converter, self.validator = default, converter, validator


def field(*, default: Any = _NOTHING, converter: Callable[[Any], Any] | None = None,
          validator: Callable[[Any, Any, Any], None] | None = None) -> Any:
    return _FieldSpec(default, converter, validator)


def fields(cls: type) -> tuple[Field, ...]:
    return cls.__record_fields__  # type: ignore[attr-defined,no-any-return]


def _own_annotations(cls: type) -> list[str]:
    return list(cls.__dict__.get("__annotations__", {}))


def record(cls: type | None = None, *, kw_only: bool = False) -> Any:
    """Make `cls` a frozen record of its annotated class attributes (in order)."""

    def wrap(cls: type) -> type:
        out: list[Field] = []
        for base in reversed(cls.__mro__[1:]):
            out += list(getattr(base, "__record_fields__", ()))
        for name in _own_annotations(cls):
            value = cls.__dict__.get(name, _NOTHING)
            if isinstance(value, _FieldSpec):
                f = Field(name, value.default, value.converter, value.validator)
            else:
                f = Field(name, value)
            if name in cls.__dict__:
                delattr(cls, name)
            out = [x for x in out if x.name != name] + [f]
        flds = tuple(out)
        names = tuple(f.name for f in flds)
        if not kw_only:
            seen_default = False
            for f in flds:
                if f.default is not _NOTHING:
                    seen_default = True
                elif seen_default:
                    raise TypeError(f"{cls.__name__}.{f.name}: a field without a default after one with it")

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            if args:
                if kw_only:
                    raise TypeError(f"{cls.__name__}() takes keyword arguments only")
                if len(args) > len(flds):
                    raise TypeError(f"{cls.__name__}() takes at most {len(flds)} positional arguments")
                for f, a in zip(flds, args):
                    if f.name in kwargs:
                        raise TypeError(f"{cls.__name__}() got multiple values for {f.name!r}")
                    kwargs[f.name] = a
            d = self.__dict__
            for f in flds:
                v = kwargs.pop(f.name, _NOTHING)
                if v is _NOTHING:
                    if f.default is _NOTHING:
                        raise TypeError(f"{cls.__name__}() missing required argument: {f.name!r}")
                    v = f.default
                if f.converter is not None:
                    v = f.converter(v)
                if f.validator is not None:
                    f.validator(self, f, v)
                d[f.name] = v
            if kwargs:
                raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {next(iter(kwargs))!r}")

        def __setattr__(self: Any, name: str, value: Any) -> None:
            raise AttributeError(f"{cls.__name__} is frozen (cannot set {name!r})")

        def __delattr__(self: Any, name: str) -> None:
            raise AttributeError(f"{cls.__name__} is frozen (cannot delete {name!r})")

        def _values(self: Any) -> tuple:
            d = self.__dict__
            return tuple(d[n] for n in names)

        def __eq__(self: Any, other: Any) -> Any:
            if other.__class__ is not self.__class__:
                return NotImplemented
            return _values(self) == _values(other)

        def __ne__(self: Any, other: Any) -> Any:
            eq = __eq__(self, other)
            return eq if eq is NotImplemented else not eq

        def __hash__(self: Any) -> int:
            return hash((cls.__qualname__, *_values(self)))

        def __repr__(self: Any) -> str:
            return f"{cls.__name__}({', '.join(f'{n}={v!r}' for n, v in zip(names, _values(self)))})"

        def __reduce__(self: Any) -> tuple:
            return (_rebuild, (cls, dict(zip(names, _values(self)))))

        def replace(self: Any, **changes: Any) -> Any:
            """A copy with `changes` (converted and validated like the constructor's arguments)."""
            return cls(**{**dict(zip(names, _values(self))), **changes})

        def to_dict(self: Any) -> dict[str, Any]:
            """The fields as plain data (nested records as dicts, tuples kept), like attrs.asdict."""
            return {n: _plain(v) for n, v in zip(names, _values(self))}

        for name, fn in (("__init__", __init__), ("__setattr__", __setattr__), ("__delattr__", __delattr__),
                         ("__eq__", __eq__), ("__ne__", __ne__), ("__hash__", __hash__), ("__repr__", __repr__),
                         ("__reduce__", __reduce__)):
            fn.__qualname__ = f"{cls.__qualname__}.{name}"
            setattr(cls, name, fn)
        if "replace" not in cls.__dict__:
            cls.replace = replace  # type: ignore[attr-defined]
        if "to_dict" not in cls.__dict__:
            cls.to_dict = to_dict  # type: ignore[attr-defined]
        cls.__record_fields__ = flds  # type: ignore[attr-defined]
        cls.__attrs_attrs__ = flds  # type: ignore[attr-defined]  # attrs.evolve compatibility
        cls.__match_args__ = names  # type: ignore[attr-defined]
        return cls

    return wrap(cls) if cls is not None else wrap


def _rebuild(cls: type, values: dict[str, Any]) -> Any:
    return cls(**values)


def _plain(v: Any) -> Any:
    if hasattr(v.__class__, "__record_fields__"):
        return v.to_dict()
    if isinstance(v, tuple):
        return tuple(_plain(x) for x in v)
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v
