"""End-to-end tests of `pypm run --no-sandbox`: environment, exit status, signals, the fast path."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.test_sync import installed, write_lock, write_project

HOT_PATH_FORBIDDEN = ("httpx", "resolvelib", "rich", "pypm.index", "pypm.resolver", "pypm.http")


@pytest.fixture
def synced(pypm, dists, index_server, tmp_path):
    """A synced project with one package providing a console script."""
    w = dists.wheel("greet", "1.0", modules={"greet/__init__.py": "def main():\n    print('hi from greet')\n"},
                    entry_points={"console_scripts": {"greet": "greet:main"}})
    server = index_server()
    project = write_project(tmp_path / "proj", deps=["greet"])
    write_lock(project, server, [w], main=["greet"])
    pypm("sync", "--frozen", cwd=project, check=True)
    return project, server


def test_run_uses_the_venv_environment(pypm, synced) -> None:
    project, _ = synced
    code = ("import json, os, sys; print(json.dumps({'exe': sys.executable, 've': os.environ.get('VIRTUAL_ENV'),"
            " 'path0': os.environ['PATH'].split(os.pathsep)[0], 'home': os.environ.get('PYTHONHOME'),"
            " 'prefix': sys.prefix}))")
    r = pypm("run", "--no-sandbox", "--frozen", "python", "-c", code, cwd=project, env={"PYTHONHOME": sys.base_prefix})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    venv = project / ".venv"
    assert out["ve"] == str(venv)
    assert out["path0"] == str(venv / "bin")
    assert out["home"] is None
    assert Path(out["prefix"]) == venv
    r = pypm("run", "--no-sandbox", "--frozen", "greet", cwd=project)
    assert r.returncode == 0 and r.stdout.strip() == "hi from greet", r.stderr


def test_run_returns_the_exit_status_and_128_plus_signal(pypm, synced) -> None:
    project, _ = synced
    r = pypm("run", "--no-sandbox", "--frozen", "python", "-c", "raise SystemExit(7)", cwd=project)
    assert r.returncode == 7
    r = pypm("run", "--no-sandbox", "--frozen", "--", "python", "-c", "import os; os.kill(os.getpid(), 9)", cwd=project)
    assert r.returncode == 128 + 9


def test_command_not_found_is_a_clear_error(pypm, synced) -> None:
    project, _ = synced
    r = pypm("run", "--no-sandbox", "--frozen", "no-such-command-xyz", cwd=project)
    assert r.returncode == 127
    assert "command not found: no-such-command-xyz" in r.stderr and "Traceback" not in r.stderr
    r = pypm("run", "--no-sandbox", "--frozen", cwd=project)
    assert r.returncode == 2 and "needs a command" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGINT])
def test_signals_are_forwarded_to_the_command(pypm, synced, tmp_path, sig) -> None:
    project, _ = synced
    flag = tmp_path / "got"
    ready = tmp_path / "ready"
    child = (
        "import signal, sys, time, pathlib\n"
        f"def h(n, f):\n    pathlib.Path({str(flag)!r}).write_text(str(n)); sys.exit(42)\n"
        f"signal.signal({int(sig)}, h)\n"
        f"pathlib.Path({str(ready)!r}).write_text('1')\n"
        "time.sleep(60)\n"
    )
    proc = pypm.popen("run", "--no-sandbox", "--frozen", "python", "-c", child, cwd=project)
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert ready.exists(), proc.communicate()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert flag.read_text() == str(int(sig)), err
    assert proc.returncode == 42, err


def test_fast_path_imports_nothing_heavy(pypm, synced) -> None:
    project, server = synced
    server.clear_requests()
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    r = pypm("run", "--no-sandbox", "--frozen", "python", "-c", "pass", cwd=project, env=env)
    assert r.returncode == 0, r.stderr
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "pypm.run" in imported, "importtime output missing"
    heavy = sorted(m for m in imported if m.split(".")[0] in ("httpx", "resolvelib", "rich")
                   or m in HOT_PATH_FORBIDDEN
                   or m in ("pypm.sync", "pypm.locking", "pypm.cache", "pypm.project", "pypm.interpreter", "tomllib"))
    assert heavy == [], heavy
    assert server.requests == []


def test_fast_path_notices_a_changed_lock(pypm, synced, dists) -> None:
    project, server = synced
    w2 = dists.wheel("greet", "2.0", modules={"greet/__init__.py": "def main():\n    print('hi 2')\n"},
                     entry_points={"console_scripts": {"greet": "greet:main"}})
    server.add(w2)
    write_lock(project, server, [w2], main=["greet"])
    r = pypm("run", "--no-sandbox", "--frozen", "greet", cwd=project)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "hi 2"
    assert installed(project / ".venv")["greet"] == "2.0"


def test_default_run_goes_through_the_sandbox_with_the_venv(pypm, synced) -> None:
    """Without --no-sandbox, run hands the synced venv to pypm.sandboxing (isolation itself is
    tested in tests/sandbox/); where namespaces are unavailable the error must say how to proceed."""
    project, _ = synced
    r = pypm("run", "--frozen", "python", "-c", "import sys, greet; print(sys.prefix)", cwd=project)
    if r.returncode == 8:
        assert "--no-sandbox" in r.stderr or "hint:" in r.stderr, r.stderr
        pytest.skip(f"the sandbox cannot run here: {r.stderr.strip().splitlines()[0]}")
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == project / ".venv"


def test_sandbox_disabled_in_pyproject_runs_directly(pypm, synced) -> None:
    project, _ = synced
    text = (project / "pyproject.toml").read_text().replace("[tool.pypm]\n", "[tool.pypm]\nsandbox = { enabled = false }\n")
    (project / "pyproject.toml").write_text(text)
    r = pypm("run", "--frozen", "python", "-c", "import sys; print(sys.prefix)", cwd=project)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == project / ".venv"


def test_shell_runs_in_the_venv_environment(pypm, synced) -> None:
    project, _ = synced
    r = pypm("shell", "--no-sandbox", "--frozen", cwd=project, env={"SHELL": "/bin/sh"},
             input='echo "VENV=$VIRTUAL_ENV"; command -v greet; exit 3\n')
    assert r.returncode == 3, r.stderr
    assert f"VENV={project / '.venv'}" in r.stdout
    assert str(project / ".venv" / "bin" / "greet") in r.stdout


def _imports(stderr: str) -> set[str]:
    """Modules pypm imported once it started (the host's .pth files may import pathlib before;
    a Python command inherits PYTHONPROFILEIMPORTTIME, and its own list starts at `encodings`)."""
    names = [line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")]
    ours = names[names.index("pypm"):]
    return set(ours[:ours.index("encodings")] if "encodings" in ours else ours)


def test_the_entry_point_runs_a_synced_project_without_the_cli(pypm, synced) -> None:
    """`pypm run` goes from the entry point straight to the command: no argparse, no CLI, no
    subprocess/pathlib; the same exit status, -q and `--` handling as the full CLI."""
    project, _ = synced
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    for argv in (["run", "--no-sandbox", "--frozen", "greet"], ["-q", "run", "--frozen", "--no-sandbox", "--", "greet"],
                 ["run", "-q", "--no-sandbox", "--frozen", "greet"]):
        r = pypm(*argv, cwd=project, env=env)
        assert r.returncode == 0 and r.stdout == "hi from greet\n", (argv, r.stderr)
        imported = _imports(r.stderr)
        assert "pypm.run" in imported
        assert not imported & {"pypm.cli", "argparse", "subprocess", "pathlib", "shutil", "pypm.selection", "json",
                               "enum", "signal"}, argv
    r = pypm("run", "--no-sandbox", "--frozen", "python", "-c", "raise SystemExit(5)", cwd=project, env=env)
    assert r.returncode == 5 and "pypm.cli" not in _imports(r.stderr)


def test_anything_unusual_goes_to_the_full_cli(pypm, synced) -> None:
    project, _ = synced
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    # An abbreviation argparse accepts, a flag the fast path does not know, a selection flag.
    for argv in (["run", "--no-sand", "--frozen", "greet"], ["run", "--no-sandbox", "--frozen", "--no-dev", "greet"],
                 ["-v", "run", "--no-sandbox", "--frozen", "greet"]):
        r = pypm(*argv, cwd=project, env=env)
        assert r.returncode == 0 and r.stdout == "hi from greet\n", (argv, r.stderr)
        assert "pypm.cli" in _imports(r.stderr), argv
    r = pypm("run", "--no-sandbox", "--bogus", "greet", cwd=project)
    assert r.returncode == 2 and "--bogus" in r.stderr


def test_sandbox_flags_without_the_sandbox_are_said_to_do_nothing(pypm, synced) -> None:
    project, _ = synced
    r = pypm("run", "--no-sandbox", "--frozen", "--limit", "open-files=64", "--read-only-project", "greet", cwd=project)
    assert r.returncode == 0 and r.stdout == "hi from greet\n", r.stderr
    assert ("warning: --limit, --writable-project/--read-only-project have no effect: the command runs without the "
            "sandbox (--no-sandbox)") in r.stderr
    r = pypm("run", "--no-sandbox", "--frozen", "greet", cwd=project)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    r = pypm("-q", "run", "--no-sandbox", "--frozen", "--network", "host", "greet", cwd=project)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_a_members_fast_path_selection_is_venvstates_record_of_it() -> None:
    from pypm import run, venvstate
    from pypm.selection import Selection

    assert run.member_selection("core") == venvstate._selection_json(Selection.from_flags(packages=["core"]))


def test_fast_path_state_version_is_venvstates() -> None:
    from pypm import run, venvstate

    assert run._STATE_VERSION == venvstate.STATE_VERSION
    assert run._fast_parse(["run", "--", "-x"]) == (set(), ["-x"])
    assert run._fast_parse(["run", "python", "--no-sandbox"]) == (set(), ["python", "--no-sandbox"])
    assert run._fast_parse(["run", "--no-sandbox"]) is None  # no command: the CLI says so
    assert run._fast_parse(["sync"]) is None
    values: dict = {}
    assert run._fast_parse(["run", "--limit", "cpu=1", "--limit=memory=1G", "--network", "host", "--read-only-project",
                            "--env=A=1", "--bind", "/x", "--ro-bind", "/y:/z", "--profile=strict", "--", "cmd"],
                           values) == (set(), ["cmd"])
    assert values == {"limit": ["cpu=1", "memory=1G"], "network": "host", "writable_project": False, "env": ["A=1"],
                      "bind": ["/x"], "ro_bind": ["/y:/z"], "profile": "strict"}
    assert run._fast_parse(["run", "--limit", "cpu=1", "cmd"]) is None  # without `values`: the full CLI's
    for refused in (["--limit"], ["--limit", " "], ["--limit", "-x"], ["--network", "lan"], ["--lim", "cpu=1"],
                    ["--read-only-project", "--writable-project"]):
        assert run._fast_parse(["run", *refused, "cmd"], {}) is None, refused
    text = '{"a": [1, 2.5, "\\u00e9", null, true, {"b": false}], "c": "x"}\n'
    assert run._json_loads(text) == json.loads(text)  # type: ignore[attr-defined]
    for bad in ("", "{", "{} x", '{"a": NaN}', "[1,]", "{ garbage", '"abc'):
        with pytest.raises(ValueError):
            run._json_loads(bad)  # type: ignore[attr-defined]
    # The same in a fresh interpreter, where json (and its JSONDecodeError) is not imported yet.
    code = ("from pypm.run import _json_loads\nfor t in ('{ garbage', '\"abc', '[1,]', '{} x'):\n"
            "    try:\n        _json_loads(t)\n    except ValueError:\n        continue\n    raise SystemExit(t)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_pypm_script_runs_the_fast_path_without_re(pypm, synced) -> None:
    """bin/pypm (the installed `pypm` command) is main() without a generated launcher's `import re`."""
    project, _ = synced
    script = Path(__file__).resolve().parents[2] / "bin" / "pypm"
    assert script.read_text().startswith("#!python\n")  # installers put the environment's interpreter there
    r = subprocess.run([sys.executable, "-X", "importtime", str(script), "run", "--no-sandbox", "--frozen", "greet"],
                       cwd=project, env=pypm.env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "hi from greet\n", r.stderr
    imported = _imports(r.stderr)
    assert "pypm.run" in imported and not imported & {"re", "pypm.cli", "argparse"}
    r = subprocess.run([sys.executable, str(script), "--version"], env=pypm.env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("pypm "), r.stderr


def test_plugins_without_run_hooks_take_the_fast_path(pypm, synced) -> None:
    """The canary's plugins (auditwheel: post-sync; s3cache: fetcher, pre/post-sync) have no run
    hook: sync records that, and `pypm run` starts the command without loading pypm.plugins."""
    project, _ = synced
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("[tool.pypm]\n",
                                                       '[tool.pypm]\nplugins = ["auditwheel", "s3cache"]\n', 1))
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 0, r.stderr
    tool = json.loads((project / ".venv" / ".pypm" / "state.json").read_text())["tool"]
    assert tool["plugins"] is True and tool["plugin-run"]["run-hooks"] == []
    assert {Path(f[0]).name for f in tool["plugin-run"]["files"]} == {"auditwheel.py", "s3cache.py"}
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    for argv in (["run", "--no-sandbox", "--frozen", "greet"], ["run", "--frozen", "greet"]):
        r = pypm(*argv, cwd=project, env=env)
        assert r.returncode == 0 and r.stdout == "hi from greet\n", (argv, r.stderr)
        imported = _imports(r.stderr)
        assert "pypm.run" in imported, argv
        assert not {m for m in imported if m.startswith("pypm.plugins") or m == "pypm.cli"}, (argv, sorted(imported))
    # A state.json written before the record existed (no "plugin-run"): the full path, as before.
    state = json.loads((project / ".venv" / ".pypm" / "state.json").read_text())
    del state["tool"]["plugin-run"]
    (project / ".venv" / ".pypm" / "state.json").write_text(json.dumps(state))
    r = pypm("run", "--no-sandbox", "--frozen", "greet", cwd=project, env=env)
    assert r.returncode == 0 and r.stdout == "hi from greet\n", r.stderr
    assert "pypm.cli" in _imports(r.stderr)
