"""The compiled runner (helper.c): built once per source with the host's C compiler, then started for a policy.

`runner.run` uses it when it can (a single-threaded caller and a working C compiler, or a
helper already built) and falls back to the Python runner otherwise: both execute the same
policy with the same steps and checks, so the choice changes speed, never isolation.
`PYPM_SANDBOX_RUNNER=python` forces the Python runner, `=native` insists on the helper (an
error when it cannot be built), for tests and for comparing the two.

Why a cache and not the wheel: pypm is a pure-Python package, and the helper must match the
kernel headers and libc of the machine it runs on. Like the compiled seccomp programs it lives
in pypm's cache directory, keyed by the sha256 of its source and the compiler's identity,
written atomically (temp file, rename) so concurrent runs never see half a binary.
"""

from __future__ import annotations

import errno as E
import os

from .cachedir import ours
from .errors import SandboxError

TYPE_CHECKING = False  # typing costs ~2 ms at import; annotations are strings here
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Sequence

    from .policy import Policy

__all__ = ["helper", "prebuild", "build", "spawn", "MODE_ENV", "FALLBACK"]

MODE_ENV = "PYPM_SANDBOX_RUNNER"
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helper.c")
# Hardening the distribution compilers may not default to; -Werror so a compiler that
# warns about this source does not produce a binary we have not looked at.
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Werror", "-D_FORTIFY_SOURCE=2", "-fstack-protector-strong", "-fPIE", "-pie")
_NS_LETTERS = {"user": "u", "mount": "m", "pid": "p", "net": "n", "ipc": "i", "uts": "t", "cgroup": "c"}


class _Fallback(Exception):
    """The helper cannot do this run (a kernel without mount_setattr): use the Python runner."""


FALLBACK = _Fallback


def _key(source: bytes) -> str:
    try:
        from _sha256 import sha256  # not hashlib: no OpenSSL on the hot path
    except ImportError:  # pragma: no cover - other Python builds
        from hashlib import sha256
    digest: str = sha256(source + f"\0{os.uname().machine}\0{' '.join(CFLAGS)}".encode()).hexdigest()
    return digest[:32]


# (source, key) once per process: a run that records a launch plan asks twice (record, run).
_source: tuple[bytes, str] | None = None


def _read_source() -> tuple[bytes, str] | None:
    global _source
    if _source is None:
        try:
            with open(SOURCE, "rb") as f:
                data = f.read()
        except OSError:
            return None  # an install without the source: the Python runner does the same work
        _source = (data, _key(data))
    return _source


# Builds started ahead by prebuild, by cache directory: (the compiler's process, its output, the
# binary's path, the compiler). helper() finishes one instead of starting the compiler again.
_pending: dict[str, tuple[Any, str, str, str]] = {}


def prebuild(cache_dir: str) -> None:
    """Start the compiler for the helper of `cache_dir` when it is not built yet, for a command
    that will run sandboxed after work of its own (a sync, a tool's environment made): its ~0.5 s
    then overlaps that work. A process, not a thread: a sync forks its download process only
    while no other thread runs (pypm.fetchchild). helper() finishes the build; so does the
    interpreter's exit, for a command that ends first (an error in its sync). Nothing when the
    helper is there, cannot be built here, or is not wanted."""
    if cache_dir in _pending or os.environ.get(MODE_ENV, "") not in ("", "native"):
        return
    where = _paths(cache_dir)
    if where is None or os.access(where[2], os.X_OK) or not _buildable(where[1], where[2]):
        return
    started = _start(where[0], where[2])
    if started is None:
        return
    if not _pending:
        import atexit

        atexit.register(_finish_all)
    _pending[cache_dir] = started


def _finish_all() -> None:
    for cache_dir in list(_pending):
        _finish(*_pending.pop(cache_dir))


