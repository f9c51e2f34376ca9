"""Who each patient is: display name and room/bed, kept on the dashboard side only.

Patient ids travel on MQTT and in logs (masked); names and beds never do. A
clinic writes them into a TOML file that only the dashboard reads
(``posture-monitor dashboard --patients patients.toml``)::

    [patients.p-001]
    name = "Erika Mustermann"
    room = "3.12"
    bed = "A"

Each table key is a patient id (the id rule of ``common.ids``); ``name``,
``room`` and ``bed`` are optional strings of at most 80 characters. The page
shows the name and "room 3.12 · bed A" on the tile, the fall banner and the
feed; escalation notices to configured recipients carry them (a nurse must
know where to go); MQTT messages and log lines never do.
"""

from __future__ import annotations

import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.ids import ID_PATTERN

__all__ = ["PatientDirectory", "PatientInfo"]

_MAX_TEXT = 80
_FIELDS = ("name", "room", "bed")


@dataclass(frozen=True)
class PatientInfo:
    """Display data of one patient (empty strings when not configured)."""

    name: str = ""
    room: str = ""
    bed: str = ""

    @property
    def location(self) -> str:
        """``room 3.12 · bed A``, or whichever part is known, or ``""``."""
        parts = [f"room {self.room}" if self.room else "", f"bed {self.bed}" if self.bed else ""]
        return " · ".join(p for p in parts if p)

    def to_dict(self) -> dict[str, str]:
        """``{"name", "room", "bed", "location"}`` for the page and notices."""
        return {"name": self.name, "room": self.room, "bed": self.bed, "location": self.location}


@dataclass(frozen=True)
class PatientDirectory:
    """Patient id -> :class:`PatientInfo`; an unknown id has no name (the page shows the id)."""

    patients: dict[str, PatientInfo]

    @classmethod
    def empty(cls) -> PatientDirectory:
        """No names configured."""
        return cls({})

    def get(self, patient_id: str) -> PatientInfo | None:
        """The configured info of a patient, or None."""
        return self.patients.get(patient_id)

    def to_dict(self) -> dict[str, dict[str, str]]:
        """Everything, for the page's snapshot (sorted by id)."""
        return {pid: info.to_dict() for pid, info in sorted(self.patients.items())}

    @classmethod
    def load(cls, path: Path) -> PatientDirectory:
        """Read a patients file.

        Raises:
            ConfigError: unreadable file, invalid TOML, a bad id, an unknown
                key or a value that is not a short single-line string; the
                message names the file and key.
        """
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the patients file: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, source: str = "<patients>") -> PatientDirectory:
        """Validate parsed TOML (see :meth:`load`). Raises ConfigError."""
        unknown = set(data) - {"patients"}
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {sorted(unknown)}; expected [patients.ID]")
        table = data.get("patients", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: 'patients' must be a table of [patients.ID] tables")
        patients: dict[str, PatientInfo] = {}
        for patient_id, entry in table.items():
            where = f"{source}: patients.{patient_id}"
            if ID_PATTERN.fullmatch(patient_id) is None:
                raise ConfigError(f"{where}: a patient id is 1-64 characters of A-Z a-z 0-9 _ -")
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: expected a table with name, room, bed")
            extra = set(entry) - set(_FIELDS)
            if extra:
                raise ConfigError(
                    f"{where}: unknown key(s) {sorted(extra)}; expected name, room, bed"
                )
            values = {key: _text(entry.get(key, ""), f"{where}.{key}") for key in _FIELDS}
            patients[patient_id] = PatientInfo(**values)
        return cls(patients)


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {type(value).__name__}")
    text = unicodedata.normalize("NFC", value.strip())
    if len(text) > _MAX_TEXT or any(unicodedata.category(c).startswith("C") for c in text):
        raise ConfigError(f"{where}: at most {_MAX_TEXT} printable characters on one line")
    return text
