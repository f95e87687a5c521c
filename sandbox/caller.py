"""The caller's side of a sandbox run: the temporary root, the status pipe, waiting, errors, and the choice of runner.

`run` starts the compiled helper (sandbox/native.py, helper.c) when it can and the Python
runner (sandbox/runner.py) otherwise; both execute the same policy with the same steps,
checks and error reports. This module imports neither ctypes nor the syscall layer: on the
helper's path (every `pypm run` once the helper is built) they never load.
"""

from __future__ import annotations

import errno as E
import os
import sys

# The C module behind `signal`: the same calls with plain ints, without `signal`'s enum
# classes (enum is ~2 ms of `pypm run`'s hot path, which otherwise loads neither enum nor re).
import _signal as signal
import _thread

from .errors import SandboxError

TYPE_CHECKING = False  # typing itself costs ~2 ms at import; annotations are strings here
if TYPE_CHECKING:  # pragma: no cover
    from typing import Callable, Sequence

    from .policy import Policy

__all__ = ["run", "CommandNotFound", "TEMP_PREFIX", "watch_spawns"]

TEMP_PREFIX = "pypm-sandbox."
_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD}
_WATCH = _thread._local()  # (threading.local's C implementation, without importing threading)


class watch_spawns:
    """Within it, on this thread, `seen(pid)` is called with each sandbox's first process as
    soon as it exists, before this thread can reap it (so the pid still names that process):
    pypm.build.RunningBuilds holds a pidfd of it, to stop the build when the command fails or
    is interrupted. Nested uses restore the outer one."""

    def __init__(self, seen: Callable[[int], None]) -> None:
        self.seen = seen

    def __enter__(self) -> None:
        self.prev = getattr(_WATCH, "seen", None)
        _WATCH.seen = self.seen

    def __exit__(self, *exc: object) -> None:
        _WATCH.seen = self.prev


def _spawned(pid: int) -> None:
    seen = getattr(_WATCH, "seen", None)
    if seen is not None:
        seen(pid)
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_SEP = "\x1f"
_EXIT_SETUP = 125  # exit status of a sandbox process whose setup step failed (reported via the pipe)


def run(policy: Policy, argv: Sequence[str], *, cache_dir: str | None = None,
        stdin: int | None = None, stdout: int | None = None, stderr: int | None = None) -> int:
    """Run `argv` under `policy`; return its exit status (128+N if killed by signal N).

    `stdin`/`stdout`/`stderr` are fds to give the command instead of ours. Raises
    SandboxError when any setup step fails (nothing runs then) and CommandNotFound when
    execve fails.
    """
    if not argv:
        raise SandboxError("no command to run", hint="give the command after --")
    from . import native

    mode = os.environ.get(native.MODE_ENV, "")
    if mode not in ("", "native", "python"):
        raise SandboxError(f"{native.MODE_ENV}={mode!r} is not a runner", hint='use "native" or "python" (or unset it)')
    if cache_dir is None:
        from .cachedir import default_cache_dir

        cache_dir = default_cache_dir()
    policy = protect_cache(policy, cache_dir)
    if policy.limits:
        from .policy import check_limits

        check_limits(policy.limits)
    if mode != "python":
        # The helper is one process started with posix_spawn; a caller with other threads
        # is fine for it, but keep one rule for both runners: threads -> the Python runner's
        # fork-then-unshare path, which is written for them.
        exe = native.helper(cache_dir) if _single_threaded() else None
        if exe is not None:
            try:
                return _run_native(exe, policy, argv, cache_dir, (stdin, stdout, stderr))
            except native.FALLBACK:
                pass  # this kernel needs the Python runner's remount fallback
        elif mode == "native":
            raise SandboxError("the compiled sandbox helper is not available",
                               hint=f"install a C compiler (cc) or unset {native.MODE_ENV}; see "
                                    f"{os.path.join(cache_dir, 'sandbox-helper')}/*.failed")
    from .runner import run as python_run  # ctypes and the syscall layer load only here

    return python_run(policy, argv, cache_dir=cache_dir, stdin=stdin, stdout=stdout, stderr=stderr)


