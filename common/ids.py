"""Patient and gateway ids: the one rule for what an id may be, and the one pseudonym for logs.

Ids become MQTT topic levels, so they are restricted to ``[A-Za-z0-9_-]{1,64}``:
an MQTT wildcard (``+``/``#``), a ``/`` or a leading ``$`` in an id would let
one patient's data land on (or subscribe to) another's topic.
"""

from __future__ import annotations

import hashlib
import re

from common.errors import ConfigError

__all__ = ["ID_PATTERN", "mask_id", "shown", "validate_id"]

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def shown(value: object) -> str:
    """A short, escaped rendering of a rejected value for an error message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def mask_id(value: str) -> str:
    """A stable pseudonym of a patient id (or address) for logs: ``id#1a2b3c4d``.

    Logs leave the health-data boundary (support tickets, log shippers), so
    they carry a hash prefix that still lets one follow a patient through a
    log file without naming them.
    """
    return "id#" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:8]


def validate_id(value: object, kind: str = "patient") -> str:
    """Return ``value`` if it is a valid patient or gateway id.

    Args:
        value: the id to check.
        kind: what the id names ("patient", "gateway", "event"), used in the
            error message.

    Raises:
        ConfigError: (a ``ValueError``) naming the id when it is not a string
            of 1-64 characters from ``[A-Za-z0-9_-]``.
    """
    if not isinstance(value, str) or ID_PATTERN.fullmatch(value) is None:
        raise ConfigError(
            f"invalid {kind} id {shown(value)}: expected 1-64 characters from "
            "A-Z a-z 0-9 '_' '-' (no MQTT wildcards, '/', '$' or whitespace)"
        )
    return value
