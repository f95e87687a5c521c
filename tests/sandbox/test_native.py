"""The compiled runner (sandbox/helper.c via sandbox/native.py): built once, the same reports as the
Python runner, and a clean fallback when no C compiler is there. Isolation itself is checked for both
runners by the `box`-parametrized tests (test_isolation.py and the rest)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import native

REPO = Path(__file__).resolve().parents[2]


def _sandbox(args: list[str], cmd: list[str], *, cache: Path, runner: str = "", cc: str | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYPM_", "CC"))}
    env.update({"PYPM_CACHE_DIR": str(cache), "PIP_CONFIG_FILE": os.devnull})
    if runner:
        env["PYPM_SANDBOX_RUNNER"] = runner
    if cc is not None:
        env["CC"] = cc
    return subprocess.run([sys.executable, "-m", "sandbox", *args, "--", *cmd], capture_output=True, text=True,
                          env=env, cwd=cwd or REPO, timeout=120)


def test_the_helper_is_built_once_per_source_and_reused(tmp_path) -> None:
    exe = native.helper(str(tmp_path))
    assert exe is not None and os.access(exe, os.X_OK), "gcc is on this machine: the helper must build"
    assert Path(exe).parent == tmp_path / "sandbox-helper" and oct(os.stat(exe).st_mode & 0o777) == "0o700"
    before = os.stat(exe).st_mtime_ns
    assert native.helper(str(tmp_path)) == exe and os.stat(exe).st_mtime_ns == before  # not rebuilt
    assert not [p for p in (tmp_path / "sandbox-helper").iterdir() if p.name.endswith(".tmp")]


def test_a_build_started_ahead_is_waited_for_not_started_again(tmp_path, monkeypatch) -> None:
    """prebuild (a sync's run to come) starts the compiler as a process of its own (no thread: a
    sync forks its download process only while no other thread runs); helper() then finishes that
    build: one compiler, one binary."""
    log = tmp_path / "cc.log"
    cc = tmp_path / "cc"
    cc.write_text(f"#!/bin/sh\necho run >> {log}\nexec gcc \"$@\"\n")
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.delenv("PYPM_SANDBOX_RUNNER", raising=False)
    cache = str(tmp_path / "cache")
    import threading

    threads = threading.active_count()  # (the suite's index servers have some)
    native.prebuild(cache)
    native.prebuild(cache)  # (one build per cache, however often asked)
    assert threading.active_count() == threads
    exe = native.helper(cache)
    assert exe is not None and os.access(exe, os.X_OK)
    assert log.read_text() == "run\n"
    native.prebuild(cache)  # built: nothing to do
    assert native.helper(cache) == exe and log.read_text() == "run\n"
    assert not [p for p in (tmp_path / "cache" / "sandbox-helper").iterdir() if p.name != os.path.basename(exe)]


def test_a_build_started_ahead_is_finished_when_the_command_ends_first(tmp_path) -> None:
    """A command that started the compiler and then failed (its sync) leaves the helper built, not a
    temporary file: the interpreter's exit finishes the build."""
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYPM_", "CC"))}
    r = subprocess.run([sys.executable, "-c", "import sys; from sandbox import native; "
                        f"native.prebuild({str(cache)!r}); sys.exit('the sync failed')"],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert r.returncode == 1 and "the sync failed" in r.stderr
    built = list((cache / "sandbox-helper").iterdir())
    assert len(built) == 1 and not built[0].name.endswith((".tmp", ".failed")) and os.access(built[0], os.X_OK)


def test_a_compiler_killed_by_a_signal_is_not_remembered_as_failed(tmp_path, monkeypatch) -> None:
    """Ctrl-C during the build (the compiler gets SIGINT too) is not "no compiler here": the next
    run builds the helper, instead of every run taking the Python runner from then on."""
    cc = tmp_path / "cc"
    cc.write_text("#!/bin/sh\nkill -INT $$\n")
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    cache = tmp_path / "cache"
    assert native.helper(str(cache)) is None
    assert list((cache / "sandbox-helper").iterdir()) == []  # no .failed marker, no temporary file
    monkeypatch.delenv("CC")
    exe = native.helper(str(cache))
    assert exe is not None and os.access(exe, os.X_OK)


def test_without_a_compiler_the_python_runner_does_the_same_job(tmp_path) -> None:
    r = _sandbox([], ["sh", "-c", "echo inside; exit 3"], cache=tmp_path, cc="/bin/false")
    assert (r.returncode, r.stdout) == (3, "inside\n"), r.stderr
    failed = list((tmp_path / "sandbox-helper").glob("*.failed"))
    assert len(failed) == 1 and "/bin/false" in failed[0].read_text()  # not retried on every run
    assert not [p for p in (tmp_path / "sandbox-helper").iterdir() if not p.name.endswith(".failed")]
    # insisting on the helper is a clear error naming the fix, not a silent fallback
    r = _sandbox([], ["true"], cache=tmp_path, cc="/bin/false", runner="native")
    assert r.returncode == 8, r.stderr
    assert "compiled sandbox helper is not available" in r.stderr and "C compiler" in r.stderr
    r = _sandbox([], ["true"], cache=tmp_path, runner="bogus")
    assert r.returncode == 8 and "PYPM_SANDBOX_RUNNER='bogus'" in r.stderr, r.stderr


def _normal(text: str) -> str:
    return re.sub(r"/tmp/pypm-sandbox\.[0-9]+\.[0-9a-f]+", "ROOT", text)


@pytest.mark.parametrize("case", ["missing-command", "not-executable", "bad-cwd", "bind-into-read-only",
                                  "signal-exit"])
def test_both_runners_report_failures_and_exit_codes_alike(tmp_path, case) -> None:
    (tmp_path / "plain.txt").write_text("not a program\n")
    args, cmd = {
        "missing-command": ([], ["no-such-command-here"]),
        "not-executable": (["--project", str(tmp_path)], [str(tmp_path / "plain.txt")]),
        "bad-cwd": (["--cwd", "/nonexistent/dir"], ["true"]),
        "bind-into-read-only": (["--ro-bind", f"{tmp_path}:/usr/share/pypm-test-bind"], ["true"]),
        "signal-exit": ([], ["sh", "-c", "kill -TERM $$"]),
    }[case]
    got = {}
    for runner in ("native", "python"):
        r = _sandbox(args, cmd, cache=tmp_path / "cache", runner=runner)
        got[runner] = (r.returncode, _normal(r.stderr))
    assert got["native"] == got["python"], got
    code, err = got["native"]
    assert code == {"missing-command": 127, "not-executable": 126, "bad-cwd": 8, "bind-into-read-only": 8,
                    "signal-exit": 143}[case], err
    if code == 8:
        assert "hint:" in err and "Traceback" not in err, err


def test_a_malformed_plan_runs_nothing(tmp_path) -> None:
    exe = native.helper(str(tmp_path))
    assert exe is not None
    rfd, wfd = os.pipe()
    try:
        # 37 mounts announced, none given: refused before any namespace exists
        p = subprocess.run([exe, str(wfd), "-1", "umpP", "0", "0", "0", "0", str(tmp_path), "/", "h", "0", "0", "37",
                            "--", "/bin/sh", "-c", f"touch {tmp_path}/ran"], pass_fds=(wfd,), timeout=30)
        os.close(wfd)
        wfd = -1
        report = os.read(rfd, 4096).decode()
    finally:
        if wfd >= 0:
            os.close(wfd)
        os.close(rfd)
    assert p.returncode == 125 and report.startswith("internal\x1f") and "mount list" in report, report
    assert not (tmp_path / "ran").exists()
    # a plan that does not unshare the minimum is refused too (the same rule as sandbox.policy.Policy)
    p = subprocess.run([exe, "2", "-1", "un", "0", "0", "0", "0", str(tmp_path), "/", "h", "0", "0", "0", "--", "true"],
                       capture_output=True, timeout=30)
    assert p.returncode == 125 and b"at least the user, mount and PID" in p.stderr


def test_a_path_entry_too_long_for_the_command_is_not_executed_truncated(tmp_path) -> None:
    # PATH entry + "/" + name longer than PATH_MAX: helper.c's snprintf cut the name short and
    # executed whatever file had the cut name; it must fail as execve would (ENAMETOOLONG: 126)
    d = tmp_path / "p"
    while len(str(d)) < 3950:
        d = d / ("d" * min(240, 3950 - len(str(d)) - 1 or 1))
    d.mkdir(parents=True)
    name = "c" * 200
    cut = name[:4095 - len(str(d)) - 1]
    (d / cut).write_text("#!/bin/sh\necho ran-the-wrong-file\n")
    os.chmod(d / cut, 0o755)
    got = {}
    for runner in ("native", "python"):
        r = _sandbox(["--ro-bind", str(d), "--env", f"PATH={d}"], [name], cache=tmp_path / "cache", runner=runner)
        got[runner] = (r.returncode, r.stdout)
    assert got["native"] == got["python"] == (126, ""), got


def test_a_helper_someone_else_could_have_replaced_is_not_used(tmp_path) -> None:
    exe = native.helper(str(tmp_path))
    assert exe is not None
    os.chmod(exe, 0o777)  # writable by others: it may not be what we built
    assert native.helper(str(tmp_path)) is None
    os.chmod(exe, 0o700)
    os.chmod(os.path.dirname(exe), 0o777)  # in a directory others can write: likewise
    assert native.helper(str(tmp_path)) is None
    os.chmod(os.path.dirname(exe), 0o700)
    os.chown(exe, 65534, 65534)  # built by another user
    assert native.helper(str(tmp_path)) is None
    os.chown(exe, os.getuid(), os.getgid())
    assert native.helper(str(tmp_path)) == exe


def test_the_helper_is_clean_under_address_and_undefined_behaviour_sanitizers(tmp_path) -> None:
    # helper.c built with -fsanitize=address,undefined runs a real sandbox and refuses damaged
    # plans without a sanitizer report (they exit 99/98 and print "Sanitizer"/"runtime error")
    from sandbox.policy import python_policy, with_changes

    opts = tmp_path / "opts.c"
    opts.write_text('const char *__asan_default_options(void) { return "detect_leaks=0:exitcode=99"; }\n'
                    'const char *__ubsan_default_options(void) { return "halt_on_error=1:exitcode=98"; }\n')
    exe = tmp_path / "helper-asan"
    r = subprocess.run(["gcc", "-O1", "-g", "-fsanitize=address,undefined", "-Wall", "-Wextra", "-o", str(exe),
                        native.SOURCE, str(opts)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.skip(f"this gcc cannot build with sanitizers: {r.stderr[-300:]}")
    policy = python_policy(uid=os.getuid(), gid=os.getgid(), user="u", home="/home/u", host_env={"PATH": "/usr/bin"},
                           cwd="/", profile=None)
    root = tmp_path / "root"
    root.mkdir()
    good = native.plan_argv(str(exe), policy, ["sh", "-c", "echo ran"], status_fd=2, seccomp_fd=-1, root=str(root),
                            uid=os.getuid(), gid=os.getgid(), old_mask=())
    damaged = [good[:5], good[:14] + ["99999", "--", "true"], good[:3] + ["umpX"] + good[4:],
               good[:12] + ["-1"] + good[13:], [str(exe), "--launch", "-1", "1", "/bin/false", *good[1:12], "zz", *good[13:]],
               good[:-3] + ["/" + "a" * 5000] + good[-2:]]
    # Limits: a good plan with two, and damaged limit lists (the count, the names, the numbers).
    limited = native.plan_argv(str(exe), with_changes(policy, limits=(("cpu", 60), ("open-files", 64))),
                               ["sh", "-c", "ulimit -n; echo ran"], status_fd=2, seccomp_fd=-1, root=str(root),
                               uid=os.getuid(), gid=os.getgid(), old_mask=())
    k = limited.index("cpu=60")
    damaged += [limited[:k - 1] + ["3"] + limited[k:], limited[:k - 1] + ["-1"] + limited[k:],
                limited[:k - 1] + ["9"] + limited[k:],  # more limits than there are kinds
                limited[:k] + ["bogus=1"] + limited[k + 1:], limited[:k + 1] + ["cpu=60"] + limited[k + 2:],  # repeated
                limited[:k] + ["cpu=x"] + limited[k + 1:], limited[:k] + ["cpu=-5"] + limited[k + 1:],
                limited[:k] + ["cpu=" + "9" * 30] + limited[k + 1:], limited[:k] + ["cpu"] + limited[k + 1:],
                limited[:k] + ["cpu="] + limited[k + 1:], limited[:k - 1]]  # no limits, no command
    # tmpfs sizes: a good one, and sizes that are not a number of bytes
    sized = native.plan_argv(str(exe), python_policy(uid=os.getuid(), gid=os.getgid(), user="u", home="/home/u",
                                                     host_env={"PATH": "/usr/bin"}, cwd="/", profile=None,
                                                     limits={"tmp-size": 1 << 20}),
                             ["sh", "-c", "df -k /tmp | tail -1; echo ran"], status_fd=2, seccomp_fd=-1,
                             root=str(root), uid=os.getuid(), gid=os.getgid(), old_mask=())
    t = sized.index("/tmp") + 1
    assert sized[t] == str(1 << 20)
    damaged += [sized[:t] + [bad] + sized[t + 1:] for bad in ("12x", "-1", "1" * 30, " 1")]
    for i, args in enumerate([good, limited, sized, *damaged]):
        root.mkdir(exist_ok=True)  # (a --launch run removes it): each plan fails for its own damage
        r = subprocess.run(args, capture_output=True, text=True, timeout=60, env={})
        assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr and r.returncode not in (98, 99), \
            (i, r.returncode, r.stderr[-2000:])
        if i == 0:
            assert (r.returncode, r.stdout) == (0, "ran\n"), r.stderr
        elif i == 1:
            assert (r.returncode, r.stdout) == (0, "64\nran\n"), r.stderr
        elif i == 2:
            assert r.returncode == 0 and r.stdout.split()[1] == "1024" and r.stdout.endswith("ran\n"), r.stderr
        else:
            # 126: the 5000-byte command name reaches execve, which refuses it (ENAMETOOLONG)
            assert "ran" not in r.stdout and r.returncode in (1, 125, 126), (i, r.returncode, r.stderr[-500:])


@pytest.mark.parametrize("runner", ["native", "python"])
def test_an_ignored_sighup_is_kept_for_the_command_as_nohup_expects(tmp_path, runner) -> None:
    """`nohup pypm run ...`: SIGHUP ignored when pypm starts stays ignored for the command;
    SIGPIPE, which pypm's Python ignores, is back at default."""
    import signal as sig

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYPM_", "CC"))}
    env.update({"PYPM_CACHE_DIR": str(tmp_path), "PIP_CONFIG_FILE": os.devnull, "PYPM_SANDBOX_RUNNER": runner})
    for ignored in (True, False):
        r = subprocess.run([sys.executable, "-m", "sandbox", "--", "grep", "SigIgn", "/proc/self/status"],
                           capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
                           preexec_fn=(lambda: sig.signal(sig.SIGHUP, sig.SIG_IGN)) if ignored else None)
        assert r.returncode == 0, r.stderr
        mask = int(r.stdout.split()[1], 16)
        assert bool(mask & (1 << (sig.SIGHUP - 1))) is ignored, (ignored, r.stdout)
        assert not mask & (1 << (sig.SIGPIPE - 1)), r.stdout
