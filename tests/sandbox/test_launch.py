"""pypm.launch: a sandboxed `pypm run` replayed from its recorded plan by exec'ing the compiled helper,
only while every input of the plan is unchanged; otherwise (and on any failure) the ordinary path."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from pypm.launch import plan_path

from .conftest import slow_pdeathsig_shim

SHOW = "import json, os, socket; print(json.dumps({'env': dict(os.environ), 'if': [n for _, n in socket.if_nameindex()]}))"


def _run(pypm, project: Path, *cmd: str, flags: tuple[str, ...] = ("--frozen",), env: dict | None = None):
    """(launched?, CompletedProcess): whether the run was replayed by the launcher, seen from the
    modules pypm's own interpreter imported (the command's environment has no PYTHONPROFILEIMPORTTIME)."""
    r = pypm("run", *flags, "--", *cmd, cwd=project, env={"PYTHONPROFILEIMPORTTIME": "1", **(env or {})})
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "pypm.launch" in imported, r.stderr
    r.stderr = "\n".join(line for line in r.stderr.splitlines() if not line.startswith("import time:"))
    return "pypm.run" not in imported, r


def _recorded(pypm, project: Path, *cmd: str, env: dict | None = None) -> None:
    """Run until a plan is recorded (a run right after a sync may find state.json too fresh)."""
    for _ in range(3):
        _, r = _run(pypm, project, *cmd, env=env)
        assert r.returncode == 0, r.stderr
        if os.path.exists(plan_path(str(project), (env or {}).get("PYPM_CACHE_DIR", str(pypm.cache_dir)))):
            return
        time.sleep(0.15)
    raise AssertionError("no plan was recorded")


def _until_replayed(pypm, project: Path, code: str, out: str, flags: tuple[str, ...] = ("--frozen",),
                    env: dict | None = None) -> None:
    """Run `python -c code` (printing `out` each time) until the launcher replays it."""
    for _ in range(3):
        launched, r = _run(pypm, project, "python", "-c", code, flags=flags, env=env)
        assert r.returncode == 0 and r.stdout == out, r.stderr
        if launched:
            return
        time.sleep(0.15)
    raise AssertionError(f"never replayed: {flags} {env}")


def test_a_recorded_plan_is_replayed_with_the_same_result(pypm, app) -> None:
    project = app()
    _recorded(pypm, project, "python", "-c", "pass")
    launched, r = _run(pypm, project, "python", "-c", SHOW)
    assert launched and r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["if"] == ["lo"] and out["env"]["PYPM_SANDBOX"] == "1"
    assert out["env"]["VIRTUAL_ENV"] == str(project / ".venv")
    os.environ.pop("PYPM_NO_LAUNCHER", None)
    slow, r2 = _run(pypm, project, "python", "-c", SHOW, env={"PYPM_NO_LAUNCHER": "1"})
    assert not slow and json.loads(r2.stdout) == out  # the ordinary path gives the command the same world
    # exit codes and signals come through the launched helper as through pypm
    launched, r = _run(pypm, project, "python", "-c", "raise SystemExit(7)")
    assert launched and r.returncode == 7
    launched, r = _run(pypm, project, "python", "-c", "import os; os.kill(os.getpid(), 15)")
    assert launched and r.returncode == 128 + 15
    launched, r = _run(pypm, project, "no-such-command")
    assert r.returncode == 127 and "command not found" in r.stderr, r.stderr  # reported by pypm itself
    assert not [n for n in os.listdir("/tmp") if n.startswith("pypm-sandbox.")
                and os.stat(f"/tmp/{n}").st_uid == os.getuid() and not _alive(n)]


def test_a_py_file_runs_with_the_venvs_python_replayed_or_not(pypm, app) -> None:
    """`pypm run hi.py` is `python hi.py` (as uv): on the fast path that records the plan, in the
    launcher's replay of it, and on the full CLI's path."""
    project = app()
    (project / "hi.py").write_text("import sys; print(sys.executable, *sys.argv[1:])")
    _recorded(pypm, project, "hi.py", "a")
    launched, r = _run(pypm, project, "hi.py", "b")
    assert launched and r.returncode == 0 and r.stdout == f"{project / '.venv' / 'bin' / 'python'} b\n", r.stderr
    r = pypm("run", "--frozen", "--python", "3.11", "hi.py", "c", cwd=project)  # (not a fast-path flag: the CLI)
    assert r.returncode == 0 and r.stdout == f"{project / '.venv' / 'bin' / 'python'} c\n", r.stderr


def test_a_replayed_plan_keeps_the_projects_limits(pypm, app) -> None:
    project = app('\n[tool.pypm.sandbox]\nlimits = { open-files = 64, cpu = "10m" }\n')
    code = "import resource as r; print(r.getrlimit(r.RLIMIT_NOFILE), r.getrlimit(r.RLIMIT_CPU))"
    _recorded(pypm, project, "python", "-c", "pass")
    launched, r = _run(pypm, project, "python", "-c", code)
    assert launched and r.returncode == 0 and r.stdout == "(64, 64) (600, 600)\n", r.stderr


def test_a_plan_with_policy_flags_is_replayed_only_for_the_same_values(pypm, app) -> None:
    """--limit, --network and --read-only-project change only the policy the plan holds: a run
    with them is recorded and replayed, keyed by the flags with their values."""
    project = app()
    flags = ("--frozen", "--limit", "open-files=64", "--network=host", "--read-only-project")
    code = ("import os, resource, socket; print(resource.getrlimit(resource.RLIMIT_NOFILE)[1],"
            " len(socket.if_nameindex()) > 1, os.access('.', os.W_OK))")
    _until_replayed(pypm, project, code, "64 True False\n", flags)
    launched, r = _run(pypm, project, "python", "-c", code, flags=("--frozen", "--limit", "open-files=32",
                                                                    "--network=host", "--read-only-project"))
    assert not launched and r.returncode == 0 and r.stdout == "32 True False\n", r.stderr
    launched, r = _run(pypm, project, "python", "-c", code, flags=("--frozen",))
    assert not launched and r.returncode == 0, r.stderr
    assert r.stdout == f"{os.sysconf('SC_OPEN_MAX')} False True\n"


def test_an_env_file_run_is_replayed_only_while_the_file_is_unchanged(pypm, app) -> None:
    """--env-file's variables are in the policy the plan holds: the plan is keyed by the flag and
    checks the file's identity, so an edited file is read again (and a missing one is an error)."""
    project = app()
    (project / ".env").write_text("GREETING=hello\n")
    flags = ("--frozen", "--env-file", ".env")
    code = "import os; print(os.environ.get('GREETING'))"
    _until_replayed(pypm, project, code, "hello\n", flags)
    time.sleep(0.05)
    (project / ".env").write_text("GREETING=again\n")  # (same size: the identity still differs)
    launched, r = _run(pypm, project, "python", "-c", code, flags=flags)
    assert not launched and r.returncode == 0 and r.stdout == "again\n", r.stderr
    # PYPM_ENV_FILE likewise: its file is checked by a plan recorded without the flag
    env = {"PYPM_ENV_FILE": ".env"}
    _until_replayed(pypm, project, code, "again\n", env=env)
    time.sleep(0.05)
    (project / ".env").write_text("GREETING=third\n")
    launched, r = _run(pypm, project, "python", "-c", code, env=env)
    assert not launched and r.stdout == "third\n", r.stderr
    # without the flag, another plan; with the file gone, pypm's error (not the launcher's replay)
    launched, r = _run(pypm, project, "python", "-c", code)
    assert not launched and r.stdout == "None\n", r.stderr
    (project / ".env").unlink()
    launched, r = _run(pypm, project, "python", "-c", code, flags=flags)
    assert not launched and r.returncode == 2 and ".env" in r.stderr and "Traceback" not in r.stderr, r.stderr


