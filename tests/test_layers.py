"""The import layers of docs/architecture.md, enforced by reading every module's imports.

Data flows wearable → gateway → engine → alerts → physio; a package may
import only the packages below it. A violation names the file, the line and
the import, so the fix is obvious.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What each of our packages may import of ours (itself always allowed). The
# most specific entry wins, so ``device_gateway.protocol`` (the wire
# contract the simulator shares) is held lower than the rest of its package.
ALLOWED: dict[str, frozenset[str]] = {
    "common": frozenset(),
    "posture": frozenset({"common"}),
    "alerts": frozenset({"common"}),
    "device_gateway.protocol": frozenset({"common"}),
    "simulator": frozenset({"common", "device_gateway.protocol"}),
    "device_gateway": frozenset({"common", "posture", "alerts"}),
    "physio": frozenset({"common", "alerts"}),
    "lab": frozenset({"common", "posture", "simulator", "device_gateway", "alerts"}),
    "posture_monitor": frozenset(
        {"common", "posture", "alerts", "device_gateway", "simulator", "physio", "lab"}
    ),
}
OURS = frozenset(name.split(".")[0] for name in ALLOWED)


def _rule_for(module: str) -> tuple[str, frozenset[str]]:
    owner = max((key for key in ALLOWED if module == key or module.startswith(key + ".")), key=len)
    return owner, ALLOWED[owner]


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every absolute import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import in {module}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            # ``from pkg import sub`` imports the submodule ``pkg.sub`` where one exists.
            subs = [f"{node.module}.{a.name}" for a in node.names]
            subs = [name for name in subs if _is_module(name)]
            found += [(node.lineno, name) for name in subs or [node.module]]
    return found


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _modules() -> list[tuple[Path, str]]:
    out = []
    for package in sorted(OURS):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out.append((path, ".".join(p for p in parts if p != "__init__")))
    return out


def _is_within(name: str, target: str) -> bool:
    return name == target or name.startswith(target + ".")


def test_no_module_imports_a_higher_layer() -> None:
    violations = []
    for path, module in _modules():
        owner, allowed = _rule_for(module)
        for line, name in _imports(path, module):
            if name.split(".")[0] not in OURS or _is_within(name, owner):
                continue
            if not any(_is_within(name, ok) for ok in allowed):
                violations.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {name}")
    assert not violations, "imports against the layers:\n" + "\n".join(violations)


@pytest.mark.parametrize(
    ("statement", "must_not_load"),
    [
        ("import posture_monitor.cli", ("scipy", "aiohttp", "paho", "numpy")),
        ("import device_gateway.protocol", ("paho", "amqtt", "sqlite3", "aiohttp", "scipy")),
        ("import alerts.topics", ("paho", "amqtt", "sqlite3", "aiohttp")),
        ("import alerts.intake", ("paho", "amqtt", "sqlite3", "aiohttp")),
        ("import posture", ("paho", "aiohttp", "bleak", "lab")),
    ],
)
def test_light_imports_stay_light(statement: str, must_not_load: tuple[str, ...]) -> None:
    # A fresh interpreter, so what this test process already imported cannot hide a load.
    probe = f"{statement}; import sys; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", probe], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.split()
    )
    heavy = sorted(name for name in loaded if name.split(".")[0] in must_not_load)
    assert not heavy, f"{statement!r} loaded {heavy}"


def test_the_architecture_doc_draws_these_layers() -> None:
    # The table under "The import layers" in docs/architecture.md is ALLOWED,
    # row for row: a new dependency direction updates both or this fails.
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = doc.split("## The import layers", 1)[1].split("\n## ", 1)[0]
    drawn: dict[str, frozenset[str]] = {}
    for row in re.findall(r"^\| `([\w.]+)` \| (.+) \|$", section, flags=re.MULTILINE):
        package, imports = row
        drawn[package] = frozenset(re.findall(r"`([\w.]+)`", imports))
    assert drawn == ALLOWED
