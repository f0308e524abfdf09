"""One mixin for every settings dataclass: ``to_dict`` / ``from_dict`` / ``changed_fields``.

``from_dict`` refuses unknown keys by name with a did-you-mean, so a typo in a preset, a
``--distill-config`` or a saved run is an error, never silently ignored. A class may declare

- ``_renamed``: old key -> new key, so configs saved under an old name still load;
- ``_flat``: the name of a field that holds another config (a :class:`~mdw_kit.train.TrainConfig`,
  say) whose keys may also be given at the top level: ``DualTrackConfig(epochs=4)`` sets
  ``train.epochs``. Such a class is declared ``@dataclass(init=False)`` with
  ``__init__ = ConfigMixin.flat_init``, and :func:`delegate` gives it read-only attributes for
  the inner keys. ``to_dict`` writes the nested form; ``from_dict`` reads both.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Demo(ConfigMixin):
    ...     lr: float = 0.1
    ...     epochs: int = 3
    >>> Demo.from_dict({"lr": 0.2}).changed_fields({"lr": 0.1})
    ['lr']
    >>> Demo.from_dict({"epoch": 2})
    Traceback (most recent call last):
    ...
    ValueError: unknown Demo keys ['epoch'] (did you mean 'epochs' for 'epoch'?); known: ['epochs', 'lr']
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, ClassVar, Mapping, Sequence, TypeVar

C = TypeVar("C", bound="ConfigMixin")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


class ConfigMixin:
    """``to_dict`` (JSON-ready: tuples as lists), ``from_dict`` (checked keys), ``changed_fields``."""

    _renamed: ClassVar[dict[str, str]] = {}
    _flat: ClassVar[str | None] = None
    _flat_skip: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field (a nested config as its own dict)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, ConfigMixin) else list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def _inner(cls) -> tuple[type | None, set[str]]:
        """The class of the ``_flat`` field and the keys that may be given at the top level."""
        if cls._flat is None:
            return None, set()
        f = {f.name: f for f in dataclasses.fields(cls)}[cls._flat]
        inner = type(_default(f))
        own = {g.name for g in dataclasses.fields(cls)}
        return inner, {g.name for g in dataclasses.fields(inner)} - own - set(cls._flat_skip)

    @classmethod
    def normalise(cls, d: Mapping[str, Any]) -> dict[str, Any]:
        """``d`` with old names renamed and top-level keys of the ``_flat`` config moved into it;
        unknown keys are an error naming them (with the closest known key)."""
        d = dict(d)
        for old, new in cls._renamed.items():
            if old in d:
                if new in d:
                    raise ValueError(f"{cls.__name__}: both {old!r} (the old name) and {new!r} are given")
                d[new] = d.pop(old)
        known = sorted(f.name for f in dataclasses.fields(cls))
        inner, flat_keys = cls._inner()
        extra = sorted(set(d) - set(known) - flat_keys)
        if extra:
            names = known + sorted(flat_keys) + sorted(cls._renamed)
            near = {k: difflib.get_close_matches(k, names, 1) for k in extra}
            hint = "".join(f" (did you mean {cls._renamed.get(m[0], m[0])!r} for {k!r}?)"
                           for k, m in near.items() if m)
            raise ValueError(f"unknown {cls.__name__} keys {extra}{hint}; known: {sorted(known + list(flat_keys))}")
        if inner is not None:
            f = {g.name: g for g in dataclasses.fields(cls)}[cls._flat]
            base = d.get(cls._flat)
            if base is None:
                base = _default(f)
            elif isinstance(base, Mapping):
                base = inner.from_dict({**_default(f).to_dict(), **base})
            flat = {k: d.pop(k) for k in list(d) if k in flat_keys}
            d[cls._flat] = dataclasses.replace(base, **flat) if flat else base
        return d

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        """Build from a dict; an unknown key is an error naming it (with the closest known key)."""
        return cls(**cls.normalise(d))

    def flat_init(self, **kw: Any) -> None:
        """``__init__`` of a class with a ``_flat`` config: its keys may be given at the top level."""
        try:
            d = type(self).normalise(kw)
        except ValueError as e:
            raise TypeError(str(e)) from None
        for f in dataclasses.fields(self):
            v = d[f.name] if f.name in d else _default(f)
            if v is dataclasses.MISSING:
                raise TypeError(f"{type(self).__name__} needs {f.name!r}")
            setattr(self, f.name, v)
        post = getattr(self, "__post_init__", None)
        if post is not None:
            post()

    def changed_fields(self, saved: Mapping[str, Any], keys: Sequence[str] | None = None) -> list[str]:
        """Fields (of ``keys``, default all, plus any ``saved`` has) that differ from a saved config.

        A field ``saved`` lacks (added since it was written) counts as its default; a saved config
        under old names or in the flat form compares as its current form. Nested fields are named
        ``train.lr``.
        """
        cls = type(self)
        now = _flatten(self.to_dict())
        defaults = {}
        for f in dataclasses.fields(self):
            v = _default(f)
            defaults.update(_flatten({f.name: v.to_dict() if isinstance(v, ConfigMixin) else v}))
        try:
            norm = cls.normalise(saved)
        except ValueError:
            norm = dict(saved)
        old = _flatten({k: v.to_dict() if isinstance(v, ConfigMixin) else v for k, v in norm.items()})
        if keys is None:
            names = set(now) | set(old)
        else:
            names = {n for k in keys for n in now if n == k or n.startswith(f"{k}.")} | set(keys)
        return sorted(k for k in names if now.get(k) != old.get(k, defaults.get(k)))


def delegate(cls: type, field: str, names: Sequence[str]) -> type:
    """Give ``cls`` read-only attributes ``names`` that read ``getattr(self.<field>, name)``."""
    for n in names:
        setattr(cls, n, property(lambda self, n=n: getattr(getattr(self, field), n),
                                 doc=f"``{field}.{n}`` (read-only; set it through ``{field}``)"))
    return cls


__all__ = ["ConfigMixin", "delegate"]
