"""The sandbox's new root: a tmpfs with binds, /proc, /dev, files and symlinks, then pivot_root.

Runs inside the new user and mount namespaces (in the sandbox's init, before the command
exists), in the order of the policy's mounts. Every step is checked; a failure raises
StepFailed, which the runner reports to the caller.
"""

from __future__ import annotations

import errno as E
import os
import stat

from . import syscalls as sc
from .policy import Mount, Policy

__all__ = ["StepFailed", "write_file", "build_root", "pivot"]


class StepFailed(Exception):
    """A setup step failed: `syscall` names it, `err` is the errno, `message` says what it was doing."""

    def __init__(self, syscall: str, err: int, message: str = "") -> None:
        super().__init__(syscall)
        self.syscall, self.err, self.message = syscall, err, message


def write_file(path: str, data: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise StepFailed(f"write({path})", e.errno or 0, f"writing {data.strip()!r}") from None


# Places in the new root that may hold symlinks: those we made (mirrored /lib -> usr/lib,
# symlink ops) and every bind (a host tree). Only a path through one of them can lead
# outside the root, so only such paths are resolved.
_LINKS: list[str] = []


def _inside(root: str, path: str) -> str:
    """`root + path`, refusing a path whose existing part resolves outside the new root
    (an absolute symlink in it would otherwise send a mkdir or mount to the host)."""
    full = root + path
    if not any(full == link or full.startswith(link + "/") for link in _LINKS):
        return full  # nothing on the way can be a symlink: the rest is our own fresh tmpfs
    head = full
    while not os.path.lexists(head):
        head = os.path.dirname(head)
    real = os.path.realpath(head)
    if real != root and not real.startswith(root + "/"):
        raise StepFailed(f"mkdir({path})", E.EXDEV, f"{path} resolves outside the sandbox root")
    return full


def _symlink(root: str, target: str, path: str) -> None:
    _mkdirs(root, os.path.dirname(path))
    full = _inside(root, path)
    os.symlink(target, full)
    _LINKS.append(full)


def _mkdirs(root: str, path: str, mode: int = 0o755) -> str:
    full = _inside(root, path)
    try:
        os.makedirs(full, mode, exist_ok=True)
    except OSError as e:
        raise StepFailed(f"mkdir({path})", e.errno or 0, f"creating the mount point {path}") from None
    return full


def _touch(root: str, path: str) -> str:
    _mkdirs(root, os.path.dirname(path))
    full = _inside(root, path)
    try:
        os.close(os.open(full, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
    except OSError as e:
        raise StepFailed(f"open({path})", e.errno or 0, f"creating the mount point {path}") from None
    return full


_RO = sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV
_RW = sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV
_ST = {sc.MOUNT_ATTR_RDONLY: os.ST_RDONLY, sc.MOUNT_ATTR_NOSUID: os.ST_NOSUID,
       sc.MOUNT_ATTR_NODEV: os.ST_NODEV, sc.MOUNT_ATTR_NOEXEC: os.ST_NOEXEC}


def _lock_flags(path: str, attrs: int, label: str) -> None:
    """Set read-only/nosuid/nodev/noexec on a bind and every mount below it, then check
    they stuck. mount_setattr(AT_RECURSIVE) does the whole subtree in one call and never
    clears a flag the host set (locked flags such as a host noexec stay as they are)."""
    try:
        sc.mount_setattr(path, attrs, recursive=True)
    except sc.SyscallError as e:
        if e.errno != E.ENOSYS:
            raise
        _remount_fallback(path, attrs)
    have = os.statvfs(path).f_flag
    for attr, st in _ST.items():
        if attrs & attr and not have & st:
            raise StepFailed(f"mount_setattr({label})", E.EPERM, f"the flag {attr:#x} did not stick on {label}")


def _remount_fallback(path: str, attrs: int) -> None:
    """Kernels before 5.12: remount each mount of the subtree, keeping the flags the
    kernel locked (a remount that drops a locked flag fails with EPERM)."""
    want = (sc.MS_RDONLY if attrs & sc.MOUNT_ATTR_RDONLY else 0) | \
        (sc.MS_NOSUID if attrs & sc.MOUNT_ATTR_NOSUID else 0) | (sc.MS_NODEV if attrs & sc.MOUNT_ATTR_NODEV else 0) | \
        (sc.MS_NOEXEC if attrs & sc.MOUNT_ATTR_NOEXEC else 0)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    for mp in points:
        if mp == path or mp.startswith(path + "/"):
            keep = 0
            fl = os.statvfs(mp).f_flag
            for st, ms in ((os.ST_NOEXEC, sc.MS_NOEXEC), (os.ST_NOATIME, sc.MS_NOATIME),
                           (os.ST_NODIRATIME, sc.MS_NODIRATIME), (os.ST_RELATIME, sc.MS_RELATIME),
                           (os.ST_NOSUID, sc.MS_NOSUID), (os.ST_NODEV, sc.MS_NODEV), (os.ST_RDONLY, sc.MS_RDONLY)):
                if fl & st:
                    keep |= ms
            sc.mount(None, mp, None, sc.MS_REMOUNT | sc.MS_BIND | keep | want)


def _bind(root: str, m: Mount) -> None:
    src = m.src or ""
    try:
        st = os.lstat(src)
    except OSError as e:
        if m.optional and e.errno in (E.ENOENT, E.ENOTDIR):
            return
        raise StepFailed(f"mount(bind {src})", e.errno or 0, f"bind source {src}") from None
    if m.mirror_symlink and stat.S_ISLNK(st.st_mode):
        _symlink(root, os.readlink(src), m.dst)
        return
    try:
        is_dir = stat.S_ISDIR(os.stat(src).st_mode)
    except OSError as e:
        if m.optional and e.errno in (E.ENOENT, E.ENOTDIR):
            return  # a dangling symlink on the host
        raise StepFailed(f"mount(bind {src})", e.errno or 0, f"bind source {src}") from None
    full = _mkdirs(root, m.dst) if is_dir else _touch(root, m.dst)
    sc.mount(src, full, None, sc.MS_BIND | sc.MS_REC)
    _lock_flags(full, _RW if m.writable else _RO, m.dst)
    _LINKS.append(full)


_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def _size(m: Mount) -> str:
    """The tmpfs option for the mount's size ([tool.pypm.sandbox.limits] tmp-size), or none."""
    return f",size={m.size}" if m.size else ""


def _dev(root: str, m: Mount) -> None:
    """A minimal /dev: the harmless character devices bound from the host, a private
    devpts instance (its own ptmx, none of the host's terminals), and a tmpfs /dev/shm."""
    full = _mkdirs(root, m.dst)
    sc.mount("tmpfs", full, "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC, "mode=0755" + _size(m))
    for name in _DEVICES:
        node = _touch(root, f"{m.dst}/{name}")
        sc.mount(f"/dev/{name}", node, None, sc.MS_BIND)
        # The device binds must keep "dev" (nodev would make them unusable); nosuid,noexec.
        _lock_flags(node, sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NOEXEC, f"{m.dst}/{name}")
    pts = _mkdirs(root, f"{m.dst}/pts")
    sc.mount("devpts", pts, "devpts", sc.MS_NOSUID | sc.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")
    os.symlink("pts/ptmx", f"{full}/ptmx")
    shm = _mkdirs(root, f"{m.dst}/shm")
    sc.mount("tmpfs", shm, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=1777" + _size(m))
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{full}/{name}")


# Parts of a fresh /proc that would let uid 0 (real root mapped to itself) change the host
# kernel: sysctls, the magic SysRq trigger, IRQ affinity, bus settings. Read-only binds
# over themselves, as bubblewrap does.
_PROC_RO = ("sys", "sysrq-trigger", "irq", "bus")


def _proc(root: str, m: Mount, policy: Policy) -> None:
    full = _mkdirs(root, m.dst)
    sc.mount("proc", full, "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    if policy.disable_userns:
        # No nested user namespaces, enforced by the kernel beside seccomp: the limit is per
        # user namespace and this one is ours; once /proc/sys is read-only and every
        # capability gone, nothing inside can raise it again.
        write_file(f"{full}/sys/user/max_user_namespaces", "0")
    for name in _PROC_RO:
        p = f"{full}/{name}"
        if os.path.lexists(p):
            sc.mount(p, p, None, sc.MS_BIND | sc.MS_REC)
            _lock_flags(p, _RO, f"{m.dst}/{name}")


def build_root(policy: Policy, root: str) -> None:
    # Nothing we mount may propagate back to the host's mount namespace (and pivot_root
    # refuses a shared parent).
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    sc.mount("tmpfs", root, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=0755")
    for m in policy.mounts:
        if m.kind == "bind":
            _bind(root, m)
        elif m.kind == "tmpfs":
            sc.mount("tmpfs", _mkdirs(root, m.dst), "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, f"mode={m.mode:o}" + _size(m))
        elif m.kind == "proc":
            _proc(root, m, policy)
        elif m.kind == "dev":
            _dev(root, m)
        elif m.kind == "devpts":
            sc.mount("devpts", _mkdirs(root, m.dst), "devpts", sc.MS_NOSUID | sc.MS_NOEXEC,
                     "newinstance,ptmxmode=0666,mode=620")
        elif m.kind == "file":
            _mkdirs(root, os.path.dirname(m.dst))
            full = _inside(root, m.dst)
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, m.mode)
            try:
                os.write(fd, (m.src or "").encode())
                os.fchmod(fd, m.mode)
            finally:
                os.close(fd)
        elif m.kind == "symlink":
            _symlink(root, m.src or "", m.dst)
        elif m.kind == "dir":
            _mkdirs(root, m.dst, m.mode)


def pivot(root: str) -> None:
    # pivot_root(".", "."): the old root ends up stacked under the new one at "/", and
    # detaching "." removes it; no directory for the old root is needed (pivot_root(2)).
    os.chdir(root)
    sc.pivot_root(".", ".")
    sc.umount2(".", sc.MNT_DETACH)
    os.chdir("/")
    # The root itself (holding mount points, /etc/passwd, ...) becomes read-only.
    sc.mount(None, "/", None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV)
    if not os.statvfs("/").f_flag & os.ST_RDONLY:
        raise StepFailed("mount(remount /, ro)", E.EPERM, "the new root did not become read-only")
