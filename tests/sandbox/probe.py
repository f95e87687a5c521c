"""Run inside a sandbox: try each thing a sandboxed command must not be able to do; print JSON.

Usage: python probe.py '<json config>'. Each probe's result is "ok" (the operation
succeeded), an errno name ("EPERM", ...) or a value; the test decides what is expected.
Standard library only: it runs under whatever interpreter the sandbox was given.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import sys

libc = ctypes.CDLL(None, use_errno=True)
X86 = os.uname().machine == "x86_64"
NR = {  # x86_64, generic (aarch64)
    "clone": (56, 220), "unshare": (272, 97), "keyctl": (250, 219), "bpf": (321, 280),
    "perf_event_open": (298, 241), "userfaultfd": (323, 282), "open_by_handle_at": (304, 265),
    "ioctl": (16, 29), "ptrace": (101, 117), "mount": (165, 40), "setns": (308, 268), "clone3": (435, 435),
}
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET, SIGCHLD = 0x10000000, 0x20000, 0x40000000, 17
TIOCSTI = 0x5412


def nr(name: str) -> int:
    return NR[name][0 if X86 else 1]


def ename(e: int) -> str:
    return errno.errorcode.get(e, str(e))


def raw(name: str, *args: int) -> str:
    """A raw syscall with integer/pointer args: "ok" or the errno name."""
    ret = libc.syscall(ctypes.c_long(nr(name)), *[ctypes.c_ulong(a) if isinstance(a, int) else a for a in args])
    if ret == -1:
        return ename(ctypes.get_errno())
    if name == "clone" and ret == 0:  # we are a child in new namespaces: get out at once
        os._exit(0)
    return "ok"


def attempt(fn) -> str:
    try:
        r = fn()
    except OSError as e:
        return ename(e.errno) if e.errno else type(e).__name__
    return "ok" if r is None else r


def write_file(path: str, data: str = "x") -> None:
    with open(path, "w") as f:
        f.write(data)


def status_field(name: str) -> str:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return ""


def main() -> None:
    cfg = json.loads(sys.argv[1])
    out: dict[str, object] = {}
    out["uid"] = os.getuid()
    out["euid"] = os.geteuid()
    out["pid"] = os.getpid()
    # Files outside the binds, and the real home.
    out["read_secret"] = attempt(lambda: open(cfg["secret"]).read() and None)
    out["write_home"] = attempt(lambda: write_file(os.path.join(cfg["home"], "pwned-by-sandbox")))
    # Read-only binds: no writes, no remount.
    out["write_ro"] = attempt(lambda: write_file(os.path.join(cfg["ro"], "pwned-by-sandbox")))
    MS_REMOUNT, MS_BIND = 32, 4096
    out["remount_ro_rw"] = attempt(lambda: _mount(None, cfg["ro"], None, MS_REMOUNT | MS_BIND))
    out["write_rw"] = attempt(lambda: write_file(os.path.join(cfg["rw"], "written-inside")))
    # Processes: only ours, none of the host's.
    out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    out["kill_host_pid"] = attempt(lambda: os.kill(cfg["host_pid"], 0))
    out["ptrace_pid1"] = raw("ptrace", 16, 1, 0, 0)  # PTRACE_ATTACH
    # Network: no host loopback, only lo.
    out["connect_host"] = attempt(lambda: socket.create_connection(("127.0.0.1", cfg["port"]), timeout=2).close())
    out["interfaces"] = sorted(n for _, n in socket.if_nameindex())
    # Syscalls that must be refused.
    out["mount_tmpfs"] = attempt(lambda: _mount("tmpfs", "/tmp", "tmpfs", 0))
    out["unshare_user"] = raw("unshare", CLONE_NEWUSER)
    out["unshare_net"] = raw("unshare", CLONE_NEWNET)
    out["clone_newuser"] = raw("clone", CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
    out["clone_newns"] = raw("clone", CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0)
    out["clone3"] = raw("clone3", 0, 0)
    out["setns"] = raw("setns", 0, 0)
    out["keyctl"] = raw("keyctl", 0, 0xFFFFFFFD, 0)  # KEYCTL_GET_KEYRING_ID, session
    out["bpf"] = raw("bpf", 0, 0, 0)
    out["perf_event_open"] = raw("perf_event_open", 0, 0, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    out["userfaultfd"] = raw("userfaultfd", 0)
    out["open_by_handle_at"] = raw("open_by_handle_at", 0, 0, 0)
    # Terminal injection, on a terminal of our own (a pty from our private devpts).
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
    libc.grantpt(master)
    libc.unlockpt(master)
    libc.ptsname.restype = ctypes.c_char_p
    slave = os.open(libc.ptsname(master).decode(), os.O_RDWR | os.O_NOCTTY)
    ch = ctypes.c_char(b"x")
    out["tiocsti"] = raw("ioctl", slave, TIOCSTI, ctypes.addressof(ch))
    out["tiocsti_high_bits"] = raw("ioctl", slave, TIOCSTI | (1 << 32), ctypes.addressof(ch))
    out["tiocgwinsz"] = raw("ioctl", slave, 0x5413, ctypes.addressof(ctypes.create_string_buffer(8)))  # allowed
    os.close(slave)
    os.close(master)
    # Kernel settings.
    out["write_proc_sys"] = attempt(lambda: write_file("/proc/sys/kernel/hostname", "evil"))
    out["write_proc_sysrq"] = attempt(lambda: write_file("/proc/sysrq-trigger", "h"))
    out["write_sys"] = attempt(lambda: write_file("/sys/devices/system/cpu/online", "0"))
    out["sethostname"] = attempt(lambda: _check(libc.sethostname(b"evil", 4)))
    out["hostname"] = socket.gethostname()
    # Privileges.
    out["caps"] = {k: status_field(k) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
    out["no_new_privs"] = status_field("NoNewPrivs")
    out["seccomp"] = status_field("Seccomp")
    if cfg.get("setuid_bin"):
        import subprocess

        r = subprocess.run([cfg["setuid_bin"]], capture_output=True, text=True)
        out["setuid_bin"] = r.stdout.strip() or f"exit {r.returncode}: {r.stderr.strip()}"
    # Making setuid/setgid files in the writable bind.
    f = os.path.join(cfg["rw"], "suid-attempt")
    write_file(f)
    out["chmod_setuid"] = attempt(lambda: os.chmod(f, 0o4755))
    out["chmod_setgid"] = attempt(lambda: os.chmod(f, 0o2755))
    out["creat_setuid"] = attempt(lambda: os.close(os.open(os.path.join(cfg["rw"], "suid-creat"),
                                                             os.O_CREAT | os.O_WRONLY, 0o4755)))
    out["chmod_plain"] = attempt(lambda: os.chmod(f, 0o755))
    # File descriptors: nothing beyond 0-2 inherited.
    open_fds = []
    for fd in range(3, 1024):
        try:
            os.fstat(fd)
            open_fds.append(fd)
        except OSError:
            pass
    out["extra_fds"] = open_fds
    out["proc_self_fd"] = sorted(int(x) for x in os.listdir("/proc/self/fd"))
    print(json.dumps(out))


def _check(ret: int) -> None:
    if ret == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _mount(src, target, fstype, flags) -> None:
    def enc(s):
        return s.encode() if s is not None else None

    _check(libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), None))


if __name__ == "__main__":
    main()