def protect_cache(policy: Policy, cache_dir: str) -> Policy:
    """`policy` with pypm's cache bound read-only over itself wherever a writable bind shows it.

    The cache holds what runs or loads outside the sandbox (the compiled helper, the launcher's
    plans, compiled seccomp programs, the store whose files are linked into venvs): a command
    that could write it would escape at the next `pypm run`. A cache inside the project (CI
    setups keep it there) or below a writable --bind would be writable inside; this read-only
    bind comes last, so it wins over the binds (even an explicit --bind of the cache itself).
    """
    real = os.path.realpath(cache_dir)
    extra = []
    for m in policy.mounts:
        src = m.src or ""
        if m.kind == "bind" and m.writable and src and (real == src or real.startswith(src.rstrip("/") + "/")):
            inside = os.path.normpath(m.dst + "/" + real[len(src):])
            extra.append((inside, real))
    if not extra:
        return policy
    from .policy import Mount
    from .record import replace

    try:
        os.makedirs(real, 0o700, exist_ok=True)  # a missing one could be made inside, then trusted outside
    except OSError as e:
        raise SandboxError(f"cannot create pypm's cache directory {real}", syscall="mkdir", errno=e.errno,
                           hint="set PYPM_CACHE_DIR to a writable directory") from None
    mounts = policy.mounts + tuple(Mount("bind", dst, src) for dst, src in extra)
    return replace(policy, mounts=mounts)


def _run_native(exe: str, policy: Policy, argv: Sequence[str], cache_dir: str,
                stdio: tuple[int | None, int | None, int | None]) -> int:
    from . import native
    from .seccomp import programs_for

    programs = programs_for(policy.seccomp, cache_dir)
    root = _make_root()
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    # Blocked before the helper exists (it inherits the mask): no signal is lost in between.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        pid = native.spawn(exe, policy, list(argv), programs, root=root, uid=os.getuid(),
                           gid=os.getgid(), wfd=wfd, old_mask=old_mask, stdio=stdio)
        _spawned(pid)
        os.close(wfd)
        wfd = -1
        report = _read_all(rfd)  # EOF: the command was exec'd, or every sandbox process is gone
        if report:
            _waitpid(pid)
            _, syscall, err_s = (report.decode("utf-8", "replace").split(_SEP) + ["", "", ""])[:3]
            if native.needs_fallback(syscall, int(err_s) if err_s.lstrip("-").isdigit() else 0):
                raise native.FALLBACK()
            raise _error_from(report, argv)
        # The command has been exec'd, so the sandbox has pivoted away from the temporary
        # root: remove it now, while the command runs (a later kill -9 leaves nothing).
        _remove_root(root)
        return _supervise(pid)
    finally:
        if wfd >= 0:
            os.close(wfd)
        os.close(rfd)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        _remove_root(root)


class CommandNotFound(SandboxError):
    """The command could not be executed inside the sandbox (exit 127 like a shell; 126 if not executable)."""

    def __init__(self, message: str, *, hint: str | None = None, code: int = 127) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = code


def _single_threaded() -> bool:
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _tmp_base() -> str:
    return os.environ.get("TMPDIR") or "/tmp"


def _make_root() -> str:
    """A fresh, private (0700) directory for the new root: `<tmp>/pypm-sandbox.<pid>.<random>`.

    Hand-written instead of tempfile.mkdtemp: the same O_EXCL-style mkdir with a random
    name, without importing tempfile (random, shutil, ...) on the run path. Directories
    left by a caller that was killed (its pid is gone) are removed first.
    """
    base = _tmp_base()
    _sweep(base)
    for _ in range(100):
        path = os.path.join(base, f"{TEMP_PREFIX}{os.getpid()}.{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise SandboxError(f"cannot create the sandbox's temporary root under {base}", syscall="mkdir",
                               errno=e.errno, hint="set TMPDIR to a writable directory") from None
    raise SandboxError(f"cannot create a unique temporary root under {base}")