def _alive(name: str) -> bool:
    try:
        os.kill(int(name.split(".")[1]), 0)
        return True
    except (ProcessLookupError, ValueError):
        return False


def test_a_changed_input_is_never_replayed(pypm, app) -> None:
    project = app('\n[tool.pypm.sandbox]\nenv = ["PASSED_IN"]\n')
    _recorded(pypm, project, "python", "-c", "pass")
    # an unrelated variable (a benchmark's padding, a shell's $_) does not matter
    launched, r = _run(pypm, project, "python", "-c", SHOW, env={"SOME_RANDOM_PADDING": "x" * 37})
    assert launched and "SOME_RANDOM_PADDING" not in json.loads(r.stdout)["env"]
    # an allowlisted or passed-through variable that changed (or appeared) does
    launched, r = _run(pypm, project, "python", "-c", SHOW, env={"PASSED_IN": "yes", "TERM": "vt100-test"})
    out = json.loads(r.stdout)["env"]
    assert not launched and out["PASSED_IN"] == "yes" and out["TERM"] == "vt100-test"
    # a changed pyproject.toml (here: the host's network) takes effect at once
    text = (project / "pyproject.toml").read_text().replace('env = ["PASSED_IN"]', 'network = "host"')
    (project / "pyproject.toml").write_text(text)
    pypm("sync", "--frozen", cwd=project, check=True)
    launched, r = _run(pypm, project, "python", "-c", SHOW)
    assert not launched and json.loads(r.stdout)["if"] != ["lo"], r.stdout
    # a re-sync (state.json rewritten) is not replayed either: the plan records state.json's identity
    os.utime(project / ".venv" / ".pypm" / "state.json")
    launched, r = _run(pypm, project, "python", "-c", "pass")
    assert not launched and r.returncode == 0


