"""The native ABI: the ctypes mirror matches pypm_plugin.h, and a compiled plugin sees every stage."""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import pytest

from pypm import plugins
from pypm.errors import ExitCode, PluginError
from pypm.plugins import native
from pypm.project import load_project

from .conftest import CSRC, cc, plugin_project


def test_ctypes_mirror_matches_the_header(tmp_path: Path) -> None:
    exe = cc(tmp_path / "layout", CSRC / "layout.c", shared=False)
    out = dict(line.rsplit(" ", 1) for line in subprocess.run([str(exe)], capture_output=True, text=True,
                                                               check=True).stdout.splitlines())
    assert int(out["abi"]) == native.ABI_VERSION
    assert int(out["sizeof.pypm_context"]) == ctypes.sizeof(native.Context)
    assert int(out["sizeof.pypm_package"]) == ctypes.sizeof(native.Package)
    for struct, cls in (("pypm_package", native.Package), ("pypm_context", native.Context)):
        c_fields = {k.split(".", 1)[1]: int(v) for k, v in out.items() if k.startswith(struct + ".")}
        py_fields = {name: getattr(cls, name).offset for name, *_ in cls._fields_}
        assert c_fields == py_fields, struct
    stages = {k.split(".", 1)[1]: int(v) for k, v in out.items() if k.startswith("stage.")}
    assert stages == native.STAGE_BITS
    assert list(stages) == list(plugins.STAGES)


