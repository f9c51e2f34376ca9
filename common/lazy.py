"""Package exports that load their module on first use (PEP 562).

A package ``__init__`` that imported every submodule would make the lightest
import (``device_gateway.protocol`` from the simulator, ``posture-monitor
--help``) pay for paho, aiohttp or SciPy. Each package instead names where
each public name lives, and the module is imported when the name is first
read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` exporting ``name -> "module"``.

    ``where`` maps each public name to the submodule (relative to the
    package, e.g. ``"topics"``) that defines it.
    """

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__
