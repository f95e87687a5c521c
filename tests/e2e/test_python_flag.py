"""`pypm sync --python VERSION|PATH`: which interpreter the venv gets, and clear errors when none fits."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.e2e.test_sync import assert_venv_exact, write_project


@pytest.fixture
def project(pypm, dists, index_server, tmp_path):
    dists.wheel("alpha", "1.0")
    server = index_server()
    root = write_project(tmp_path / "proj", deps=["alpha"])
    # No [tool.pypm] python: the flag (or discovery) decides.
    text = (root / "pyproject.toml").read_text().replace(f'python = "{sys.executable}"\n', "")
    (root / "pyproject.toml").write_text(text)
    assert pypm("lock", "--index-url", server.url, cwd=root).returncode == 0
    return root


def _venv_python_version(root: Path) -> str:
    cfg = dict(line.split(" = ", 1) for line in (root / ".venv" / "pyvenv.cfg").read_text().splitlines() if " = " in line)
    return cfg["version_info"] if "version_info" in cfg else cfg["version"]


def test_a_version_request_picks_a_matching_interpreter(pypm, project) -> None:
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    r = pypm("sync", "--locked", "--python", want, cwd=project)
    assert r.returncode == 0, r.stderr
    assert _venv_python_version(project).startswith(want + ".")
    assert_venv_exact(project / ".venv", {"alpha": "1.0"})


def test_a_path_request_is_used_as_is(pypm, project) -> None:
    r = pypm("sync", "--locked", "--python", sys.executable, cwd=project)
    assert r.returncode == 0, r.stderr
    cfg = (project / ".venv" / "pyvenv.cfg").read_text()
    assert f"executable = {os.path.realpath(sys.executable)}" in cfg, cfg


@pytest.mark.parametrize("request_", ["3.99", "/no/such/python3"])
def test_no_such_interpreter_is_a_clear_error_and_no_venv(pypm, project, request_) -> None:
    r = pypm("sync", "--locked", "--python", request_, cwd=project)
    assert r.returncode not in (0, 1) and r.stderr.startswith("error: "), (r.returncode, r.stderr)
    assert request_ in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (project / ".venv").exists()


def test_an_interpreter_outside_requires_python_is_refused(pypm, project) -> None:
    py = project / "pyproject.toml"
    py.write_text(py.read_text().replace('requires-python = ">=3.9"', 'requires-python = ">=3.9,<3.10"'))
    r = pypm("sync", "--python", sys.executable, cwd=project)  # re-locks with the lock's own options first
    assert r.returncode == 3 and "error: --python" in r.stderr, (r.returncode, r.stderr)
    assert "hint:" in r.stderr and "3.10" in r.stderr and str(sys.version_info.minor) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (project / ".venv").exists()