def helper(cache_dir: str, *, build_if_missing: bool = True) -> str | None:
    """The path of the built helper for this source, building it on first use; None when it
    cannot be built here (no compiler: the Python runner is used, and the attempt is not
    repeated on every run)."""
    pending = _pending.pop(cache_dir, None)
    if pending is not None:  # started by prebuild: its binary, not a second compiler
        _finish(*pending)
    where = _paths(cache_dir)
    if where is None:
        return None
    source, d, exe = where
    if os.access(exe, os.X_OK):
        # It runs outside the sandbox: only one that this user built and nobody else can
        # have replaced (a cache on a shared disk, a directory another user made first).
        return exe if _ours(exe) and _ours(d) else None
    if not build_if_missing or not _buildable(d, exe):
        return None
    return build(source, exe)


def _paths(cache_dir: str) -> tuple[bytes, str, str] | None:
    """(helper.c's bytes, the helpers' directory, this source's binary there); None without the source."""
    src = _read_source()
    if src is None:
        return None
    d = os.path.join(cache_dir, "sandbox-helper")
    return src[0], d, os.path.join(d, src[1])


def _buildable(d: str, exe: str) -> bool:
    """Whether a missing `exe` may be built: not failed before (.failed), in a directory of ours."""
    return not os.path.exists(exe + ".failed") and (not os.path.isdir(d) or _ours(d))


def _ours(path: str) -> bool:
    try:
        return ours(os.stat(path))
    except OSError:
        return False


def _compiler() -> str | None:
    cc = os.environ.get("CC", "").strip()
    candidates = [cc] if cc else ["cc", "gcc", "clang"]
    for name in candidates:
        if os.sep in name:
            if os.access(name, os.X_OK):
                return name
            continue
        for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
            p = os.path.join(d or ".", name)
            if os.access(p, os.X_OK) and not os.path.isdir(p):
                return p
    return None


def build(source: bytes, exe: str) -> str | None:
    """Compile helper.c into `exe` (atomically); None, and a `.failed` marker, when it fails."""
    started = _start(source, exe)
    return _finish(*started) if started is not None else None


