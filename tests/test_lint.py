"""Static checks of the Python code: ruff's pyflakes and import rules."""

import shutil
import subprocess
import sys

from orbserver import ROOT


def test_ruff_finds_nothing():
    """Run ruff with ruff.toml over the whole tree."""
    ruff = shutil.which("ruff") or f"{sys.prefix}/bin/ruff"
    result = subprocess.run(
        [ruff, "check", "--no-cache", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
