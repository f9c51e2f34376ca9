"""The kernels' on-disk cache follows every module of their package: a
kernel that inlines a helper from a sibling module is compiled afresh when
only the helper's module changed (numba's own cache would keep serving the
old machine code, as after an upgrade that changed only the helper)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import posture.kernels as kernels

pytestmark = pytest.mark.skipif(
    not kernels.compiled_available(), reason="numba does not import here"
)

_HELPER = """
from posture.kernels.jit import helper

@helper
def offset(x):
    return x + {value}
"""

_KERNEL = """
from posture.kernels.jit import kernel
from mykernels.helpers import offset

@kernel
def apply(x):
    return offset(x)
"""


def _run(root: Path) -> tuple[float, int]:
    """The kernel's result on 1.0 in a fresh process, and how many cache index
    files its package has (one per cached function once written)."""
    code = "from mykernels.main import apply; print(apply(1.0))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    return float(out), len(list((root / "mykernels" / "__pycache__").glob("*.nbi")))


def test_a_change_to_a_helpers_module_recompiles_the_kernel_that_inlines_it(
    tmp_path: Path,
) -> None:
    package = tmp_path / "mykernels"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text(textwrap.dedent(_HELPER.format(value=1.0)))
    (package / "main.py").write_text(textwrap.dedent(_KERNEL))

    assert _run(tmp_path) == (2.0, 1)  # compiled and cached
    assert _run(tmp_path)[0] == 2.0  # from the cache
    (package / "helpers.py").write_text(textwrap.dedent(_HELPER.format(value=10.0)))
    assert _run(tmp_path)[0] == 11.0  # the kernel's own file did not change
