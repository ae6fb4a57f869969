"""The wheel holds exactly the package: treadle/__init__.py, actors/, runtime/, sinks/ and no tests."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_contains_the_package_and_nothing_else(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w",
         str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    [wheel] = tmp_path.glob("treadle-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    files = [n for n in names if not n.startswith("treadle-")]
    assert "treadle/__init__.py" in files
    assert "treadle/testing.py" in files
    for package in ("actors", "runtime", "sinks"):
        assert f"treadle/{package}/__init__.py" in files
    assert any(n.startswith("treadle/runtime/checkpointers/migrations/postgres/") for n in files)
    assert "treadle/runtime/viz/page.html" in files
    assert all(n.startswith("treadle/") for n in files), files
    for excluded in ("tests/", "examples/", "docs/", ".ci/"):
        assert not any(f"/{excluded}" in n or n.startswith(excluded) for n in files)


def test_python_dash_m_and_the_script_agree() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "treadle", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    assert "demo" in out.stdout
    assert "sessions" in out.stdout
