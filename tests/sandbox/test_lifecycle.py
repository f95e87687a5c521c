"""The sandbox's life cycle, checked from outside: exit status, signals, Ctrl-C, kill -9, many at once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import pexpect
import psutil
import pytest

from .conftest import SYSTEM_PYTHON, sandbox_dirs, sandbox_mounts, slow_pdeathsig_shim


def _procs_with(marker: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in a for a in (p.info["cmdline"] or [])):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def _wait_gone(marker: str, timeout: float = 10) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = _procs_with(marker)
        if not left:
            return []
        time.sleep(0.05)
    return _procs_with(marker)


def _mine(pid: int) -> set[str]:
    return {d for d in sandbox_dirs() if d.startswith(f"pypm-sandbox.{pid}.")}


@pytest.mark.parametrize("script, code", [("exit 0", 0), ("exit 7", 7), ("kill -TERM $$", 128 + 15),
                                          ("kill -KILL $$", 128 + 9)])
def test_exit_status_and_signal_deaths_propagate(box, script, code) -> None:
    r = box.run([], ["/bin/sh", "-c", script])
    assert r.returncode == code, r.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGINT])
def test_signals_sent_to_the_caller_reach_the_command(box, sig) -> None:
    project = box.world.user_dir(box.user, "project")
    child = (
        "import signal, sys, time, pathlib\n"
        f"def h(n, f):\n    pathlib.Path({str(project)!r}, 'got').write_text(str(n)); sys.exit(42)\n"
        f"signal.signal({int(sig)}, h)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = box.popen(["--project", str(project)], [SYSTEM_PYTHON, "-c", child])
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 42
        assert (project / "got").read_text() == str(int(sig))
    finally:
        proc.kill()
        proc.wait()
    assert not _mine(proc.pid)


def test_ctrl_c_on_the_terminal_is_delivered_once_and_leaves_nothing(box) -> None:
    """Ctrl-C goes from the terminal to the whole foreground group, the command included:
    the sandbox must not forward it a second time. Afterwards: no temp root, mount or process."""
    marker = f"ctrlc-{uuid.uuid4().hex}"
    project = box.world.user_dir(box.user, "project")
    child = (
        "import signal, sys, time\n"
        "hits = []\n"
        "def h(n, f):\n    hits.append(n)\n"
        "signal.signal(signal.SIGINT, h)\n"
        "print('ready', flush=True)\n"
        "while not hits: time.sleep(0.01)\n"
        "time.sleep(0.5)\n"  # a duplicate would arrive in this window
        "print('hits', len(hits), flush=True)\n"
        "sys.exit(len(hits))\n"
    )
    argv = box.argv(["--project", str(project)], [SYSTEM_PYTHON, "-c", child, marker])
    term = pexpect.spawn(argv[0], argv[1:], timeout=20, encoding="utf-8")
    try:
        term.expect("ready")
        pid = term.pid
        time.sleep(0.1)
        term.sendintr()  # the terminal's VINTR character: Ctrl-C
        term.expect(r"hits (\d+)")
        assert term.match.group(1) == "1"
        term.expect(pexpect.EOF)
    finally:
        term.close(force=True)
    assert term.exitstatus == 1
    assert not _wait_gone(marker)
    assert not _mine(pid)
    assert sandbox_mounts() == []


def test_ctrl_c_kills_a_command_that_does_not_catch_it(box) -> None:
    marker = f"ctrlc-{uuid.uuid4().hex}"
    argv = box.argv([], ["/bin/sh", "-c", f"echo ready; sleep 1000; : {marker}"])
    term = pexpect.spawn(argv[0], argv[1:], timeout=20, encoding="utf-8")
    try:
        term.expect("ready")
        pid = term.pid
        time.sleep(0.1)
        term.sendintr()
        term.expect(pexpect.EOF)
    finally:
        term.close(force=True)
    assert term.exitstatus == 128 + signal.SIGINT or term.signalstatus == signal.SIGINT
    assert not _wait_gone(marker)
    assert not _mine(pid)


def test_kill_9_of_the_caller_takes_the_sandbox_down(box) -> None:
    marker = f"{int(uuid.uuid4().int % 10**6)}.{os.getpid()}"  # a unique sleep length
    proc = box.popen([], ["/bin/sh", "-c", f"sleep {marker} & sleep {marker}; echo never"])
    try:
        deadline = time.monotonic() + 20
        while len(_procs_with(marker)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(_procs_with(marker)) >= 2, "the sandboxed sleeps never started"
        proc.kill()
        proc.wait()
        assert not _wait_gone(marker), "processes of the sandbox outlived its caller"
    finally:
        proc.kill()
        proc.wait()
    # The killed caller could not remove its temp root; the next run sweeps it.
    assert box.run([], ["/bin/true"]).returncode == 0
    assert not _mine(proc.pid)


def test_fifty_concurrent_runs_succeed_and_clean_up(box) -> None:
    procs = [box.popen([], ["/bin/sh", "-c", f"exit {i % 7}"], stdout=subprocess.DEVNULL) for i in range(50)]
    codes = [p.wait(timeout=120) for p in procs]
    errors = [p.stderr.read() for p in procs if p.returncode != procs.index(p) % 7]
    assert codes == [i % 7 for i in range(50)], errors
    for p in procs:
        assert not _mine(p.pid)
    assert sandbox_mounts() == []


def test_setup_failures_are_clear_errors_with_exit_8(box) -> None:
    r = box.run(["--bind", "/no/such/dir"], ["/bin/true"])
    assert r.returncode == 8
    assert "/no/such/dir" in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr
    r = box.run(["--cwd", "/no/such/dir"], ["/bin/true"])
    assert r.returncode == 8
    assert "chdir(/no/such/dir)" in r.stderr and "ENOENT" in r.stderr and "hint:" in r.stderr
    r = box.run(["--profile", "no-such-profile"], ["/bin/true"])
    assert r.returncode == 8 and "unknown seccomp profile" in r.stderr and "default" in r.stderr
    r = box.run([], ["no-such-command-xyz"])
    assert r.returncode == 127 and "no-such-command-xyz: command not found" in r.stderr
    r = box.run([], [str(box.world.base)])  # a directory: not executable
    assert r.returncode == 126


_THREADED = """
import os, sys, threading, time
from sandbox.host import caller
from sandbox.policy import python_policy
from sandbox.runner import run
stop = threading.Event()
t = threading.Thread(target=stop.wait, daemon=True)  # a second thread: the fork+unshare path
t.start()
who = caller()
policy = python_policy(uid=who.uid, gid=who.gid, user=who.user, home=who.home, host_env=dict(os.environ))
code = run(policy, ["/bin/sh", "-c", "test $$ = 2 && exit 5"])
print(len(os.listdir("/proc/self/task")), code)
"""


def test_a_multi_threaded_caller_gets_the_same_sandbox(box) -> None:
    """A caller with threads takes the fork + unshare path (a raw clone could copy a held lock)."""
    import subprocess

    from .conftest import as_user

    r = subprocess.run(as_user(box.user, [box.world.python, "-c", _THREADED], box.env), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2", "5"]


_NOT_STOLEN = """
import os, signal, threading, time
from sandbox.host import caller
from sandbox.policy import python_policy
from sandbox.runner import run
who = caller()
policy = python_policy(uid=who.uid, gid=who.gid, user=who.user, home=who.home, host_env=dict(os.environ))
# The main thread blocks SIGTERM for a moment, so that the kernel cannot hand it the signal: only
# the thread that runs the sandbox could take it.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
codes = []
t = threading.Thread(target=lambda: codes.append(run(policy, ["/bin/sh", "-c", "sleep 2; exit 7"])))
t.start()
time.sleep(0.8)
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.5)
pending = signal.SIGTERM in signal.sigpending()
t.join(30)
print(pending, codes)
"""


def test_a_thread_running_a_sandbox_leaves_the_processs_sigterm_to_the_main_thread(box) -> None:
    """A SIGTERM sent to a caller with threads (pypm building two sdists at once) is the main
    thread's to take (its handler stops every build), not the one build thread's that happened to
    wait for signals: taken there, it reached one command alone while the main thread waited on
    another build (a CI run's SIGTERM'd sync waited 120 s). The command runs to its end here, and
    the signal is still pending for the main thread."""
    import subprocess

    from .conftest import as_user

    r = subprocess.run(as_user(box.user, [box.world.python, "-c", _NOT_STOLEN], box.env), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "[7]"], r.stdout


_NOT_HELD = """
import os, select, threading, time
from sandbox.host import caller
from sandbox.policy import python_policy
from sandbox.runner import run
who = caller()
policy = python_policy(uid=who.uid, gid=who.gid, user=who.user, home=who.home, host_env=dict(os.environ))
r, w = os.pipe()  # an fd of the caller's own (close-on-exec, as Python makes them all)
codes = []
t = threading.Thread(target=lambda: codes.append(run(policy, ["/bin/sh", "-c", "sleep 4; exit 3"])))
t.start()
time.sleep(1.0)  # the sandbox's processes were forked while `w` was open
os.close(w)
ready = select.select([r], [], [], 1.5)[0]
print(bool(ready) and os.read(r, 1) == b"", codes)
t.join(30)
print(codes)
"""


def test_a_sandbox_holds_none_of_its_threaded_caller_s_other_fds(box) -> None:
    """The outer process and the init of a sandbox forked from a caller with threads live as
    long as the command and never execve, so close-on-exec does not clear what they inherited:
    they close every fd but the status pipe and the command's stdio at once. Held, another
    thread's fd stayed open for the command's whole life: a second build's status pipe, whose
    caller then waited for this build to end, or a cache entry's flock, released by its holder
    but still held here. The caller's pipe reads end-of-file once the caller closes its end,
    while the command still runs."""
    import subprocess

    from .conftest import as_user

    r = subprocess.run(as_user(box.user, [box.world.python, "-c", _NOT_HELD], box.env), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["True []", "[3]"], r.stdout


def test_concurrent_runs_from_threads_with_captured_output(world) -> None:
    """What a parallel build does: several threads, each running a sandbox whose output it reads."""
    import threading

    from sandbox.host import caller
    from sandbox.policy import python_policy
    from sandbox.runner import run

    who = caller()
    policy = python_policy(uid=who.uid, gid=who.gid, user=who.user, home=str(world.base / "nohome"),
                           host_env={})
    results: dict[int, tuple[int, bytes]] = {}

    def work(i: int) -> None:
        r, w = os.pipe()
        try:
            code = run(policy, ["/bin/sh", "-c", f"echo out {i}; echo err {i} >&2; exit {i}"], stdout=w, stderr=w,
                       cache_dir=str(world.base / "cache-threads"))
        finally:
            os.close(w)
        with os.fdopen(r, "rb") as f:
            results[i] = (code, f.read())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {i: (i, f"out {i}\nerr {i}\n".encode()) for i in range(6)}


def test_the_command_path_search_fails_as_execvpe_does(tmp_path) -> None:
    """runner._execvpe (os.execvpe without its warnings import): the first error that is not
    "no such file" wins (EACCES for a non-executable match), else the last one."""
    import errno

    from sandbox.runner import _execvpe

    plain = tmp_path / "bin1"
    plain.mkdir()
    (plain / "tool").write_text("#!/bin/sh\n")  # not executable
    for env, want in (({"PATH": f"{tmp_path}/none:{tmp_path}/none2"}, errno.ENOENT),
                      ({"PATH": f"{tmp_path}/none:{plain}:{tmp_path}/none2"}, errno.EACCES)):
        with pytest.raises(OSError) as info:
            _execvpe("tool", ["tool"], env)
        assert info.value.errno == want
    with pytest.raises(OSError) as info:
        _execvpe(str(plain / "tool"), ["tool"], {"PATH": "/usr/bin"})
    assert info.value.errno == errno.EACCES


_KILLED_CALLER = """
import os, sys, threading
from sandbox.host import caller
from sandbox.policy import python_policy
from sandbox.runner import run
if sys.argv[1] == "threads":  # a second thread: the fork + unshare path, whose init is a grandchild
    threading.Thread(target=threading.Event().wait, daemon=True).start()