def test_a_failure_in_the_launched_helper_is_reported_by_pypm(pypm, app, tmp_path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    project = app(f'\n[tool.pypm.sandbox]\nro-bind = ["{shared}"]\n')
    _recorded(pypm, project, "python", "-c", "pass")
    shared.rmdir()  # the bind source is gone: the helper cannot set the sandbox up
    launched, r = _run(pypm, project, "python", "-c", "print('must not run')")
    want = pypm("run", "--frozen", "--", "python", "-c", "print('must not run')", cwd=project,
                env={"PYPM_NO_LAUNCHER": "1"})
    assert r.returncode == want.returncode == 8, r.stderr
    assert r.stdout == "" and "must not run" not in r.stdout
    assert str(shared) in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == want.stderr.strip()


def test_a_plan_is_only_replayed_for_the_same_flags_and_directory(pypm, app) -> None:
    project = app()
    (project / "sub").mkdir()
    _recorded(pypm, project, "python", "-c", "pass")
    launched, r = _run(pypm, project, "python", "-c", "pass", flags=("--frozen", "-q"))  # recorded: --frozen
    assert not launched and r.returncode == 0
    launched, r = _run(pypm, project / "sub", "python", "-c", "import os; print(os.getcwd())")
    assert r.stdout.strip() == str(project / "sub")
    # the plan lives in the user's cache, which the sandbox does not show: a command cannot
    # change what its next run replays outside the sandbox
    plan = plan_path(str(project), str(pypm.cache_dir))
    assert oct(os.stat(plan).st_mode & 0o777) == "0o600"
    _, r = _run(pypm, project, "python", "-c", f"open({plan!r}, 'ab')")
    assert r.returncode == 1 and "No such file or directory" in r.stderr, r.stderr
    # ... and a plan planted where pypm would not write it, or writable by others, is ignored
    os.chmod(plan, 0o666)
    launched, r = _run(pypm, project, "python", "-c", "pass")
    assert not launched and r.returncode == 0
    # ... as is one in a directory others can write (they could swap an old plan back in)
    os.chmod(os.path.dirname(plan), 0o777)
    launched, r = _run(pypm, project, "python", "-c", "pass")
    assert not launched and r.returncode == 0
    os.chmod(os.path.dirname(plan), 0o700)
    assert oct(os.stat(plan).st_mode & 0o777) == "0o600"  # recorded again, properly


def test_an_input_behind_a_symlink_is_compared_by_its_target(pypm, app, tmp_path) -> None:
    # pyproject.toml as a symlink to a file kept elsewhere: editing that file must take effect
    # (the link's own lstat does not change), here by taking the host's network away again
    project = app('\n[tool.pypm.sandbox]\nnetwork = "host"\n')
    real = tmp_path / "shared-pyproject.toml"
    os.rename(project / "pyproject.toml", real)
    os.symlink(real, project / "pyproject.toml")
    _recorded(pypm, project, "python", "-c", "pass")
    launched, r = _run(pypm, project, "python", "-c", SHOW)
    assert launched and json.loads(r.stdout)["if"] != ["lo"], r.stderr
    real.write_text(real.read_text().replace('network = "host"', ""))
    launched, r = _run(pypm, project, "python", "-c", SHOW)
    assert not launched and json.loads(r.stdout)["if"] == ["lo"], (r.stdout, r.stderr)


def test_a_bind_source_behind_a_symlink_is_resolved_again(pypm, app, tmp_path) -> None:
    # [tool.pypm.sandbox] ro-bind = ["../data:/data"] with ../data -> a (a link outside the
    # project): pointing it at b must bind b (the plan holds the resolved source, a, which the
    # policy no longer names)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "which").write_text(name)
    project = app('\n[tool.pypm.sandbox]\nro-bind = ["../data:/data"]\n')
    os.symlink(tmp_path / "a", tmp_path / "data")
    _recorded(pypm, project, "python", "-c", "pass")
    launched, r = _run(pypm, project, "cat", "/data/which")
    assert launched and r.stdout == "a", r.stderr
    os.unlink(tmp_path / "data")
    os.symlink(tmp_path / "b", tmp_path / "data")
    launched, r = _run(pypm, project, "cat", "/data/which")
    assert not launched and r.stdout == "b", (r.stdout, r.stderr)


FDS = "import os; print(sorted(int(n) for n in os.listdir('/proc/self/fd')))"
READY = "import os, sys, time; print('ready', flush=True); time.sleep(60)"


def _leftovers(pid: int, marker: str) -> list[str]:
    """Processes whose command line holds `marker`, and temporary roots named after `pid`."""
    procs = []
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    procs.append(d)
        except (OSError, ValueError):
            continue
    return procs + [n for n in os.listdir("/tmp") if n.startswith(f"pypm-sandbox.{pid}.")]


def _launched_popen(pypm, project: Path, marker: str):
    p = pypm.popen("run", "--frozen", "--", "python", "-c", f"{READY} # {marker}", cwd=project)
    assert p.stdout.readline() == "ready\n"
    assert "sandbox-helper" in os.readlink(f"/proc/{p.pid}/exe")  # the launcher exec'd the helper
    return p


def test_a_launched_run_leaks_no_fd_and_ends_cleanly_on_signals(pypm, app) -> None:
    project = app()
    _recorded(pypm, project, "python", "-c", "pass")
    launched, r = _run(pypm, project, "python", "-c", FDS)
    assert launched and r.stdout.strip() == "[0, 1, 2, 3]", r.stdout  # 3: listdir's own
    # kill -TERM of the top process is passed on; the command's status comes back
    marker = f"term-{os.getpid()}-{time.time_ns()}"
    p = _launched_popen(pypm, project, marker)
    p.send_signal(15)
    assert p.wait(timeout=20) == 128 + 15
    assert not _leftovers(p.pid, marker)
    # kill -9 of it leaves no process and no temporary root
    marker = f"kill-{os.getpid()}-{time.time_ns()}"
    p = _launched_popen(pypm, project, marker)
    p.kill()
    p.wait(timeout=20)
    deadline = time.time() + 10
    while _leftovers(p.pid, marker) and time.time() < deadline:
        time.sleep(0.05)
    assert not _leftovers(p.pid, marker)


def test_ctrl_c_on_a_terminal_stops_a_launched_command(pypm, app) -> None:
    import sys

    import pexpect

    project = app()
    _recorded(pypm, project, "python", "-c", "pass")
    marker = f"intr-{os.getpid()}-{time.time_ns()}"
    term = pexpect.spawn(sys.executable, ["-m", "pypm", "run", "--frozen", "--", "python", "-c",
                                          f"{READY} # {marker}"],
                         cwd=str(project), env=pypm.env, timeout=30, encoding="utf-8")
    try:
        term.expect("ready")
        assert "sandbox-helper" in os.readlink(f"/proc/{term.pid}/exe")
        term.sendintr()
        term.expect(pexpect.EOF)
    finally:
        term.close(force=True)
    assert term.signalstatus is None and term.exitstatus == 130, (term.exitstatus, term.signalstatus)
    assert not _leftovers(term.pid, marker)


CLOSED = r"""
import os
with open("runs", "a") as f:
    f.write("run\n")
try:
    os.write(1, b"to stdout")
    w = "stdout open"
except OSError:
    w = "stdout closed"
os.write(2, f"{w} {sorted(int(n) for n in os.listdir('/proc/self/fd'))}".encode())
"""


@pytest.mark.parametrize("launcher", [True, False, "python-runner"])
def test_closed_standard_fds_stay_closed_and_the_command_runs_once(pypm, app, launcher) -> None:
    # pypm started with stdin and stdout closed: its status pipe takes fds 0 and 1, which the
    # command must not inherit (its output would be taken for a setup failure: the launcher
    # then ran the command a second time, the ordinary path reported an error after it ran)
    import subprocess
    import sys

    project = app()
    _recorded(pypm, project, "python", "-c", "pass")
    env = {**pypm.env, **({} if launcher is True else {"PYPM_NO_LAUNCHER": "1"})}
    if launcher == "python-runner":
        env["PYPM_SANDBOX_RUNNER"] = "python"
    r = subprocess.run(["sh", "-c", 'exec "$@" <&- >&-', "sh", sys.executable, "-m", "pypm", "run", "--frozen", "--",
                        "python", "-c", CLOSED], cwd=project, env=env, stderr=subprocess.PIPE, text=True, timeout=60)
    assert (project / "runs").read_text() == "run\n", r.stderr
    assert r.returncode == 0 and r.stderr == "stdout closed [0, 2]", r.stderr  # 0: listdir's own


PLANT = r"""
import os, sys
cache, marker = sys.argv[1], sys.argv[2]
done = []
for sub in ("sandbox-helper", "run-plans", "seccomp"):
    d = os.path.join(cache, sub)
    for n in os.listdir(d) if os.path.isdir(d) else []:
        try:
            with open(os.path.join(d, n), "w") as f:
                f.write(f"#!/bin/sh\necho escaped > {marker}\n")
            done.append(sub)
        except OSError as e:
            pass
    try:
        with open(os.path.join(d, "planted"), "w") as f:
            f.write(f"#!/bin/sh\necho escaped > {marker}\n")
        os.chmod(os.path.join(d, "planted"), 0o700)
        done.append(sub + " (new file)")
        for n in [n for n in os.listdir(d) if n != "planted"]:
            os.rename(os.path.join(d, "planted"), os.path.join(d, n))  # over the helper itself
            done.append(sub + " (replaced)")
            break
    except OSError:
        pass
print(sorted(set(done)))
"""


def test_a_cache_inside_the_project_is_read_only_in_the_sandbox(pypm, app, tmp_path) -> None:
    # PYPM_CACHE_DIR inside the (writable) project, as CI caches often are: the sandboxed command
    # must not be able to replace the compiled helper, a plan or a seccomp program, which the
    # next `pypm run` executes or loads outside the sandbox
    project = app()
    cache = project / ".pypm-cache"
    env = {"PYPM_CACHE_DIR": str(cache)}
    _recorded(pypm, project, "python", "-c", "pass", env=env)
    assert os.listdir(cache / "sandbox-helper") and os.listdir(cache / "run-plans")
    marker = tmp_path / "escaped"
    _, r = _run(pypm, project, "python", "-c", PLANT, str(cache), str(marker), env=env)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)
    _run(pypm, project, "python", "-c", "pass", env=env)
    assert not marker.exists(), "the next run executed what the sandboxed command planted"