def test_include_dir_holds_the_header() -> None:
    assert (native.include_dir() / "pypm_plugin.h").is_file()
    r = subprocess.run(["python3", "-m", "pypm", "include-dir"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == native.include_dir()


def _project(root: Path, plugin_names: list[str], plugin_path: str, extra: str = "") -> Path:
    return plugin_project(root, plugin_names, plugin_path=plugin_path, tables=extra)


def _read_log(log: Path) -> list[dict[str, object]]:
    calls: list[dict[str, object]] = []
    cur: dict[str, object] = {"package": []}
    for line in log.read_text().splitlines():
        if line == "end":
            calls.append(cur)
            cur = {"package": []}
            continue
        key, _, value = line.partition("=")
        if key == "package":
            cur["package"].append(value)  # type: ignore[attr-defined]
        elif key == "abi":
            abi, sid = value.split(" stage_id=")
            cur["abi"], cur["stage_id"] = int(abi), int(sid)
        else:
            cur[key] = value
    return calls


PKGS = (
    plugins.PackageInfo("requests", "2.32.3", "/cache/ab/requests.whl", "ab" * 32),
    plugins.PackageInfo("idna", "3.7", None, "cd" * 32),
)


def test_every_stage_reaches_a_c_plugin_with_the_context(native_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    root = _project(tmp_path / "proj", ["recorder"], str(native_dir),
                    '\n[tool.pypm.recorder]\ncolour = "blue"\n')
    log = tmp_path / "log"
    monkeypatch.setenv("PYPM_TEST_LOG", str(log))
    monkeypatch.delenv("PYPM_TEST_FAIL_AT", raising=False)
    project = load_project(root)
    for stage in plugins.STAGES:
        plugins.fire(project, stage, venv=root / ".venv", lock_path=root / "pypm.lock",
                     interpreter="/usr/bin/python3", packages=PKGS)
    calls = _read_log(log)
    assert [c["stage"] for c in calls] == list(plugins.STAGES)
    for c in calls:
        assert c["abi"] == native.ABI_VERSION
        assert c["stage_id"] == native.STAGE_BITS[c["stage"]]  # type: ignore[index]
        assert c["plugin"] == "recorder"
        assert c["root"] == str(root)
        assert c["venv"] == str(root / ".venv")
        assert c["lock"] == str(root / "pypm.lock")
        assert c["interpreter"] == "/usr/bin/python3"
        assert c["config"] == '{"colour": "blue"}'
        assert c["n_packages"] == "2"
        assert c["package"] == [f"requests 2.32.3 {'ab' * 32} /cache/ab/requests.whl",
                                f"idna 3.7 {'cd' * 32} (null)"]
    err = capfd.readouterr().err
    assert err.count("recorder: hello from C") == len(plugins.STAGES)


def test_declared_stages_limit_the_calls(native_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _project(tmp_path / "proj", ["syncer"], str(native_dir))
    log = tmp_path / "log"
    monkeypatch.setenv("PYPM_TEST_LOG", str(log))
    project = load_project(root)
    for stage in plugins.STAGES:
        plugins.fire(project, stage, venv=None, lock_path=None, interpreter=None)
    calls = _read_log(log)
    assert [c["stage"] for c in calls] == ["pre-sync", "post-sync"]
    assert calls[0]["venv"] == "(null)" and calls[0]["n_packages"] == "0"


def test_non_zero_return_is_a_friendly_plugin_error(native_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    root = _project(tmp_path / "proj", ["recorder"], "plugins")
    (root / "plugins").symlink_to(native_dir)  # plugin-path is relative to the project root
    monkeypatch.delenv("PYPM_TEST_LOG", raising=False)
    monkeypatch.setenv("PYPM_TEST_FAIL_AT", "post-lock")
    project = load_project(root)
    plugins.fire(project, "pre-lock")
    with pytest.raises(PluginError) as e:
        plugins.fire(project, "post-lock", packages=PKGS)
    assert e.value.exit_code == ExitCode.PLUGIN == 9
    assert e.value.message == "plugin recorder failed at post-lock: refusing post-lock of 2 packages"
    assert "pypm_recorder.so" in (e.value.hint or "")


def test_unknown_plugin_names_where_it_looked(tmp_path: Path) -> None:
    root = _project(tmp_path / "proj", ["nosuch"], "plugins")
    with pytest.raises(PluginError) as e:
        plugins.fire(load_project(root), "pre-sync")
    msg = e.value.message
    assert "plugin nosuch not found" in msg
    assert "group pypm.plugins" in msg
    assert str(root / "plugins" / "pypm_nosuch.so") in msg


@pytest.mark.parametrize("cxx", [False, True], ids=["c", "c++"])
def test_header_works_from_c_and_cxx_with_hidden_visibility(tmp_path: Path, cxx: bool) -> None:
    # -fvisibility=hidden is common in real builds: the header must still export what pypm looks up.
    d = tmp_path / "plugins"
    d.mkdir()
    cc(d / "pypm_rec.so", CSRC / "recorder.c", cxx=cxx, flags=("-fvisibility=hidden",),
       defines=("STAGES=PYPM_STAGE_POST_RUN",))
    nat = native.load("rec", d / "pypm_rec.so")
    assert nat.stages == ("post-run",)
    rc, last = nat.call("post-run", project_root=str(tmp_path), venv=None, lock_path=None, interpreter=None,
                        config={}, packages=(), report=lambda m: None)
    assert (rc, last) == (0, "hello from C")


def test_load_errors_are_plugin_errors(tmp_path: Path) -> None:
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "pypm_broken.so").write_bytes(b"not an ELF file")
    nohook = d / "nohook.c"
    nohook.write_text("int something_else(void) { return 0; }\n")
    cc(d / "pypm_nohook.so", nohook)
    wrongabi = d / "wrongabi.c"
    wrongabi.write_text('#include "pypm_plugin.h"\nconst uint32_t pypm_plugin_abi = 99;\n'
                        "int pypm_hook(const struct pypm_context *c) { (void)c; return 0; }\n")
    cc(d / "pypm_wrongabi.so", wrongabi)
    for name, expect in (("broken", "could not be loaded"), ("nohook", "does not export `pypm_hook`"),
                         ("wrongabi", "plugin ABI 99")):
        root = _project(tmp_path / name, [name], str(d))
        with pytest.raises(PluginError, match=expect):
            plugins.fire(load_project(root), "pre-sync")


def test_no_plugins_means_no_work(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\n')
    project = load_project(root)
    plugins.fire(project, "pre-sync")
    assert plugins.wheel_fetchers(project) == []


@pytest.fixture
def crasher(tmp_path: Path) -> Path:
    d = tmp_path / "plugins"
    d.mkdir()
    cc(d / "pypm_crasher.so", CSRC / "crasher.c")
    return _project(tmp_path / "proj", ["crasher"], str(d))


@pytest.mark.parametrize("how, signal_name", [("segv", "SIGSEGV"), ("abort", "SIGABRT"), ("exit", None)])
def test_a_crashing_c_plugin_is_a_plugin_error_not_the_end_of_pypm(crasher: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capfd: pytest.CaptureFixture[str], how: str,
                                                                   signal_name: str | None) -> None:
    monkeypatch.setenv("PYPM_TEST_CRASH_AT", "post-sync")
    monkeypatch.setenv("PYPM_TEST_CRASH_HOW", how)
    project = load_project(crasher)
    plugins.fire(project, "pre-lock")
    plugins.fire(project, "pre-sync")
    with pytest.raises(PluginError) as e:
        plugins.fire(project, "post-sync")
    what = f"killed by {signal_name}" if signal_name else "its process exited with status 4 during the hook"
    assert e.value.message == f"plugin crasher crashed at post-sync ({what})"
    assert e.value.exit_code == ExitCode.PLUGIN and "pypm_crasher.so" in (e.value.hint or "")
    # One process for the whole command: the plugin's static counted 1, 2, 3.
    err = capfd.readouterr().err
    assert "crasher: call 1 at pre-lock" in err and "crasher: call 3 at post-sync" in err, err
    with pytest.raises(PluginError, match="crashed at post-run"):  # gone: later stages say so too
        plugins.fire(project, "post-run")


def test_a_plugin_that_crashes_while_loading_is_a_plugin_error(tmp_path: Path) -> None:
    d = tmp_path / "plugins"
    d.mkdir()
    src = tmp_path / "ctor.c"
    src.write_text('#include "pypm_plugin.h"\n#include <stdlib.h>\n'
                   "__attribute__((constructor)) static void boom(void) { abort(); }\n"
                   "int pypm_hook(const struct pypm_context *c) { (void)c; return 0; }\n")
    cc(d / "pypm_ctor.so", src)
    root = _project(tmp_path / "proj", ["ctor"], str(d))
    with pytest.raises(PluginError, match=r"plugin ctor crashed while being loaded from .*pypm_ctor.so \(killed by signal 6\)"):
        plugins.fire(load_project(root), "pre-sync")


def test_ctrl_c_does_not_end_a_plugins_host(native_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The terminal's SIGINT reaches the host too (same process group); the next stage still runs."""
    import os
    import signal
    import time

    from pypm.plugins.host import find_plugin

    monkeypatch.delenv("PYPM_TEST_FAIL_AT", raising=False)
    root = _project(tmp_path / "proj", ["recorder"], str(native_dir))
    project = load_project(root)
    plugins.fire(project, "pre-run")
    os.kill(find_plugin(project, "recorder").obj._proc.pid, signal.SIGINT)
    time.sleep(0.2)
    plugins.fire(project, "post-run")
