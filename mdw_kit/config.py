"""One mixin for every settings dataclass: ``to_dict`` / ``from_dict`` / ``changed_fields``.

``from_dict`` refuses unknown keys by name with a did-you-mean, so a typo in a preset, a
``--distill-config`` or a saved run is an error, never silently ignored.

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
from typing import Any, Sequence, TypeVar

C = TypeVar("C", bound="ConfigMixin")


class ConfigMixin:
    """``to_dict`` (JSON-ready: tuples as lists), ``from_dict`` (checked keys), ``changed_fields``."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        """Build from a dict; an unknown key is an error naming it (with the closest known key)."""
        known = sorted(f.name for f in dataclasses.fields(cls))
        extra = sorted(set(d) - set(known))
        if extra:
            near = {k: difflib.get_close_matches(k, known, 1) for k in extra}
            hint = "".join(f" (did you mean {m[0]!r} for {k!r}?)" for k, m in near.items() if m)
            raise ValueError(f"unknown {cls.__name__} keys {extra}{hint}; known: {known}")
        return cls(**d)

    def changed_fields(self, saved: dict[str, Any], keys: Sequence[str] | None = None) -> list[str]:
        """Fields (of ``keys``, default all, plus any ``saved`` has) that differ from a saved config.

        A field ``saved`` lacks (added since it was written) counts as its default.
        """
        now = self.to_dict()
        defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else
                             f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
                    for f in dataclasses.fields(self)}
        defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}
        names = set(now) | set(saved) if keys is None else set(keys)
        return sorted(k for k in names if now.get(k) != saved.get(k, defaults.get(k)))


__all__ = ["ConfigMixin"]