@pytest.mark.parametrize("via", ["pth", "bind"])
def test_a_symlink_planted_in_the_project_does_not_widen_the_next_run(pypm, app, tmp_path, via) -> None:
    # A path the policy binds from inside the writable project (an editable path dependency's
    # source dir listed in a .pth file, or a [tool.pypm.sandbox] ro-bind of a project dir):
    # the sandboxed command replaces it with a symlink to a host directory; the next run must
    # not bind that directory in (it resolved the symlink on the host and bound the target)
    secret = tmp_path / "host-secret"
    secret.mkdir()
    (secret / "key").write_text("private key\n")
    project = app('\n[tool.pypm.sandbox]\nro-bind = ["libs/src:/data"]\n' if via == "bind" else "")
    (project / "libs" / "src").mkdir(parents=True)
    (project / "libs" / "src" / "mod.py").write_text("")
    if via == "pth":
        site = next((project / ".venv" / "lib").glob("python*/site-packages"))
        (site / "_editable_libs.pth").write_text(str(project / "libs" / "src") + "\n")
    plant = f"import os, shutil; shutil.rmtree('libs/src'); os.symlink({str(secret)!r}, 'libs/src')"
    _, r = _run(pypm, project, "python", "-c", plant, env={"PYPM_NO_LAUNCHER": "1"})
    assert r.returncode == 0 and os.path.islink(project / "libs" / "src"), r.stderr
    look = f"import os; print(os.path.exists({str(secret / 'key')!r}) or os.path.exists('/data/key'))"
    _, r = _run(pypm, project, "python", "-c", look, env={"PYPM_NO_LAUNCHER": "1"})
    assert r.stdout.strip() == "False" or r.returncode == 8, (r.stdout, r.stderr)


