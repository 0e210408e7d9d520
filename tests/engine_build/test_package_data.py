"""The default calibration set ships in the wheel, not only in a checkout (an editable install)."""

import importlib.resources
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from engine_build.commands import CALIB_DEFAULT

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ziya_trt", "engine_build", "perf")  # [tool.setuptools.packages.find] include


def test_the_default_calibration_set_is_the_packages_own():
    files = importlib.resources.files("engine_build") / "data" / "calib_zh_en"
    assert (files / "calib.jsonl").is_file() and Path(str(files)) == CALIB_DEFAULT


def test_the_wheel_carries_the_data_files(tmp_path):
    """A wheel of the checkout's packages (copied, so the build leaves nothing in the checkout) holds every file
    under engine_build/data, perf/data and ziya_trt/eval/data (eval agree's prompt set)."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / f, src / f)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                          "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = [p.relative_to(ROOT).as_posix() for d in ("engine_build/data", "perf/data", "ziya_trt/eval/data")
            for p in sorted((ROOT / d).rglob("*")) if p.is_file()]
    assert "engine_build/data/calib_zh_en/calib.jsonl" in data and "ziya_trt/eval/data/agree_prompts.jsonl" in data
    assert not [f for f in data if f not in names]