def _sweep(base: str) -> None:
    """Remove empty roots of sandboxes whose caller died by SIGKILL (rmdir never removes content)."""
    uid = os.getuid()
    try:
        entries = os.scandir(base)
    except OSError:
        return
    with entries:
        for ent in entries:
            if not ent.name.startswith(TEMP_PREFIX):
                continue
            try:
                pid = int(ent.name[len(TEMP_PREFIX):].split(".", 1)[0])
                if ent.stat(follow_symlinks=False).st_uid != uid or _alive(pid):
                    continue
                os.rmdir(ent.path)
            except (ValueError, OSError):
                continue


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_root(root: str) -> None:
    try:
        os.rmdir(root)
    except FileNotFoundError:
        pass
    except OSError as e:  # never leave it silently: say where it is
        print(f"sandbox: warning: could not remove the temporary root {root}: {e.strerror}", file=sys.stderr)


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        try:
            b = os.read(fd, 65536)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _waitpid(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return _exit_code(status)


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _supervise(pid: int, *, poll: float | None = None, init: bool = False) -> int:
    """Wait for `pid`, passing down signals that a process sent us; return its exit code.

    `init`: we are PID 1 of the namespace, so also reap every orphan. `poll`: wake up now
    and then to check on `pid` ourselves, for when the caller has other threads that may
    take SIGCHLD (a thread that does not block it consumes it).
    """
    taken = _SIGNALS
    if poll is not None:
        import threading  # (a caller with threads has it imported already)

        if threading.current_thread() is not threading.main_thread():
            # A thread of a caller that has a main thread of its own (pypm building two sdists at
            # once) takes only SIGCHLD. A SIGINT or SIGTERM sent to the process is the main
            # thread's: its handler stops every build (pypm.build.RunningBuilds). Taken
            # here, it reached this one build's command alone, and the main thread, waiting on
            # another build, never heard of it (seen under load in CI: a SIGTERM'd sync waited
            # out its other backend's 120 s). They stay blocked in this thread, so the kernel
            # leaves them pending for a thread that does not block them.
            taken = {signal.SIGCHLD}
    while True:
        info: signal.struct_siginfo | None
        if poll is None:
            info = signal.sigwaitinfo(taken)
        else:
            info = signal.sigtimedwait(taken, poll)
        if info is None or info.si_signo == signal.SIGCHLD:
            while True:
                try:
                    got, status = os.waitpid(-1 if init else pid, os.WNOHANG)
                except ChildProcessError:
                    return 1  # pragma: no cover - someone else reaped it
                if got == pid:
                    return _exit_code(status)
                if got == 0 or not init:
                    break
        elif info.si_code <= 0:  # SI_USER, SI_QUEUE, SI_TKILL: sent by a process, not the tty
            try:
                os.kill(pid, info.si_signo)
            except ProcessLookupError:
                pass


def _error_from(report: bytes, argv: Sequence[str]) -> SandboxError:
    kind, syscall, err_s, message = (report.decode("utf-8", "replace").split(_SEP) + ["", "", "", ""])[:4]
    err = int(err_s) if err_s.lstrip("-").isdigit() else 0
    if kind == "exec":
        if err == E.ENOENT:
            return CommandNotFound(f"{argv[0]}: command not found inside the sandbox",
                                   hint="is it installed in the venv (pypm sync), or on the PATH inside? "
                                        "Host paths outside /usr and the project are not visible "
                                        "(add them with --ro-bind)")
        return CommandNotFound(f"cannot execute {argv[0]} inside the sandbox: {os.strerror(err)}", code=126,
                               hint="check it is an executable file on a path bound into the sandbox")
    if kind == "internal":
        return SandboxError(f"the sandbox failed while setting up: {message}",
                            hint="run again with --verbose and report it")
    return SandboxError(f"cannot set up the sandbox ({message})" if message else "cannot set up the sandbox",
                        syscall=syscall, errno=err, hint=_hint(syscall, err))


def _hint(syscall: str, err: int) -> str | None:
    from .userns import USERNS_SYSCALLS, diagnose

    if err in (E.EPERM, E.EACCES, E.ENOSPC, E.EINVAL) and syscall.startswith(USERNS_SYSCALLS):
        return diagnose(err)
    if syscall.startswith("mount(bind") and err in (E.ENOENT, E.EACCES, E.EPERM):
        return ("the bind source must exist and be readable by you (directories on the way need +x); "
                "check --bind/--ro-bind and [tool.pypm.sandbox]")
    if syscall.startswith("mount_setattr") and err == E.ENOSYS:
        return "this kernel lacks mount_setattr (Linux 5.12+); upgrade the kernel or run with --no-sandbox"
    if syscall.startswith("mkdir") and err == E.EROFS:
        return "a bind destination lies inside a read-only bind; choose a destination outside it"
    if syscall.startswith("prctl(PR_SET_SECCOMP") or syscall.startswith("seccomp"):
        return ("the kernel refused the seccomp filter (CONFIG_SECCOMP_FILTER missing?); "
                "try --profile default or run with --no-sandbox")
    if syscall.startswith("mount(proc") and err == E.EPERM:
        return ("mounting /proc needs the host's /proc fully visible (containers mask parts of it); "
                "run on the host or in a container started with an unmasked /proc, or use --no-sandbox")
    if syscall.startswith("chdir("):
        return ("the working directory must exist inside the sandbox: run from the project, or bind the "
                "directory (--bind/--ro-bind)")
    if syscall.startswith("keyctl") and err == E.ENOSYS:
        return "this kernel lacks keyrings (CONFIG_KEYS)"
    return None