def test_a_sandboxed_command_cannot_turn_the_sandbox_off_for_the_next_run(pypm, app) -> None:
    # [tool.pypm.sandbox] lives in the project's pyproject.toml: read-only inside (as .git is)
    project = app()
    edit = "open('pyproject.toml', 'a').write('\\n[tool.pypm.sandbox]\\nenabled = false\\n')"
    _, r = _run(pypm, project, "python", "-c", edit, env={"PYPM_NO_LAUNCHER": "1"})
    assert r.returncode == 1 and "Read-only file system" in r.stderr, r.stderr
    _, r = _run(pypm, project, "python", "-c", "import os; os.rename('pyproject.toml', 'x.toml')",
                env={"PYPM_NO_LAUNCHER": "1"})
    assert r.returncode == 1 and "Device or resource busy" in r.stderr, r.stderr
    # nor choose what the next `pypm sync` installs (outside the sandbox)
    assert (project / "pypm.lock").is_file()
    _, r = _run(pypm, project, "python", "-c", "open('pypm.lock', 'a').write('# planted')",
                env={"PYPM_NO_LAUNCHER": "1"})
    assert r.returncode == 1 and "Read-only file system" in r.stderr, r.stderr
    _, r = _run(pypm, project, "python", "-c", "open('other.txt', 'w').write('ok')", env={"PYPM_NO_LAUNCHER": "1"})
    assert r.returncode == 0 and (project / "other.txt").read_text() == "ok", r.stderr  # the rest stays writable
    _, r = _run(pypm, project, "python", "-c", "import os; print(os.environ.get('PYPM_SANDBOX'))",
                env={"PYPM_NO_LAUNCHER": "1"})
    assert r.stdout.strip() == "1", (r.stdout, r.stderr)  # still sandboxed


def test_a_launched_command_inherits_the_callers_signal_mask(pypm, app) -> None:
    # the ordinary path gives the command pypm's own signal mask; the plan recorded an empty one
    import signal
    import subprocess
    import sys

    project = app()
    _recorded(pypm, project, "python", "-c", "pass")
    show = "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('SigBlk')][0])"
    out = {}
    for name, extra in (("launched", {}), ("ordinary", {"PYPM_NO_LAUNCHER": "1"})):
        r = subprocess.run([sys.executable, "-m", "pypm", "run", "--frozen", "--", "python", "-c", show], cwd=project,
                           env={**pypm.env, **extra}, capture_output=True, text=True, timeout=60,
                           preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1}))
        out[name] = r.stdout.strip()
    assert out["launched"] == out["ordinary"] == format(1 << (signal.SIGUSR1 - 1), "016x"), out


PLANT_VENV = r"""
import json, os, shutil, sys
marker = sys.argv[1]
evil = os.path.abspath("evil-venv")
os.makedirs(evil + "/.pypm"); os.makedirs(evil + "/bin")
state = json.load(open(".venv/.pypm/state.json"))
state["tool"]["sandbox-enabled"] = False
json.dump(state, open(evil + "/.pypm/state.json", "w"))
with open(evil + "/bin/python", "w") as f:
    f.write(f"#!/bin/sh\necho escaped > {marker}\n")
os.chmod(evil + "/bin/python", 0o755)
os.unlink(".venv"); os.symlink(evil, ".venv")
"""


def test_a_venv_symlink_in_the_project_cannot_be_pointed_at_an_unsandboxed_venv(pypm, app, tmp_path) -> None:
    # with .venv a symlink inside the writable project, a sandboxed command could point it at a
    # venv whose state.json says sandbox-enabled = false (the next run then ran its python
    # outside): such a project is not run sandboxed with a writable project at all
    project = app()
    os.rename(project / ".venv", tmp_path / "venv-elsewhere")
    os.symlink(tmp_path / "venv-elsewhere", project / ".venv")
    marker = tmp_path / "escaped"
    _, r = _run(pypm, project, "python", "-c", PLANT_VENV, str(marker), env={"PYPM_NO_LAUNCHER": "1"})
    assert r.returncode == 8 and "is a symlink inside the writable project" in r.stderr and "hint:" in r.stderr
    assert os.path.realpath(project / ".venv") == str(tmp_path / "venv-elsewhere")
    r = pypm("run", "--frozen", "--read-only-project", "--", "python", "-c", PLANT_VENV, str(marker), cwd=project)
    assert r.returncode == 1 and "Read-only file system" in r.stderr, r.stderr  # nothing planted
    _run(pypm, project, "python", "-c", "pass", env={"PYPM_NO_LAUNCHER": "1"})
    assert not marker.exists(), "the next run ran the planted venv's python outside the sandbox"


def test_the_launched_helper_killed_during_setup_leaves_no_command_running(pypm, app, tmp_path) -> None:
    # kill -9 of the top process (the launched helper) before its init has set PR_SET_PDEATHSIG:
    # init must notice (launched, the status pipe check cannot: init holds its read end itself)
    shim = slow_pdeathsig_shim(tmp_path)
    project = app()
    _recorded(pypm, project, "python", "-c", "pass")
    marker = f"orphan-{os.getpid()}-{time.time_ns()}"
    p = pypm.popen("run", "--frozen", "--", "python", "-c", f"import time; time.sleep(30) # {marker}", cwd=project,
                   env={"LD_PRELOAD": str(shim)})
    deadline = time.time() + 10
    while "sandbox-helper" not in os.readlink(f"/proc/{p.pid}/exe") and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(0.1)  # the helper has cloned its init, which is waiting in the shim
    p.kill()
    p.wait(timeout=10)
    time.sleep(1.0)  # the shim's wait is over: an init that did not notice has started the command
    left = _leftovers(p.pid, marker)
    for pid in (n for n in left if n.isdigit()):
        os.kill(int(pid), 9)
    assert not [n for n in left if n.isdigit()], left  # no process: init saw the lifeline hang up
    # the temporary root it had made is removed by the next launched run (as by an ordinary one)
    launched, r = _run(pypm, project, "python", "-c", "import time; time.sleep(0.3)")
    assert launched and r.returncode == 0 and not _leftovers(p.pid, marker)


