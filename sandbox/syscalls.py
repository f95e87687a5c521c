"""The few system calls the runner makes, through ctypes, each checked.

Why ctypes and not a library: python-prctl needs libcap headers and a compiler to install
and pyroute2 costs 160-260 ms to import, on a path whose whole budget is tens of
milliseconds (DESIGN §7). Python 3.11's os module has none of unshare, mount, pivot_root,
prctl or capset. Every wrapper raises SyscallError(name, errno) on failure; the runner
turns that into a SandboxError with a hint.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["SyscallError", "libc"]


class SyscallError(OSError):
    """A system call failed: `.syscall` names it (with its interesting argument)."""

    def __init__(self, syscall: str, err: int) -> None:
        super().__init__(err, os.strerror(err))
        self.syscall = syscall


libc = ctypes.CDLL(None, use_errno=True)  # the interpreter's own libc, already loaded
# Looked up here, in the caller, rather than at first use in the sandbox's processes, where each
# lookup (dlsym, a new function object, copy-on-write faults) sits on the path to the command.
for _name in ("syscall", "unshare", "mount", "umount2", "prctl", "sethostname", "socket", "ioctl"):
    getattr(libc, _name)
del _name

# Syscall numbers glibc 2.36 has no wrapper for (or gained late). x86_64 has its own
# table; aarch64 and riscv64 share the generic one (include/uapi/asm-generic/unistd.h).
_NR = {
    "x86_64": {"clone": 56, "pivot_root": 155, "capget": 125, "capset": 126, "keyctl": 250, "mount_setattr": 442,
               "close_range": 436},
    "generic": {"clone": 220, "pivot_root": 41, "capget": 90, "capset": 91, "keyctl": 219, "mount_setattr": 442,
                "close_range": 436},
}
_MACHINE = os.uname().machine
NR = _NR["x86_64"] if _MACHINE == "x86_64" else _NR["generic"] if _MACHINE in ("aarch64", "riscv64") else None

# <linux/sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
_FLAG_NAMES = (("CLONE_NEWUSER", CLONE_NEWUSER), ("CLONE_NEWNS", CLONE_NEWNS), ("CLONE_NEWPID", CLONE_NEWPID),
               ("CLONE_NEWNET", CLONE_NEWNET), ("CLONE_NEWIPC", CLONE_NEWIPC), ("CLONE_NEWUTS", CLONE_NEWUTS),
               ("CLONE_NEWCGROUP", CLONE_NEWCGROUP))
NS_FLAGS = {"user": CLONE_NEWUSER, "mount": CLONE_NEWNS, "pid": CLONE_NEWPID, "net": CLONE_NEWNET,
            "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS, "cgroup": CLONE_NEWCGROUP}

# <linux/mount.h> / <sys/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
AT_FDCWD = -100
AT_RECURSIVE = 0x8000

# <linux/prctl.h>, <linux/securebits.h>, <linux/capability.h>
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_GET_SECCOMP = 21
PR_SET_SECCOMP = 22
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_GET_SECUREBITS = 27
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# NOROOT (uid 0 gains no capability on execve), NO_SETUID_FIXUP, NO_CAP_AMBIENT_RAISE,
# KEEP_CAPS off, each with its _LOCKED bit so the command cannot undo them.
SECUREBITS_LOCKDOWN = 0b1110_1111

# <linux/keyctl.h>
KEYCTL_JOIN_SESSION_KEYRING = 1

# <linux/sockios.h>, <net/if.h>
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
AF_INET = 2
SOCK_DGRAM = 2
SOCK_CLOEXEC = 0o2000000

CLOSE_RANGE_CLOEXEC = 1 << 2

_c_ulong = ctypes.c_ulong


def _check(ret: int, what: str) -> int:
    if ret == -1:
        raise SyscallError(what, ctypes.get_errno())
    return ret


def _syscall(name: str, *args: object) -> int:
    if NR is None:
        raise SyscallError(f"{name} (unsupported architecture {_MACHINE})", 38)  # ENOSYS
    return _check(libc.syscall(_c_ulong(NR[name]), *args), name)


# PyDLL keeps the GIL held across the call, so the clone child starts with it taken by the
# one thread it has (with CDLL the GIL is released during the call).
_pylibc = ctypes.PyDLL(None, use_errno=True)
SIGCHLD = 17


def clone_into(flags: int) -> int:
    """fork() into new namespaces in one step: clone(2) with a NULL stack (fork semantics).

    Only for a single-threaded caller: no libc or Python at-fork handler runs, so the child
    must only make system calls and plain Python calls, then execve or _exit, which is all
    the runner's child does (bubblewrap does the same in C)."""
    if NR is None:
        raise SyscallError(f"clone (unsupported architecture {_MACHINE})", 38)
    ret: int = _pylibc.syscall(_c_ulong(NR["clone"]), _c_ulong(flags | SIGCHLD), _c_ulong(0), _c_ulong(0),
                          _c_ulong(0), _c_ulong(0))
    if ret == -1:
        raise SyscallError("clone(" + "|".join(n for n, f in _FLAG_NAMES if flags & f) + ")", ctypes.get_errno())
    return ret


def unshare(flags: int, what: str) -> None:
    _check(libc.unshare(ctypes.c_int(flags)), f"unshare({what})")


def mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(libc.mount(src.encode() if src is not None else None, target.encode(),
                      fstype.encode() if fstype is not None else None, _c_ulong(flags),
                      data.encode() if data is not None else None),
           f"mount({_mount_label(src, fstype, flags)}, {target})")


def _mount_label(src: str | None, fstype: str | None, flags: int) -> str:
    if flags & MS_REMOUNT:
        return "remount"
    if flags & MS_BIND:
        return f"bind {src}"
    if flags & (MS_PRIVATE | MS_SLAVE):
        return "make-private" if flags & MS_PRIVATE else "make-slave"
    return fstype or "?"


def umount2(target: str, flags: int) -> None:
    _check(libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount2({target})")


def pivot_root(new_root: str, put_old: str) -> None:
    _syscall("pivot_root", new_root.encode(), put_old.encode())


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(path: str, attr_set: int, recursive: bool = True) -> None:
    """Set mount flags on `path` and (recursive) every mount below it, in one call (Linux 5.12+)."""
    attr = _MountAttr(attr_set, 0, 0, 0)
    _syscall("mount_setattr", ctypes.c_int(AT_FDCWD), path.encode(),
             ctypes.c_uint(AT_RECURSIVE if recursive else 0), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))


def prctl(option: int, arg2: int = 0, arg3: int = 0, what: str = "prctl") -> int:
    return _check(libc.prctl(ctypes.c_int(option), _c_ulong(arg2), _c_ulong(arg3), _c_ulong(0), _c_ulong(0)), what)


def prctl_ptr(option: int, arg2: int, ptr: object, what: str) -> int:
    return _check(libc.prctl(ctypes.c_int(option), _c_ulong(arg2), ptr, _c_ulong(0), _c_ulong(0)), what)


def sethostname(name: str) -> None:
    b = name.encode()
    _check(libc.sethostname(b, ctypes.c_size_t(len(b))), "sethostname")


def keyctl_join_session(name: str | None = None) -> None:
    _syscall("keyctl", ctypes.c_int(KEYCTL_JOIN_SESSION_KEYRING), name.encode() if name else None)


def close_range(first: int, last: int) -> None:
    """Close every fd from `first` to `last` (inclusive; 0xFFFFFFFF: all above)."""
    _syscall("close_range", ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_uint(0))


def close_range_cloexec(first: int) -> None:
    """Mark every fd >= first close-on-exec (they then vanish at execve, while a setup error
    can still be reported through the status pipe until then)."""
    _syscall("close_range", ctypes.c_uint(first), ctypes.c_uint(0xFFFFFFFF), ctypes.c_uint(CLOSE_RANGE_CLOEXEC))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def capset_zero() -> None:
    """Empty the effective, permitted and inheritable sets (two 32-bit words in version 3)."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _syscall("capset", ctypes.byref(hdr), ctypes.byref(data))


def capget() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) as 64-bit masks."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _syscall("capget", ctypes.byref(hdr), ctypes.byref(data))
    return tuple(data[0].__getattribute__(f) | (data[1].__getattribute__(f) << 32)
                 for f in ("effective", "permitted", "inheritable"))


class _IfReq(ctypes.Structure):
    # struct ifreq is 40 bytes on 64-bit: a 16-byte name and a 24-byte union (flags first).
    _fields_ = [("name", ctypes.c_char * 16), ("flags", ctypes.c_short), ("_pad", ctypes.c_char * 22)]


def loopback_up() -> None:
    """Bring `lo` up in the new network namespace with one ioctl. The kernel gives it
    127.0.0.1/8 and ::1 by itself when it goes up; no netlink (pyroute2) needed."""
    fd = _check(libc.socket(ctypes.c_int(AF_INET), ctypes.c_int(SOCK_DGRAM | SOCK_CLOEXEC), ctypes.c_int(0)),
                "socket(AF_INET)")
    try:
        req = _IfReq(b"lo", 0)
        _check(libc.ioctl(ctypes.c_int(fd), _c_ulong(SIOCGIFFLAGS), ctypes.byref(req)), "ioctl(lo, SIOCGIFFLAGS)")
        req.flags |= IFF_UP
        _check(libc.ioctl(ctypes.c_int(fd), _c_ulong(SIOCSIFFLAGS), ctypes.byref(req)), "ioctl(lo, SIOCSIFFLAGS)")
        _check(libc.ioctl(ctypes.c_int(fd), _c_ulong(SIOCGIFFLAGS), ctypes.byref(req)), "ioctl(lo, SIOCGIFFLAGS)")
        if not req.flags & IFF_UP:
            raise SyscallError("ioctl(lo, SIOCSIFFLAGS): lo is still down", 5)  # EIO
    finally:
        os.close(fd)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_load(program: bytes) -> None:
    """Install a classic-BPF seccomp filter (struct sock_filter[], 8 bytes each).

    Needs no_new_privs (set before). The program was compiled by sandbox.seccomp ahead of
    time; here nothing but this prctl runs, so the compiler is never imported on this path.
    """
    if len(program) % 8 or not program:
        raise SyscallError("prctl(PR_SET_SECCOMP): the cached BPF program is malformed", 22)
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    prctl_ptr(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), "prctl(PR_SET_SECCOMP)")
