"""The wheel builds without setuptools warnings and holds every package and the example job.

Issue 13: a listed `packages = [...]` with data under jobs/examples/ made every install print
setuptools' "'jobs.examples' is absent from the packages configuration" block, and left new
subpackages (workers/training/) out of non-editable installs.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_wheel_builds_quietly_with_every_package(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("pipeline", "workers", "jobs"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                           "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr
    assert "warning" not in (done.stdout + done.stderr).lower(), done.stdout + done.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "jobs/examples/demo.yaml" in names
    packages = {str(p.relative_to(src)) for pkg in ("pipeline", "workers", "jobs") for p in (src / pkg).rglob("__init__.py")}
    assert packages <= names, sorted(packages - names)