def test_a_changed_path_dependency_is_never_replayed(pypm, tmp_path) -> None:
    """A path dependency's pyproject.toml is an input of the plan: the library's new version (or
    dependencies) relocks and re-syncs, as the ordinary path's state check does."""
    import sys

    from tests.e2e.test_path_deps import write_lib

    write_lib(tmp_path / "lib", "lib")
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "1.0"\nrequires-python = ">=3.9"\ndependencies = ["lib"]\n\n'
        f'[tool.pypm]\npython = "{sys.executable}"\n\n[tool.pypm.sources]\nlib = {{ path = "../lib", editable = true }}\n')
    pypm("sync", cwd=project, check=True)
    probe = "import importlib.metadata as m, lib; print(m.version('lib'), lib.VALUE)"
    for _ in range(3):  # until a plan is recorded (for these flags: none)
        _run(pypm, project, "python", "-c", "pass", flags=())
        if os.path.exists(plan_path(str(project), str(pypm.cache_dir))):
            break
        time.sleep(0.15)
    launched, r = _run(pypm, project, "python", "-c", probe, flags=())
    assert launched and r.stdout == "0.3.0 one\n", r.stderr
    write_lib(tmp_path / "lib", "lib", version="0.4.0", value="two")
    launched, r = _run(pypm, project, "python", "-c", probe, flags=())
    assert not launched and r.stdout == "0.4.0 two\n", r.stderr


# ---------------------------------------------------------------- PEP 723 scripts' plans

SCRIPT_BODY = ("import json, os, socket, sys\n"
               "import lib\n"
               "def seen(p):\n"
               "    try:\n"
               "        open(p).read()\n"
               "        return 'visible'\n"
               "    except OSError:\n"
               "        return 'hidden'\n"
               "print(json.dumps({'lib': lib.__version__, 'exe': sys.executable, 'args': sys.argv[1:], 'cwd': os.getcwd(),"
               " 'if': [n for _, n in socket.if_nameindex()], 'sandboxed': os.environ.get('PYPM_SANDBOX'),"
               " 'secret': [seen(a) for a in sys.argv[1:] if a.startswith('/')],"
               " 'sibling': seen(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'sibling.txt'))}))\n")


@pytest.fixture
def script_world(dists, index_server, tmp_path, pypm):
    """(directory to run in, script path in it, the script's text): a script whose block names a
    package of a real index on 127.0.0.1."""
    dists.wheel("lib", "1.0")
    dists.wheel("lib", "2.0")
    server = index_server()
    here = tmp_path / "here"
    here.mkdir()
    text = (f'# /// script\n# dependencies = ["lib<2"]\n#\n# [tool.pypm]\n# index-url = "{server.url}"\n# ///\n'
            + SCRIPT_BODY)
    (here / "tool.py").write_text(text)
    (here / "sibling.txt").write_text("next to the script")
    return here, here / "tool.py", text


def _script_run(pypm, cwd: Path, script: str, *args: str, env: dict | None = None):
    r = pypm("run", script, *args, cwd=cwd, env={"PYTHONPROFILEIMPORTTIME": "1", **(env or {})})
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "pypm.launch" in imported, r.stderr
    r.stderr = "\n".join(line for line in r.stderr.splitlines() if not line.startswith("import time:"))
    assert r.returncode == 0, r.stderr
    return "pypm.run" not in imported, json.loads(r.stdout.splitlines()[-1])


def _script_recorded(pypm, cwd: Path, script: Path, arg: str = "x") -> None:
    from pypm.launch import script_plan_path

    for _ in range(4):
        _script_run(pypm, cwd, str(script) if script.parent != cwd else script.name, arg)
        if os.path.exists(script_plan_path(str(script.resolve()), str(pypm.cache_dir))):
            return
        time.sleep(0.15)
    raise AssertionError("no plan was recorded for the script")


def test_a_scripts_recorded_plan_is_replayed_with_the_same_result(pypm, script_world) -> None:
    here, script, _ = script_world
    secret = pypm.home / "secret.txt"  # (the host's home: never in the sandbox)
    secret.write_text("s3cr3t")
    _script_recorded(pypm, here, script)
    launched, out = _script_run(pypm, here, "tool.py", "a", "b c", str(secret))
    assert launched, out
    assert out["lib"] == "1.0" and out["args"] == ["a", "b c", str(secret)] and out["cwd"] == str(here.resolve())
    assert out["if"] == ["lo"] and out["sandboxed"] == "1" and out["sibling"] == "visible" and out["secret"] == ["hidden"]
    assert out["exe"].startswith(str(pypm.cache_dir / "tools"))
    # the ordinary path gives the script the same world
    slow, out2 = _script_run(pypm, here, "tool.py", "a", "b c", str(secret), env={"PYPM_NO_LAUNCHER": "1"})
    assert not slow and out2 == out
    r = pypm("run", "--no-sandbox", "tool.py", str(secret), cwd=here)  # (the check can see it where it is there)
    assert json.loads(r.stdout.splitlines()[-1])["secret"] == ["visible"], r.stderr
    # The same script from another directory: a plan of that directory's own (only the script is
    # shown there, read-only, not its directory)
    there = here.parent / "there"
    there.mkdir()
    _script_recorded(pypm, there, script)
    launched, out = _script_run(pypm, there, str(script), "z")
    assert launched and out["cwd"] == str(there.resolve()) and out["sibling"] == "hidden" and out["args"] == ["z"]
    # ... and back here, that plan is not this directory's: the run is not replayed
    launched, out = _script_run(pypm, here, "tool.py")
    assert not launched and out["sibling"] == "visible"