who = caller()
policy = python_policy(uid=who.uid, gid=who.gid, user=who.user, home=who.home, host_env=dict(os.environ))
run(policy, ["/bin/sh", "-c", "sleep 30; : " + sys.argv[2]])
"""


@pytest.mark.parametrize("path", ["single", "threads"])
def test_the_python_runner_killed_during_setup_leaves_no_command_running(world, tmp_path, path) -> None:
    # kill -9 of the caller before the sandbox's init has set PR_SET_PDEATHSIG: init must see it
    # (single: the status pipe's read end, which the child closes; threads: the lifeline pipe)
    shim = slow_pdeathsig_shim(tmp_path)
    marker = f"orphan-{uuid.uuid4().hex}"
    p = subprocess.Popen([world.python, "-c", _KILLED_CALLER, path, marker], env={**os.environ, "LD_PRELOAD": str(shim)},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        init = None
        while init is None and time.monotonic() < deadline:  # the namespace's pid 1, in the shim's wait
            try:
                for c in psutil.Process(p.pid).children(recursive=True):
                    with open(f"/proc/{c.pid}/status") as f:
                        if any(line.startswith("NSpid:") and line.split()[-1] == "1" for line in f):
                            init = c
            except (OSError, psutil.NoSuchProcess):
                pass
            time.sleep(0.005)
        assert init is not None, "the sandbox's init never appeared"
    finally:
        p.kill()
        p.wait(timeout=10)
    time.sleep(1.0)  # the shim's wait is over: an init that did not notice has started the command
    left = _procs_with(marker)
    for q in left:
        q.kill()
    assert not left, [q.cmdline() for q in left]
