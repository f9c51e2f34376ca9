"""Declarative fields for the scenario dataclasses, and their validation.

Every setting a scenario file may hold is a dataclass field created with one
of the helpers below; the helper stores its kind and range in the field's
metadata. :func:`build` then turns one TOML table into the dataclass,
rejecting unknown keys, wrong types and out-of-range values with a
:class:`~common.errors.ConfigError` that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from common.errors import ConfigError

__all__ = ["Where", "build", "choice", "flag", "integer", "number", "table", "text"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Where:
    """A position in a scenario file, for error messages: ``file: key.path``."""

    source: str
    path: str = ""

    def key(self, name: str | int) -> Where:
        """The position of a child key (or list index) of this one."""
        if isinstance(name, int):
            return Where(self.source, f"{self.path}[{name}]")
        return Where(self.source, f"{self.path}.{name}" if self.path else name)

    def error(self, message: str) -> ConfigError:
        where = f"{self.source}: {self.path}" if self.path else self.source
        return ConfigError(f"{where}: {message}")


def number(
    default: float | object | None = dataclasses.MISSING,
    *,
    lo: float = -math.inf,
    hi: float = math.inf,
) -> Any:
    """A float field in ``[lo, hi]`` (a default of None makes it optional)."""
    return dataclasses.field(default=default, metadata={"kind": "float", "lo": lo, "hi": hi})


def integer(
    default: int | object | None = dataclasses.MISSING,
    *,
    lo: int = -(2**63),
    hi: int = 2**63 - 1,
    options: tuple[int, ...] | None = None,
) -> Any:
    """An int field in ``[lo, hi]`` (or one of ``options``)."""
    meta = {"kind": "int", "lo": lo, "hi": hi, "options": options}
    return dataclasses.field(default=default, metadata=meta)


def choice(default: str | object, options: tuple[str, ...]) -> Any:
    """A string field that must be one of ``options``."""
    return dataclasses.field(default=default, metadata={"kind": "choice", "options": options})


def text(default: str | object | None = dataclasses.MISSING, *, pattern: str = r".*") -> Any:
    """A string field matching the regular expression ``pattern`` in full."""
    return dataclasses.field(default=default, metadata={"kind": "text", "pattern": pattern})


def flag(default: bool) -> Any:
    """A boolean field."""
    return dataclasses.field(default=default, metadata={"kind": "bool"})


def table(cls: type[Any]) -> Any:
    """A nested table parsed as dataclass ``cls`` (defaults when absent)."""
    return dataclasses.field(default_factory=cls, metadata={"kind": "table", "cls": cls})


def build(cls: type[T], data: object, where: Where, **extra: Any) -> T:
    """Validate the TOML table ``data`` and construct ``cls`` from it.

    ``extra`` supplies fields that do not come from the file (already
    validated by the caller) and keys listed in it are not looked up.

    Raises:
        ConfigError: ``data`` is not a table, has an unknown key, lacks a
            required key, or holds a value of the wrong type or range.
    """
    if not isinstance(data, Mapping):
        raise where.error(f"expected a table, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in known or key in extra:
            names = ", ".join(sorted(k for k in known if k not in extra))
            raise where.key(str(key)).error(f"unknown key (expected one of: {names})")
    kwargs: dict[str, Any] = dict(extra)
    for name, fld in known.items():
        if name in extra:
            continue
        if name in data:
            kwargs[name] = _check(fld, data[name], where.key(name))
        elif fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING:
            raise where.key(name).error("required key is missing")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # cross-field checks in __post_init__
        raise where.error(str(exc)) from exc


def _check(fld: dataclasses.Field[Any], value: object, where: Where) -> Any:
    meta = fld.metadata
    kind = meta.get("kind")
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise where.error(f"expected a number, got {value!r}")
        result = float(value)
        if not (math.isfinite(result) and meta["lo"] <= result <= meta["hi"]):
            raise where.error(f"expected a number in {meta['lo']}..{meta['hi']}, got {value!r}")
        return result
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise where.error(f"expected an integer, got {value!r}")
        options = meta["options"]
        if options is not None and value not in options:
            raise where.error(f"expected one of {list(options)}, got {value!r}")
        if not meta["lo"] <= value <= meta["hi"]:
            raise where.error(f"expected an integer in {meta['lo']}..{meta['hi']}, got {value!r}")
        return value
    if kind == "choice":
        if value not in meta["options"]:
            raise where.error(f"expected one of {list(meta['options'])}, got {value!r}")
        return value
    if kind == "text":
        if not isinstance(value, str) or not re.fullmatch(meta["pattern"], value):
            raise where.error(f"expected a string matching {meta['pattern']!r}, got {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise where.error(f"expected true or false, got {value!r}")
        return value
    if kind == "table":
        return build(meta["cls"], value, where)
    raise TypeError(f"field {fld.name} has no validation kind")  # a bug in our dataclasses