def test_a_scripts_plan_is_never_replayed_after_its_inputs_change(pypm, script_world) -> None:
    here, script, text = script_world
    _script_recorded(pypm, here, script)
    assert _script_run(pypm, here, "tool.py")[0]
    # the script's own bytes: a changed body runs as it now is
    script.write_text(text + "print(json.dumps({'changed': True}))\n")
    launched, out = _script_run(pypm, here, "tool.py")
    assert not launched and out == {"changed": True}
    # a changed block: its own environment (lib 2.0), never the plan of the old one
    _script_recorded(pypm, here, script)
    script.write_text(text.replace('"lib<2"', '"lib>=2"'))
    launched, out = _script_run(pypm, here, "tool.py")
    assert not launched and out["lib"] == "2.0"
    # the environment re-synced (its state rewritten) or its lock touched
    _script_recorded(pypm, here, script)
    env_root = Path(out["exe"]).parents[2]
    for touched in (env_root / ".venv" / ".pypm" / "state.json", env_root / "pypm.lock"):
        os.utime(touched)
        launched, out = _script_run(pypm, here, "tool.py")
        assert not launched and out["lib"] == "2.0"
        _script_recorded(pypm, here, script)
    # a policy flag not in the plan
    r = pypm("run", "--network", "host", "tool.py", cwd=here)
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[-1])["if"] != ["lo"], r.stderr


# --------------------------------------------------------------------------- `pypm x TOOL`

TOOL_MAIN = ("import json, os, socket, sys\n"
             "def main():\n"
             "    secret = []\n"
             "    for a in sys.argv[1:]:\n"
             "        try:\n"
             "            open(a).read() if a.startswith('/') else None\n"
             "            secret.append('visible') if a.startswith('/') else None\n"
             "        except OSError:\n"
             "            secret.append('hidden')\n"
             "    print(json.dumps({'version': '{version}', 'exe': sys.executable, 'args': sys.argv[1:], "
             "'cwd': os.getcwd(), 'if': [n for _, n in socket.if_nameindex()], "
             "'sandboxed': os.environ.get('PYPM_SANDBOX'), 'secret': secret}))\n"
             "    sys.exit(int(sys.argv[2]) if sys.argv[1:2] == ['exit'] else 0)\n")


@pytest.fixture
def tool_world(dists, index_server, tmp_path, pypm):
    """(directory to run in, the index, a function adding a release): `probe-tool`, whose command
    is `probe-tool`, on a real index on 127.0.0.1 that is pypm's default index (PYPM_INDEX_URL):
    `pypm x probe-tool` names no index flag, as the fast path and the launcher want."""
    def release(version: str) -> Path:
        return dists.wheel("probe-tool", version,
                           modules={"probe_tool/__init__.py": TOOL_MAIN.replace("{version}", version)},
                           entry_points={"console_scripts": {"probe-tool": "probe_tool:main"}})

    release("1.0")
    server = index_server()
    here = tmp_path / "here"
    here.mkdir()
    return here, server, release


def _x(pypm, server, cwd: Path, *args: str, env: dict | None = None, ok: bool = True):
    """(how it ran: "launched", "fast" or "cli", the tool's JSON, the CompletedProcess)."""
    r = pypm("x", *args, cwd=cwd, env={"PYTHONPROFILEIMPORTTIME": "1", "PYPM_INDEX_URL": server.url, **(env or {})})
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "pypm.launch" in imported, r.stderr
    r.stderr = "\n".join(line for line in r.stderr.splitlines() if not line.startswith("import time:"))
    how = "cli" if "pypm.cli" in imported else "fast" if "pypm.toolrun" in imported else "launched"
    if ok:
        assert r.returncode == 0, r.stderr
    return how, (json.loads(r.stdout.splitlines()[-1]) if r.stdout.strip() else None), r


def _x_recorded(pypm, server, cwd: Path, tool: str = "probe-tool", *flags: str) -> None:
    from pypm.launch import tool_key, tool_plan_path

    for _ in range(4):
        _x(pypm, server, cwd, *flags, tool)
        if os.path.exists(tool_plan_path(str(cwd.resolve()), tool_key(flags, tool), str(pypm.cache_dir))):
            return
        time.sleep(0.15)
    raise AssertionError(f"no plan was recorded for `pypm x {tool}`")


def test_a_tools_recorded_plan_is_replayed_with_the_same_result(pypm, tool_world) -> None:
    here, server, _ = tool_world
    secret = pypm.home / "secret.txt"  # (the host's home: never in the sandbox)
    secret.write_text("s3cr3t")
    how, out, r = _x(pypm, server, here, "probe-tool", "first")
    assert how == "cli" and "Resolved 1 packages" in r.stderr  # made: the full CLI
    _x_recorded(pypm, server, here)
    how, out, _ = _x(pypm, server, here, "probe-tool", "a", "b c", str(secret))
    assert how == "launched"
    assert out["version"] == "1.0" and out["args"] == ["a", "b c", str(secret)] and out["cwd"] == str(here.resolve())
    assert out["if"] == ["lo"] and out["sandboxed"] == "1" and out["secret"] == ["hidden"]
    assert out["exe"].startswith(str(pypm.cache_dir / "tools"))
    # the fast path without the launcher, and the full CLI (-v is not a fast-path flag), give the
    # tool the same world
    how, slow, _ = _x(pypm, server, here, "probe-tool", "a", "b c", str(secret), env={"PYPM_NO_LAUNCHER": "1"})
    assert how == "fast" and slow == out
    r = pypm("-v", "x", "probe-tool", "a", "b c", str(secret), cwd=here, env={"PYPM_INDEX_URL": server.url})
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[-1]) == out, r.stderr
    how, host, _ = _x(pypm, server, here, "--no-sandbox", "probe-tool", str(secret))  # (where it is there, it is seen)
    assert how == "fast" and host["secret"] == ["visible"] and host["sandboxed"] is None
    # the exit status comes through
    how, _, r = _x(pypm, server, here, "probe-tool", "exit", "7", ok=False)
    assert how == "launched" and r.returncode == 7
    # another directory: a plan of its own; this one's stays
    there = here.parent / "there"
    there.mkdir()
    assert _x(pypm, server, there, "probe-tool")[0] == "fast"
    _x_recorded(pypm, server, there)
    how, out2, _ = _x(pypm, server, there, "probe-tool")
    assert how == "launched" and out2["cwd"] == str(there.resolve())
    assert _x(pypm, server, here, "probe-tool")[0] == "launched"
    # a replayed run is a use of the environment: `pypm cache prune` keeps it
    env_root = Path(out["exe"]).parents[2]
    old = time.time() - 40 * 86400
    os.utime(env_root, (old, old))
    assert _x(pypm, server, here, "probe-tool")[0] == "launched"
    assert pypm("cache", "prune", cwd=here).returncode == 0
    assert env_root.is_dir()


