"""Python plugins: entry points in group pypm.plugins receive the context at each stage."""

from __future__ import annotations

from collections.abc import Iterator

import json
import sys
from pathlib import Path

import pytest

from pypm import plugins
from pypm.errors import PluginError
from pypm.plugins import host
from pypm.project import load_project

from .conftest import PY_RECORDER, make_entry_point_dist, plugin_project

PKGS = (plugins.PackageInfo("idna", "3.7", "/c/idna.whl", "ef" * 32),)


@pytest.fixture()
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = make_entry_point_dist(tmp_path / "site", "pypm-test-plugins", "pypm_test_plugins", PY_RECORDER, {
        "recorder": "pypm_test_plugins:recorder",
        "onlysync": "pypm_test_plugins:only_sync",
        "missing": "pypm_test_plugins_nope:x",
        "late": "pypm_test_plugins:late",
        "badhooks": "pypm_test_plugins:typo",
    })
    monkeypatch.syspath_prepend(str(site))
    host._entry_points.cache_clear()
    host._loaded.clear()
    yield site
    host._entry_points.cache_clear()
    host._loaded.clear()
    sys.modules.pop("pypm_test_plugins", None)


def _project(root: Path, names: list[str], extra: str = "") -> Path:
    return plugin_project(root, names, tables=extra)


def test_every_stage_reaches_an_entry_point_plugin(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _project(tmp_path / "p", ["recorder"], "[tool.pypm.recorder]\nlevel = 3\n")
    log = tmp_path / "log"
    monkeypatch.setenv("PYPM_TEST_LOG", str(log))
    project = load_project(root)
    for stage in plugins.STAGES:
        plugins.fire(project, stage, venv=root / ".venv", lock_path=root / "pypm.lock",
                     interpreter="/usr/bin/python3", packages=PKGS)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["stage"] for c in calls] == list(plugins.STAGES)
    assert all(c == {"stage": c["stage"], "plugin": "recorder", "root": str(root), "venv": str(root / ".venv"),
                     "lock": str(root / "pypm.lock"), "interpreter": "/usr/bin/python3", "config": {"level": 3},
                     "packages": [["idna", "3.7", "ef" * 32, "/c/idna.whl"]]} for c in calls)


def test_method_hooks_limit_the_stages(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log"
    monkeypatch.setenv("PYPM_TEST_LOG", str(log))
    project = load_project(_project(tmp_path / "p", ["onlysync"]))
    for stage in plugins.STAGES:
        plugins.fire(project, stage, packages=PKGS)
    assert [json.loads(line)["stage"] for line in log.read_text().splitlines()] == ["pre-sync", "post-sync"]
    assert "onlysync: synced 1 packages" in capsys.readouterr().err


def test_function_hooks_attribute(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "log"
    monkeypatch.setenv("PYPM_TEST_LOG", str(log))
    for stage in plugins.STAGES:
        plugins.fire(load_project(_project(tmp_path / "p", ["late"])), stage)
    assert [json.loads(line)["stage"] for line in log.read_text().splitlines()] == ["post-sync", "post-run"]
    with pytest.raises(PluginError, match="declares unknown hook\\(s\\) 'post_sync'"):
        plugins.fire(load_project(_project(tmp_path / "q", ["badhooks"])), "pre-lock")


@pytest.mark.parametrize("how, reason", [
    ("return", "refusing pre-sync"),
    ("raise", "RuntimeError: the database is on fire"),
    ("plugin-error", "policy says no (ask the admin)"),
    ("false", "its hook returned False"),
    ("exit", "it called sys.exit(4)"),
])
def test_failure_is_friendly(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str,
                             reason: str) -> None:
    monkeypatch.setenv("PYPM_TEST_FAIL_AT", "pre-sync")
    monkeypatch.setenv("PYPM_TEST_FAIL_HOW", how)
    project = load_project(_project(tmp_path / "p", ["recorder"]))
    with pytest.raises(PluginError) as e:
        plugins.fire(project, "pre-sync")
    assert e.value.message == f"plugin recorder failed at pre-sync: {reason}"
    assert e.value.exit_code == 9


def test_import_error_names_the_entry_point(site: Path, tmp_path: Path) -> None:
    project = load_project(_project(tmp_path / "p", ["missing"]))
    with pytest.raises(PluginError, match=r"plugin missing could not be loaded from entry point "
                                          r"`missing = pypm_test_plugins_nope:x`.*ModuleNotFoundError"):
        plugins.fire(project, "post-sync")


def test_unknown_name_lists_the_search_path(site: Path, tmp_path: Path) -> None:
    project = load_project(_project(tmp_path / "p", ["recorder", "typo"]))
    with pytest.raises(PluginError) as e:
        plugins.fire(project, "pre-lock")
    assert "plugin typo not found" in e.value.message
    assert "group pypm.plugins" in e.value.message and "recorder" in e.value.message
    assert "plugin-path is empty" in e.value.message


def test_shipped_plugins_are_entry_points() -> None:
    eps = host._entry_points()
    assert eps["auditwheel"].value == "pypm.plugins.auditwheel:plugin"
    assert eps["s3cache"].value == "pypm.plugins.s3cache:plugin"