def _start(source: bytes, exe: str) -> tuple[Any, str, str, str] | None:
    """The compiler started on `source` (written to its stdin), as (process, temp output, exe,
    compiler); None when none could be (the `.failed` marker written when there is no compiler)."""
    import subprocess  # only here: a build happens once per pypm version and machine

    d = os.path.dirname(exe)
    try:
        os.makedirs(d, 0o700, exist_ok=True)
    except OSError:
        return None
    cc = _compiler()
    tmp = f"{exe}.{os.getpid()}.tmp"
    if cc is None:
        _failed(exe, "none found (set CC)")
        return None
    try:
        # The bytes that were hashed into the binary's name, through stdin: not the file again,
        # which could have changed since it was read. In pypm's process group: Ctrl-C stops it too.
        proc = subprocess.Popen([cc, *CFLAGS, "-o", tmp, "-x", "c", "-"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        _failed(exe, cc)
        return None
    try:
        assert proc.stdin is not None
        proc.stdin.write(source)
        proc.stdin.close()
    except OSError:  # the compiler exited early (a broken one): its status says so
        pass
    return proc, tmp, exe, cc


def _finish(proc: Any, tmp: str, exe: str, cc: str) -> str | None:
    """Wait for a compiler `_start` started; the binary renamed into place, or None (and the
    `.failed` marker, unless the compiler was killed by a signal: Ctrl-C is not "no compiler")."""
    import subprocess

    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = 1
    if code == 0 and os.access(tmp, os.X_OK):
        os.chmod(tmp, 0o700)
        os.rename(tmp, exe)
        return exe
    try:
        os.unlink(tmp)
    except OSError:
        pass
    if code >= 0:  # (killed by a signal: the next run tries again)
        _failed(exe, cc)
    return None


def _failed(exe: str, cc: str) -> None:
    try:  # remember, so that every run does not try again (cleared by `pypm cache clean`)
        with open(exe + ".failed", "w") as f:
            f.write(f"compiler: {cc}\n")
    except OSError:
        pass


def _mask_hex(signals: object) -> str:
    mask = 0
    for s in signals:  # type: ignore[attr-defined]
        mask |= 1 << (int(s) - 1)
    return format(mask, "x")


def plan_argv(exe: str, policy: Policy, argv: Sequence[str], *, status_fd: int, seccomp_fd: int, root: str,
              uid: int, gid: int, old_mask: object) -> list[str]:
    """helper.c's command line for `policy` (its usage comment documents the layout)."""
    flags = "".join(_NS_LETTERS[ns] for ns in policy.namespaces)
    flags += ("P" if policy.die_with_parent else "") + ("K" if policy.new_keyring else "")
    flags += "D" if policy.disable_userns else ""
    in_uid = uid if policy.uid is None else policy.uid
    in_gid = gid if policy.gid is None else policy.gid
    env = [f"{k}={v}" for k, v in policy.env]
    out = [exe, str(status_fd), str(seccomp_fd), flags, str(uid), str(gid), str(in_uid), str(in_gid), root,
           policy.cwd, policy.hostname, _mask_hex(old_mask), str(len(env)), *env, str(len(policy.mounts))]
    for m in policy.mounts:
        mflags = ("w" if m.writable else "") + ("o" if m.optional else "") + ("s" if m.mirror_symlink else "")
        src = str(m.size) if m.size and m.kind in ("tmpfs", "dev") else m.src or ""  # their SRC: the size
        out += [m.kind, m.dst, src, mflags or "-", format(m.mode, "o")]
    out += [str(len(policy.limits)), *(f"{name}={value}" for name, value in policy.limits)]
    for s in out:
        if "\0" in s:
            raise SandboxError("a path or file content in the sandbox policy contains a NUL byte")
    out.append("--")
    out.extend(argv)
    return out


def _programs_fd(programs: Sequence[bytes]) -> int:
    """The seccomp programs in an anonymous memory file (no path: only the processes handed its fd can
    write it, and they are ours until the command's execve) the helper reads: "u32 length, bytes" each."""
    if not programs:
        return -1
    fd = os.memfd_create("pypm-seccomp", os.MFD_CLOEXEC)
    data = b"".join(len(p).to_bytes(4, "little") + p for p in programs)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return fd


def spawn(exe: str, policy: Policy, argv: Sequence[str], programs: Sequence[bytes], *,
          root: str, uid: int, gid: int, wfd: int, old_mask: object,
          stdio: tuple[int | None, int | None, int | None]) -> int:
    """Start the helper for `policy` (the caller has blocked the supervised signals, which the
    helper inherits); returns its pid. The status pipe's write end `wfd` and the programs' fd
    are the only fds besides 0-2 it inherits."""
    import _signal

    sfd = _programs_fd(programs)
    try:
        os.set_inheritable(wfd, True)
        if sfd >= 0:
            os.set_inheritable(sfd, True)
        args = plan_argv(exe, policy, argv, status_fd=wfd, seccomp_fd=sfd, root=root, uid=uid, gid=gid,
                         old_mask=old_mask)
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)
                   if fd is not None and fd != target]
        try:
            # setsigdef: Python ignores SIGPIPE/SIGXFSZ and an ignored disposition survives execve.
            # The command's environment travels in the plan; the helper itself needs none.
            return os.posix_spawn(exe, args, {}, file_actions=actions,
                                  setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ))
        except OSError as e:
            raise SandboxError(f"cannot start the sandbox helper {exe}: {e.strerror}", syscall="posix_spawn",
                               errno=e.errno, hint=f"remove it (pypm cache clean) or set {MODE_ENV}=python") from None
    finally:
        if sfd >= 0:
            os.close(sfd)


def needs_fallback(syscall: str, err: int) -> bool:
    """A report that means "this kernel cannot do it the helper's way" rather than a failure."""
    return syscall.startswith("mount_setattr") and err == E.ENOSYS
