"""`pypm run` and `pypm shell` sandboxed by default: flags, [tool.pypm.sandbox], the shell, the canary."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pexpect

from .conftest import NOBODY, SYSTEM_PYTHON, as_user

INSPECT = r"""
import json, os, socket, sys
def attempt(fn):
    try:
        fn(); return "ok"
    except OSError as e:
        return type(e).__name__
out = {
    "sandbox": os.environ.get("PYPM_SANDBOX"), "hostname": socket.gethostname(), "prefix": sys.prefix,
    "venv": os.environ.get("VIRTUAL_ENV"), "cwd": os.getcwd(), "interfaces": [n for _, n in socket.if_nameindex()],
    "env": dict(os.environ),
    "write_project": attempt(lambda: open("written-inside", "w").close()),
}
import greet
out["greet"] = greet.__name__
print(json.dumps(out))
"""


def _inspect(pypm, project: Path, *flags: str, env=None) -> dict:
    r = pypm("run", "--frozen", *flags, "--", "python", "-c", INSPECT, cwd=project, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_run_is_sandboxed_by_default(pypm, app) -> None:
    project = app()
    out = _inspect(pypm, project, env={"AWS_SECRET_ACCESS_KEY": "hunter2", "LC_ALL": "C.UTF-8"})
    assert out["sandbox"] == "1" and out["hostname"] == "pypm-sandbox"
    assert out["interfaces"] == ["lo"]
    assert out["prefix"] == out["venv"] == str(project / ".venv")
    assert out["cwd"] == str(project) and out["greet"] == "greet"
    assert out["write_project"] == "ok" and (project / "written-inside").exists()
    # A clean environment from an allowlist: no host secrets, no host paths.
    assert "AWS_SECRET_ACCESS_KEY" not in out["env"] and "PYPM_CACHE_DIR" not in out["env"]
    assert out["env"]["LC_ALL"] == "C.UTF-8"
    r = pypm("run", "--frozen", "greet", cwd=project)  # a console script of the venv
    assert r.returncode == 0 and r.stdout == "hi from greet\n", r.stderr


def test_exit_status_and_command_not_found(pypm, app) -> None:
    project = app()
    assert pypm("run", "--frozen", "python", "-c", "raise SystemExit(7)", cwd=project).returncode == 7
    r = pypm("run", "--frozen", "--", "python", "-c", "import os; os.kill(os.getpid(), 9)", cwd=project)
    assert r.returncode == 128 + 9
    r = pypm("run", "--frozen", "no-such-command-xyz", cwd=project)
    assert r.returncode == 127 and "no-such-command-xyz: command not found" in r.stderr
    assert "Traceback" not in r.stderr


def test_print_sandbox_shows_the_plan_and_runs_nothing(pypm, app) -> None:
    project = app()
    r = pypm("run", "--frozen", "--print-sandbox", "--network", "host", "--", "python", "-c",
             "open('must-not-exist', 'w')", cwd=project)
    assert r.returncode == 0, r.stderr
    assert f"bind-rw {project}" in r.stdout and f"bind-ro {project / '.venv'}" in r.stdout
    assert "network:    the host network" in r.stdout and "seccomp:    default" in r.stdout
    assert "command:    python -c" in r.stdout
    assert not (project / "must-not-exist").exists()


def test_git_dir_is_read_only_unless_bound(pypm, app) -> None:
    project = app()
    (project / ".git" / "hooks").mkdir(parents=True)
    code = "open('.git/hooks/pre-commit', 'w').write('evil')"
    r = pypm("run", "--frozen", "python", "-c", code, cwd=project)
    assert r.returncode == 1 and "Read-only file system" in r.stderr
    assert not (project / ".git" / "hooks" / "pre-commit").exists()
    r = pypm("run", "--frozen", "--bind", ".git", "python", "-c", code, cwd=project)
    assert r.returncode == 0, r.stderr


def test_read_only_project_from_flag_or_config(pypm, app) -> None:
    project = app('\n[tool.pypm.sandbox]\nwritable-project = false\n')
    assert _inspect(pypm, project)["write_project"] == "OSError"  # EROFS
    assert _inspect(pypm, project, "--writable-project")["write_project"] == "ok"
    (project / "written-inside").unlink()
    assert _inspect(pypm, project, "--read-only-project")["write_project"] == "OSError"


def test_network_host_from_flag_or_config(pypm, app, tmp_path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    port = s.getsockname()[1]
    code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3).close(); print('connected')"
    try:
        project = app()
        r = pypm("run", "--frozen", "python", "-c", code, cwd=project)
        assert r.returncode == 1 and "ConnectionRefusedError" in r.stderr
        r = pypm("run", "--frozen", "--network", "host", "python", "-c", code, cwd=project)
        assert r.returncode == 0 and r.stdout == "connected\n", r.stderr
        (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text()
                                                + '\n[tool.pypm.sandbox]\nnetwork = "host"\n')
        r = pypm("run", "--frozen", "python", "-c", code, cwd=project)
        assert r.returncode == 0, r.stderr
        r = pypm("run", "--frozen", "--network", "none", "python", "-c", code, cwd=project)
        assert r.returncode == 1
    finally:
        s.close()


def test_binds_env_and_profile_flags(pypm, app, tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("from the host")
    out = tmp_path / "out"
    out.mkdir()
    project = app('\n[tool.pypm.sandbox]\nro-bind = ["../data:/data"]\nenv = ["FROM_CONFIG=yes"]\n')
    code = ("import os; print(open('/data/in.txt').read()); open(os.path.join(os.environ['OUT'], 'o.txt'), 'w').write('x');"
            "print(os.environ['FROM_CONFIG'], os.environ['FROM_HOST'], os.environ.get('NOT_PASSED'))\n"
            "try:\n    open('/data/new', 'w')\nexcept OSError as e:\n    print('ro', e.errno)")
    r = pypm("run", "--frozen", "--bind", str(out), "--env", f"OUT={out}", "--env", "FROM_HOST",
             "python", "-c", code, cwd=project, env={"FROM_HOST": "passed", "NOT_PASSED": "secret"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:3] == ["from the host", "yes passed None", "ro 30"]  # EROFS
    assert (out / "o.txt").read_text() == "x"
    # A profile the user brings: deny uname(2).
    profile = tmp_path / "no-uname.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW",
                                   "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}))
    r = pypm("run", "--frozen", "--profile", str(profile), "python", "-c",
             "import ctypes; libc = ctypes.CDLL(None, use_errno=True); buf = ctypes.create_string_buffer(400);"
             " print(libc.uname(buf), ctypes.get_errno())", cwd=project)
    assert r.returncode == 0 and r.stdout == "-1 1\n", r.stderr
    r = pypm("run", "--frozen", "--profile", "strict", "python", "-c",
             "import subprocess; print(subprocess.check_output(['echo', 'strict ok']).decode().strip())", cwd=project)
    assert r.returncode == 0 and r.stdout == "strict ok\n", r.stderr


def test_bad_sandbox_settings_are_clear_errors(pypm, app) -> None:
    project = app('\n[tool.pypm.sandbox]\nbind = ["no-such-dir"]\n')
    r = pypm("run", "--frozen", "true", cwd=project)
    assert r.returncode == 8 and "pyproject.toml: [tool.pypm.sandbox] bind no-such-dir" in r.stderr
    assert "hint:" in r.stderr and "Traceback" not in r.stderr
    project.joinpath("pyproject.toml").write_text(project.joinpath("pyproject.toml").read_text().replace(
        'bind = ["no-such-dir"]', 'profile = "nope"'))
    r = pypm("run", "--frozen", "true", cwd=project)
    assert r.returncode == 8 and "unknown seccomp profile 'nope'" in r.stderr
    r = pypm("run", "--frozen", "--ro-bind", "/x/y:relative", "true", cwd=project)
    assert r.returncode == 8 and "--ro-bind" in r.stderr


LIMITS = "import resource as r; print(r.getrlimit(r.RLIMIT_NOFILE)[1], r.getrlimit(r.RLIMIT_AS)[1])"


def test_limits_from_config_and_flags(pypm, app) -> None:
    import resource

    project = app('\n[tool.pypm.sandbox]\nlimits = { open-files = 64, memory = "1G" }\n')
    r = pypm("run", "--frozen", "python", "-c", LIMITS, cwd=project)  # the fast path: state.json's copy
    assert r.returncode == 0 and r.stdout == f"64 {1 << 30}\n", r.stderr
    r = pypm("run", "--frozen", "--limit", "open-files=32", "--limit", "memory=unlimited", "python", "-c", LIMITS,
             cwd=project)
    assert r.returncode == 0 and r.stdout == f"32 {resource.getrlimit(resource.RLIMIT_AS)[1]}\n", r.stderr
    r = pypm("run", "--frozen", "--print-sandbox", "true", cwd=project)
    assert r.returncode == 0 and "limits:     memory=1G, open-files=64" in r.stdout, r.stdout
    # A state.json from before limits existed: read from pyproject.toml, never taken as "no limits".
    state = project / ".venv" / ".pypm" / "state.json"
    data = json.loads(state.read_text())
    del data["tool"]["sandbox"]["limits"]
    state.write_text(json.dumps(data))
    r = pypm("run", "--frozen", "python", "-c", LIMITS, cwd=project)
    assert r.returncode == 0 and r.stdout == f"64 {1 << 30}\n", r.stderr
    # Root's processes are not counted by the kernel: refused, with the way out.
    r = pypm("run", "--frozen", "--limit", "processes=100", "true", cwd=project)
    assert os.getuid() == 0 and r.returncode == 8, r.stderr
    assert "cannot be enforced when pypm runs as root" in r.stderr and "--limit processes=unlimited" in r.stderr
    r = pypm("run", "--frozen", "--limit", "memory=lots", "true", cwd=project)
    assert r.returncode == 8 and "--limit memory = 'lots' is not a size" in r.stderr and "Traceback" not in r.stderr


def test_sandbox_flags_take_the_fast_path_with_the_full_paths_result(pypm, app) -> None:
    project = app()
    code = ("import os, resource, socket; print(resource.getrlimit(resource.RLIMIT_NOFILE)[1], os.environ.get('X'),"
            " len(socket.if_nameindex()) > 1, os.access('.', os.W_OK))")
    flags = ["--limit", "open-files=64", "--network=host", "--env", "X=1", "--read-only-project", "--profile", "default"]
    env = {"PYTHONPROFILEIMPORTTIME": "1", "PYPM_NO_LAUNCHER": "1"}
    fast = pypm("run", "--frozen", *flags, "--", "python", "-c", code, cwd=project, env=env)
    full = pypm("run", "--frozen", "--no-sync", *flags, "--", "python", "-c", code, cwd=project, env=env)
    for r in (fast, full):
        assert r.returncode == 0 and r.stdout == "64 1 True False\n", r.stderr
    imported = [line.split("|")[-1].strip() for line in fast.stderr.splitlines() if line.startswith("import time:")]
    assert "pypm.cli" not in imported and "argparse" not in imported
    assert "pypm.cli" in [line.split("|")[-1].strip() for line in full.stderr.splitlines()]
    # What argparse refuses is still refused, in its words.
    for bad in (["--limit", ""], ["--network", "lan"], ["--read-only-project", "--writable-project"], ["--limit"]):
        r = pypm("run", "--frozen", *bad, "--", "true", cwd=project)
        assert r.returncode == 2 and "usage:" in r.stderr, (bad, r.stderr)


def test_a_bad_limit_in_pyproject_names_the_key(pypm, app) -> None:
    project = app()
    path = project / "pyproject.toml"
    path.write_text(path.read_text() + '\n[tool.pypm.sandbox]\nlimits = { memory = "2 gigs" }\n')
    r = pypm("run", "python", "-c", "pass", cwd=project)
    assert r.returncode != 0 and "`tool.pypm.sandbox.limits.memory` '2 gigs' is not a size" in r.stderr, r.stderr
    assert str(path) in r.stderr and "Traceback" not in r.stderr


def test_sandbox_can_be_disabled_in_config(pypm, app) -> None:
    project = app('\n[tool.pypm.sandbox]\nenabled = false\n')
    r = pypm("run", "--frozen", "python", "-c", "import os; print(os.environ.get('PYPM_SANDBOX'))", cwd=project)
    assert r.returncode == 0 and r.stdout == "None\n"


def test_shell_in_the_sandbox_through_a_pty(pypm, app, tmp_path) -> None:
    project = app()
    marker = f"shell{os.getpid()}"
    marker_n = 2000 + os.getpid() % 1000 + time.time_ns() % 1000 / 1000
    env = dict(pypm.env, SHELL="/bin/bash", TERM="dumb")
    term = pexpect.spawn(sys.executable, ["-m", "pypm", "shell", "--frozen"], cwd=str(project), env=env,
                         timeout=30, encoding="utf-8", dimensions=(24, 250))
    try:
        term.expect(r"\(app\) \[sandbox\] \S+ [$#] ")
        term.sendline("python -c \"import greet, socket; print('imported', greet.__name__, socket.gethostname())\"")
        term.expect("imported greet pypm-sandbox")
        # Job control works: a background job, listed, then killed by its job number.
        term.sendline("sleep 300 &")
        term.sendline("jobs")
        term.expect(r"\[1\]\+\s+Running\s+sleep 300 &")
        term.sendline("kill %1; wait; echo waited")
        term.expect("waited")
        term.sendintr()  # Ctrl-C at the prompt: the shell survives it
        term.sendline("echo still here")
        term.expect("still here")
        # Ctrl-C stops a foreground command, not the shell.
        term.sendline(f"sleep 1000 # {marker}-fg")
        time.sleep(0.5)
        term.sendintr()
        term.sendline("echo after ctrl-c")
        term.expect("after ctrl-c")
        term.sendline(f"sleep {marker_n} &")  # left running when the shell exits
        term.sendline("exit 3")
        term.expect(pexpect.EOF)
    finally:
        term.close(force=True)
    assert term.exitstatus == 3
    # Nothing outlives the shell: no process, no temporary root, no mount.
    assert not _wait_gone(str(marker_n))
    assert not [d for d in os.listdir("/tmp") if d.startswith(f"pypm-sandbox.{term.pid}.")]
    assert not [line for line in open("/proc/self/mounts") if "pypm-sandbox." in line]


def test_ctrl_c_in_pypm_run_leaves_nothing(pypm, app) -> None:
    project = app()
    marker_n = 1000 + os.getpid() % 1000 + time.time_ns() % 1000 / 1000
    env = dict(pypm.env, TERM="dumb")
    term = pexpect.spawn(sys.executable, ["-m", "pypm", "run", "--frozen", "--", "sh", "-c",
                                          f"sleep {marker_n} & echo ready; wait"],
                         cwd=str(project), env=env, timeout=30, encoding="utf-8")
    try:
        term.expect("ready")
        time.sleep(0.2)
        term.sendintr()
        term.expect(pexpect.EOF)
    finally:
        term.close(force=True)
    assert term.exitstatus == 130 or term.signalstatus == 2
    assert not _wait_gone(str(marker_n))
    assert not [d for d in os.listdir("/tmp") if d.startswith(f"pypm-sandbox.{term.pid}.")]


def _wait_gone(marker: str, timeout: float = 10) -> list:
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        left = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(marker in a for a in (p.info["cmdline"] or [])):
                    left.append(p)
            except psutil.Error:
                continue
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def _canary_ready(pypm, canary_project: Path) -> None:
    r = pypm("lock", cwd=canary_project, timeout=600)
    assert r.returncode == 0, r.stderr
    r = pypm("sync", cwd=canary_project, timeout=600)
    assert r.returncode == 0, r.stderr


def test_canary_runs_sandboxed(pypm, canary_project) -> None:
    """The canary's demo and its own test suite pass sandboxed; its network test fails
    cleanly inside the sandbox and passes with --network host; `import requests` works in
    `pypm shell`."""
    _canary_ready(pypm, canary_project)
    r = pypm("run", "python", "-m", "my_lib.demo", cwd=canary_project)
    assert r.returncode == 0, r.stderr
    assert "requests   2.32.3" in r.stdout
    r = pypm("run", "pytest", "-q", "-p", "no:cacheprovider", cwd=canary_project, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    probe = f"PYPM_CANARY_PROBE=127.0.0.1:{s.getsockname()[1]}"
    try:
        r = pypm("run", "--env", probe, "pytest", "-q", "-p", "no:cacheprovider", "-k", "network", cwd=canary_project)
        assert r.returncode == 1 and "1 failed" in r.stdout and "ConnectionRefusedError" in r.stdout, r.stdout
        r = pypm("run", "--network", "host", "--env", probe, "pytest", "-q", "-p", "no:cacheprovider", "-k", "network",
                 cwd=canary_project)
        assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout + r.stderr
    finally:
        s.close()
    env = dict(pypm.env, SHELL="/bin/bash", TERM="dumb")
    term = pexpect.spawn(sys.executable, ["-m", "pypm", "shell"], cwd=str(canary_project), env=env, timeout=60,
                         dimensions=(24, 250), encoding="utf-8")
    try:
        term.expect(r"\[sandbox\] \S+ [$#] ")
        term.sendline("python -c \"import requests; print('requests', requests.__version__)\"")
        term.expect("requests 2.32.3")
        term.sendline("exit")
        term.expect(pexpect.EOF)
    finally:
        term.close(force=True)
    assert term.exitstatus == 0




def _synced_for_nobody(pypm, world, tool: str = "") -> Path:
    """A project of uid 65534 using the distribution's python, synced (by root: no sandbox
    is involved), then handed over to 65534 whole. `tool`: appended to pyproject.toml."""
    project = world.user_dir("nobody", "proj")
    (project / "pyproject.toml").write_text(
        '[project]\nname = "wp"\nversion = "0.1.0"\nrequires-python = ">=3.9"\ndependencies = []\n'
        f'\n[tool.pypm]\npython = "{SYSTEM_PYTHON}"\n' + tool)
    r = pypm("sync", cwd=project)
    assert r.returncode == 0, r.stderr
    for dirpath, dirnames, filenames in os.walk(project):
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), NOBODY, NOBODY)
    return project


def test_pypm_run_as_an_unprivileged_user(pypm, boxes, world) -> None:
    """`pypm run` started by uid 65534 (with a world-readable pypm and the distribution's
    python): sandboxed, as itself, the isolation probe passing, the project its own."""
    box = boxes["nobody"]
    project = _synced_for_nobody(pypm, world)
    code = ("import json, os, socket, sys; print(json.dumps([os.getuid(), sys.prefix, socket.gethostname(),"
            " os.path.exists(sys.argv[1]), [n for _, n in socket.if_nameindex()]]))")
    argv = as_user("nobody", [world.python, "-m", "pypm", "run", "--", "python", "-c", code, str(world.secret)],
                   box.env)
    r = subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [NOBODY, str(project / ".venv"), "pypm-sandbox", False, ["lo"]]


def test_pypm_run_limits_processes_for_an_unprivileged_user(pypm, boxes, world) -> None:
    """`[tool.pypm.sandbox] limits = { processes = 12 }` through `pypm run` started by uid 65534:
    the command and its children stop at 12 tasks in the sandbox's user namespace (its init
    included), and a fork bomb with them."""
    from .test_limits import FORK

    box = boxes["nobody"]
    project = _synced_for_nobody(pypm, world, "\n[tool.pypm.sandbox]\nlimits = { processes = 12 }\n")
    argv = as_user("nobody", [world.python, "-m", "pypm", "run", "--", "python", "-c", FORK, "100"], box.env)
    r = subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=90)
    assert r.returncode == 0 and r.stdout.split() == ["10", "11"], (r.stdout, r.stderr)


def test_pypm_x_as_an_unprivileged_user(boxes, world, dists, index_server) -> None:
    """`pypm x` started by uid 65534, from the first run (lock and sync of the tool's environment
    in its own cache) to the sandboxed tool: as itself, in its directory, the host's files and
    network out of reach."""
    box = boxes["nobody"]
    dists.wheel("whoami-tool", "1.0", modules={"whoami_tool/__init__.py": (
        "import json, os, socket, sys\n"
        "def main():\n"
        "    open('made-by-the-tool', 'w').close()\n"
        "    print(json.dumps([os.getuid(), os.getcwd(), os.path.exists(sys.argv[1]),"
        " [n for _, n in socket.if_nameindex()]]))\n")},
        entry_points={"console_scripts": {"whoami-tool": "whoami_tool:main"}})
    server = index_server()
    work = world.user_dir("nobody", "work")
    argv = as_user("nobody", [world.python, "-m", "pypm", "x", "--index-url", server.url, "--python", SYSTEM_PYTHON,
                              "whoami-tool", str(world.secret)], box.env)
    for _ in range(2):  # made, then found current
        r = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == [NOBODY, str(work), False, ["lo"]]
    assert (work / "made-by-the-tool").stat().st_uid == NOBODY
    assert [p.stat().st_uid for p in (box.cache / "tools").iterdir()] == [NOBODY]


def test_path_dependencies_on_sys_path_are_visible_read_only(pypm, app, tmp_path) -> None:
    """An editable path dependency (a .pth line pointing outside the project) is bound read-only."""
    project = app()
    lib = tmp_path / "shared-lib" / "src"
    (lib / "shared").mkdir(parents=True)
    (lib / "shared" / "__init__.py").write_text("NAME = 'shared'\n")
    site = next((project / ".venv" / "lib").glob("python*/site-packages"))
    (site / "_shared.pth").write_text(f"{lib}\n")
    code = ("import shared, os; print(shared.NAME, os.path.dirname(shared.__file__));"
            "open(os.path.join(os.path.dirname(shared.__file__), 'x'), 'w')")
    r = pypm("run", "--frozen", "python", "-c", code, cwd=project)
    assert r.stdout == f"shared {lib / 'shared'}\n", r.stderr
    assert r.returncode == 1 and "Read-only file system" in r.stderr


def test_the_sandboxed_hot_path_imports_nothing_heavy(pypm, app) -> None:
    project = app()
    r = pypm("run", "--frozen", "--", "python", "-c", "pass", cwd=project)
    assert r.returncode == 0, r.stderr
    # PYPM_NO_LAUNCHER: this is about the Python fast path (a replayed plan imports even less: test_launch.py)
    r = pypm("run", "--frozen", "--", "python", "-c", "pass", cwd=project,
             env={"PYTHONPROFILEIMPORTTIME": "1", "PYPM_NO_LAUNCHER": "1"})
    assert r.returncode == 0, r.stderr
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "sandbox.caller" in imported  # it did run sandboxed, through the fast path
    # ... and through the compiled helper: neither the Python runner nor ctypes loads
    assert "sandbox.native" in imported and "sandbox.runner" not in imported and "ctypes" not in imported
    # The sandbox settings come from state.json: no TOML parsing, no project model.
    for heavy in ("httpx", "resolvelib", "rich", "pypm.index", "pypm.resolver", "pypm.http", "pyseccomp",
                  "configparser", "pypm.sync", "pypm.project", "tomllib"):
        assert heavy not in imported, heavy


def test_the_working_directory_is_kept_inside_the_project(pypm, app, tmp_path) -> None:
    project = app()
    (project / "sub" / "dir").mkdir(parents=True)
    r = pypm("run", "--frozen", "python", "-c", "import os; print(os.getcwd())", cwd=project / "sub" / "dir")
    assert r.returncode == 0 and r.stdout == f"{project / 'sub' / 'dir'}\n", r.stderr
    r = pypm("-C", str(project), "run", "--frozen", "python", "-c", "import os; print(os.getcwd())", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == f"{project}\n", r.stderr


def test_the_sandboxed_hot_path_skips_the_cli_and_slow_stdlib_modules(pypm, app) -> None:
    """From the entry point to the sandbox: no argparse, CLI, dataclasses, typing, pathlib,
    subprocess, json, re or enum once pypm starts (the host's .pth files may have imported
    some of them before)."""
    project = app()
    r = pypm("run", "--frozen", "--", "python", "-c", "pass", cwd=project)  # compiles and caches the seccomp BPF
    assert r.returncode == 0, r.stderr
    # PYPM_NO_LAUNCHER: this is about the Python fast path (a replayed plan imports even less: test_launch.py)
    r = pypm("run", "--frozen", "--", "python", "-c", "pass", cwd=project,
             env={"PYTHONPROFILEIMPORTTIME": "1", "PYPM_NO_LAUNCHER": "1"})
    assert r.returncode == 0, r.stderr
    names = [line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")]
    ours = names[names.index("pypm"):]
    imported = set(ours[:ours.index("encodings")] if "encodings" in ours else ours)  # then the command's own
    assert "sandbox.native" in imported and "sandbox.runner" not in imported
    slow = {"pypm.cli", "argparse", "dataclasses", "typing", "pathlib", "subprocess", "shutil", "hashlib",
            "pypm.venvstate", "pypm.selection", "json", "enum", "re", "signal"}
    assert not imported & slow, (sorted(imported & slow), " ".join(names[names.index("pypm"):]))


def test_a_bad_sandbox_flag_is_refused_before_the_sync(pypm, app, tmp_path) -> None:
    project = app()
    venv = project / ".venv"
    import shutil

    shutil.rmtree(venv)
    lock = (project / "pypm.lock").read_bytes()
    for flags, words in ((["--limit", "memroy=2G"], "--limit unknown limit 'memroy'"),
                         (["--bind", "not-here"], "--bind not-here: not-here does not exist"),
                         (["--ro-bind", "/tmp:"], "--ro-bind '/tmp:': empty source or destination"),
                         (["--profile", "nope"], "unknown seccomp profile 'nope'"),
                         (["--env", "=1"], "--env '=1': not NAME or NAME=VALUE"),
                         (["--limit", "processes=64"], "cannot be enforced when pypm runs as root")):
        for command in (["run", *flags, "--", "python", "-c", "pass"], ["shell", *flags]):
            r = pypm(*command, cwd=project)
            assert r.returncode == 8 and words in r.stderr and "Traceback" not in r.stderr, (command, r.stderr)
            # Nothing was synced for a command that could not have run.
            assert not venv.exists() and (project / "pypm.lock").read_bytes() == lock, command
            assert "Synced" not in r.stderr and "Created" not in r.stderr, r.stderr
    # The same flags are only warned about when the command runs unsandboxed, which it then does.
    r = pypm("run", "--frozen", "--no-sandbox", "--limit", "memroy=2G", "--", "python", "-c", "print('ran')", cwd=project)
    assert r.returncode == 0 and r.stdout == "ran\n" and "--limit has no effect" in r.stderr, r.stderr
    assert venv.is_dir()


def test_env_file_sets_what_the_environment_lacks_sandboxed_or_not(pypm, app, tmp_path) -> None:
    """--env-file (as uv's): its variables are set where the command's environment does not have
    them already (sandboxed: the sandbox's own PATH, HOME, VIRTUAL_ENV stay); later files win; a
    missing file or a bad line is said before anything is synced, naming the file and line."""
    project = app()
    (project / "one.env").write_text('# settings\nexport GREETING="hello\\tthere"\nTOKEN=abc # a comment\n'
                                     "HOME=/not-home\nVIRTUAL_ENV=/elsewhere\nRAW='${not_expanded}'\n")
    (tmp_path / "two.env").write_text("TOKEN=from-two\n")
    code = ("import json, os; print(json.dumps({k: os.environ.get(k) for k in "
            "('GREETING', 'TOKEN', 'HOME', 'VIRTUAL_ENV', 'RAW', 'FROM_HOST')}))")
    for flags in ((), ("--no-sandbox",)):
        r = pypm("run", "--frozen", *flags, "--env-file", "one.env", "--env-file", str(tmp_path / "two.env"),
                 "--", "python", "-c", code, cwd=project, env={"FROM_HOST": "host"})
        assert r.returncode == 0, (flags, r.stderr)
        got = json.loads(r.stdout)
        assert got["GREETING"] == "hello\tthere" and got["TOKEN"] == "from-two" and got["RAW"] == "${not_expanded}"
        assert got["VIRTUAL_ENV"] == str(project / ".venv"), got
        assert got["HOME"] != "/not-home", got
        assert got["FROM_HOST"] == ("host" if flags else None), got  # the host's own: only unsandboxed
    # the host's value wins unsandboxed (the environment has it), as uv's
    r = pypm("run", "--frozen", "--no-sandbox", "--env-file", "one.env", "--", "python", "-c",
             "import os; print(os.environ['TOKEN'])", cwd=project, env={"TOKEN": "mine"})
    assert r.returncode == 0 and r.stdout == "mine\n", r.stderr
    # a synced project's run with --env-file takes run's fast path, sandboxed or not (no argparse, no
    # CLI; the launcher's replay aside: tests/sandbox/test_launch.py)
    for flags in ((), ("--no-sandbox",)):
        r = pypm("run", "--frozen", *flags, "--env-file", "one.env", "--", "python", "-c", "pass", cwd=project,
                 env={"PYTHONPROFILEIMPORTTIME": "1", "PYPM_NO_LAUNCHER": "1"})
        imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
        assert r.returncode == 0 and "pypm.run" in imported and "pypm.cli" not in imported, (flags, sorted(imported))
    # errors, with the file and the line: on that fast path, and before any sync (no .venv made)
    import shutil

    (project / "bad.env").write_text("OK=1\nnot a line\n")
    errors = (("missing.env", 2, f"--env-file missing.env: no such file ({project / 'missing.env'})"),
              ("bad.env", 3, f"{project / 'bad.env'}:2: expected NAME=VALUE, found 'not a line'"))
    for name, code_, words in errors:
        for flags in ((), ("--no-sandbox",)):
            r = pypm("run", "--frozen", *flags, "--env-file", name, "--", "python", "-c", "pass", cwd=project)
            assert r.returncode == code_ and words in r.stderr and "Traceback" not in r.stderr, (flags, r.stderr)
    # PYPM_ENV_FILE (as UV_ENV_FILE): the files when no --env-file is given, ':'-separated; the
    # flag wins over it; --no-env-file and PYPM_NO_ENV_FILE=1 read neither; on the fast path and
    # through the CLI (--python is not a fast-path flag) alike
    show = "import os; print(os.environ.get('TOKEN'), os.environ.get('GREETING'))"
    both = {"PYPM_ENV_FILE": f"one.env:{tmp_path / 'two.env'}"}
    cases: list[tuple[tuple[str, ...], dict[str, str], str]] = [
        ((), both, "from-two hello\tthere\n"),
        (("--env-file", "one.env"), {"PYPM_ENV_FILE": str(tmp_path / "two.env")}, "abc hello\tthere\n"),
        (("--no-env-file",), both, "None None\n"), ((), {**both, "PYPM_NO_ENV_FILE": "1"}, "None None\n"),
        (("--no-env-file", "--env-file", "one.env"), {}, "None None\n")]
    every: list[tuple[str, ...]] = [(), ("--no-sandbox",), ("--python", "3.11")]
    for how in every:
        for more, env, out in cases:
            r = pypm("run", "--frozen", *how, *more, "--", "python", "-c", show, cwd=project, env=env)
            assert r.returncode == 0 and r.stdout == out, (how, more, env, r.stderr)
    r = pypm("run", "--frozen", "--", "python", "-c", "pass", cwd=project, env={"PYPM_ENV_FILE": "gone.env"})
    assert r.returncode == 2 and "PYPM_ENV_FILE gone.env: no such file" in r.stderr and "--no-env-file" in r.stderr, r.stderr
    shutil.rmtree(project / ".venv")
    for name, code_, words in errors:
        for command in (["run", "--env-file", name, "--", "python", "-c", "pass"], ["shell", "--env-file", name]):
            r = pypm(*command, cwd=project)
            assert r.returncode == code_ and words in r.stderr and "Traceback" not in r.stderr, (command, r.stderr)
            assert not (project / ".venv").exists(), command