def test_a_tools_plan_is_never_replayed_after_its_inputs_change(pypm, tool_world) -> None:
    here, server, release = tool_world
    _x(pypm, server, here, "probe-tool")
    _x_recorded(pypm, server, here)
    how, out, _ = _x(pypm, server, here, "probe-tool")
    assert how == "launched"
    env_root = Path(out["exe"]).parents[2]
    command = env_root / ".venv" / "bin" / "probe-tool"
    # the environment re-synced (its state rewritten), its lock or the tool's command changed
    for touched in (env_root / ".venv" / ".pypm" / "state.json", env_root / "pypm.lock", command):
        os.utime(touched)
        assert _x(pypm, server, here, "probe-tool")[0] == "fast"
        _x_recorded(pypm, server, here)
        assert _x(pypm, server, here, "probe-tool")[0] == "launched"
    # a policy flag not in the plan: the ordinary path, with that policy
    how, out, _ = _x(pypm, server, here, "--network", "host", "probe-tool")
    assert how == "fast" and out["if"] != ["lo"]
    # pypm's own settings changed (any PYPM_* variable)
    assert _x(pypm, server, here, "probe-tool", env={"PYPM_HTTP2": "1"})[0] == "fast"
    # the tool's command removed: never replayed; the CLI says what the environment provides
    saved = command.read_bytes()
    command.unlink()
    how, _, r = _x(pypm, server, here, "probe-tool", ok=False)
    assert how == "cli" and r.returncode == 2 and "probe-tool is not a command of probe-tool" in r.stderr, r.stderr
    command.write_bytes(saved)
    command.chmod(0o755)
    _x_recorded(pypm, server, here)
    # --upgrade moves the environment (the CLI: never the fast path or a plan), and the next run
    # is not replayed from the plan of the old one
    server.add(release("2.0"))
    how, out, _ = _x(pypm, server, here, "--upgrade", "probe-tool")
    assert how == "cli" and out["version"] == "2.0"
    how, out, _ = _x(pypm, server, here, "probe-tool")
    assert how == "fast" and out["version"] == "2.0"
    # NAME@VERSION is an environment (and a plan) of its own
    how, out, _ = _x(pypm, server, here, "probe-tool@1.0")
    assert how == "cli" and out["version"] == "1.0"
    _x_recorded(pypm, server, here, "probe-tool@1.0")
    how, out, _ = _x(pypm, server, here, "probe-tool@1.0")
    assert how == "launched" and out["version"] == "1.0"
    assert _x(pypm, server, here, "probe-tool")[1]["version"] == "2.0"


def test_from_and_with_runs_have_plans_of_their_own(pypm, tool_world, dists) -> None:
    """`pypm x --from REQ [--with REQ] CMD` is replayed too, from a plan keyed by those flags: each
    environment a directory runs a command from keeps its plan, and none replays another's."""
    here, server, _ = tool_world
    server.add(dists.wheel("helper", "1.0"))
    runs = {"plain": ["probe-tool"], "from": ["--from", "probe-tool", "probe-tool"],
            "with": ["--from=probe-tool==1.0", "--with", "helper", "probe-tool"]}
    exes = {}
    for label, argv in runs.items():
        how, out, _ = _x(pypm, server, here, *argv)
        assert how in ("cli", "fast"), label  # made by the CLI, or (plain, from) the same environment
        _x_recorded(pypm, server, here, argv[-1], *argv[:-1])
        exes[label] = out["exe"]
    assert exes["plain"] == exes["from"] != exes["with"]  # the same requirement list, the same environment
    for _ in range(2):  # each still replayed after the others ran
        for label, argv in runs.items():
            how, out, _ = _x(pypm, server, here, *argv, "a")
            assert how == "launched" and out["exe"] == exes[label] and out["args"] == ["a"], label
    # a --with the plan was not made for: not replayed (the CLI makes that environment)
    how, out, _ = _x(pypm, server, here, "--from=probe-tool==1.0", "--with", "helper==1.0", "probe-tool")
    assert how == "cli" and out["exe"] != exes["with"]


def test_tool_key_names_the_environment_flags_only() -> None:
    from pypm.launch import _split, tool_key

    assert tool_key([], "ruff") == "ruff"  # the key `pypm x ruff` always had
    parts = _split(["x", "--limit", "--from", "--from=a", "--with", "b", "-q", "--", "c", "--from", "d"])
    assert parts is not None
    flags, cmd = parts
    assert cmd == ["c", "--from", "d"]
    assert tool_key(flags, cmd[0]) == "\x1f".join(["--from", "a", "--with", "b", "c"])  # (--limit's value is its own)
    assert _split(["run", "--from", "a", "c"]) is None  # `pypm run` has no --from
