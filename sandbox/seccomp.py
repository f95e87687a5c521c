"""Seccomp profiles: OCI/Docker JSON compiled once to BPF with libseccomp, cached by sha256.

At run time `program_for` reads the profile, hashes it and returns the cached BPF bytes;
the compiler (pyseccomp, a ctypes binding of libseccomp) is imported only on a cache
miss. Loading the program is one prctl in sandbox.syscalls.
"""

from __future__ import annotations

import errno as E
import os

from .cachedir import default_cache_dir, ours
from .errors import SandboxError

TYPE_CHECKING = False  # typing itself costs ~2 ms at import; annotations are strings here
if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path
    from typing import Any

__all__ = ["programs_for", "program_for", "find_profile", "profile_path", "compile_profile", "profile_names",
           "default_cache_dir", "TTY_GUARD"]

# Part of every cache key: bump it when the compiler's output for a given profile changes.
COMPILER_VERSION = "1"

# Plain strings, not pathlib (~3 ms of imports with urllib.parse and fnmatch): run's hot path.
_HERE = os.path.dirname(os.path.realpath(__file__))
# An installed wheel carries the profiles as sandbox/profiles/; a source tree (and an
# editable install) has them in the top-level seccomp/ directory.
_PROFILE_DIRS = (os.path.join(_HERE, "profiles"), os.path.join(os.path.dirname(_HERE), "seccomp"))

_ACTIONS = ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS",
            "SCMP_ACT_TRAP", "SCMP_ACT_LOG", "SCMP_ACT_TRACE")
_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
        "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
# OCI architecture names -> the names used in a rule's includes/excludes (Go's GOARCH).
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "riscv64": "riscv64", "ppc64le": "ppc64le", "s390x": "s390x"}


def profile_names() -> list[str]:
    names: set[str] = set()
    for d in _PROFILE_DIRS:
        try:
            names.update(n[:-5] for n in os.listdir(d) if n.endswith(".json"))
        except OSError:
            continue
    return sorted(names)


def find_profile(name_or_path: str) -> Path:
    """A profile name (`default`, `strict`) or a path to an OCI JSON profile -> its file."""
    from pathlib import Path

    return Path(profile_path(name_or_path))


def profile_path(name_or_path: str) -> str:
    """find_profile as a string, without pathlib (run's hot path)."""
    if "/" in name_or_path or name_or_path.endswith(".json"):
        p = os.path.expanduser(name_or_path)
        if not os.path.isfile(p):
            raise SandboxError(f"seccomp profile {name_or_path}: no such file",
                               hint=f"give a path to an OCI JSON profile or a name: {', '.join(profile_names())}")
        return os.path.realpath(p)
    for d in _PROFILE_DIRS:
        p = os.path.join(d, f"{name_or_path}.json")
        if os.path.isfile(p):
            return p
    raise SandboxError(f"unknown seccomp profile {name_or_path!r}",
                       hint=f"use one of {', '.join(profile_names()) or '(none found: is pypm installed whole?)'} "
                            "or a path to an OCI JSON profile")


def _sha256(data: bytes) -> str:
    # The builtin _sha256 module imports in a third of the time hashlib (OpenSSL) takes,
    # and this runs on every sandboxed run.
    try:
        from _sha256 import sha256
    except ImportError:  # pragma: no cover - other Python builds
        from hashlib import sha256
    digest: str = sha256(data).hexdigest()
    return digest


# Loaded as a second filter in every sandbox, whatever the profile (the kernel applies
# the most restrictive answer of all stacked filters): an allow-list profile cannot
# express "ioctl except TIOCSTI" with libseccomp (an unconditional allow swallows the
# conditional deny), and a profile a user brings may forget it.
TTY_GUARD = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [
        {"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": E.EPERM,
         "args": [{"index": 1, "value": 0xFFFFFFFF, "valueTwo": code, "op": "SCMP_CMP_MASKED_EQ"}]}
        for code in (0x5412, 0x541C)  # TIOCSTI, TIOCLINUX; 32-bit mask (CVE-2019-10063)
    ],
}


def programs_for(profile: str | None, cache_dir: str | None = None) -> list[bytes]:
    """The BPF programs to load, in order: the terminal guard, then `profile` (if any)."""
    # Keyed by its repr, not json.dumps: json (with re and enum) loads only on a cache miss.
    out = [_program(repr(TTY_GUARD).encode(), "terminal guard", cache_dir, deny_unknown=False, parsed=TTY_GUARD)]
    if profile:
        out.append(program_for(profile, cache_dir))
    return out


def program_for(profile: str, cache_dir: str | None = None) -> bytes:
    """The BPF program of `profile` for this machine, compiled on first use and cached."""
    path = profile_path(profile)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SandboxError(f"cannot read seccomp profile {path}: {e.strerror}") from None
    return _program(data, path, cache_dir, deny_unknown=True)


def _program(data: bytes, source: str, cache_dir: str | None, *, deny_unknown: bool,
             parsed: dict[str, Any] | None = None) -> bytes:
    key = _sha256(data + f"\0{COMPILER_VERSION}\0{os.uname().machine}\0{deny_unknown}".encode())
    cdir = os.path.join(cache_dir or default_cache_dir(), "seccomp")
    cached = os.path.join(cdir, f"{key}.bpf")
    try:
        with open(cached, "rb") as f:
            # The program decides what the sandboxed command may ask the kernel: only a file this
            # user wrote and nobody else can change (else another user sharing the cache could
            # plant a filter that allows everything); otherwise compile it afresh. The directory
            # need not be ours: a file of ours under this name was compiled from this very key.
            if ours(os.fstat(f.fileno())):
                program = f.read()
                if program and len(program) % 8 == 0:
                    return program
    except OSError:
        pass
    import json

    try:
        profile_data = json.loads(data) if parsed is None else parsed
    except ValueError as e:
        raise SandboxError(f"seccomp profile {source} is not valid JSON: {e}") from None
    program = compile_profile(profile_data, source=source, deny_unknown=deny_unknown)
    _store(cdir, cached, program)
    return program


def _store(cdir: str, cached: str, program: bytes) -> None:
    """Write atomically (temp file + rename) so a concurrent run never reads half a program.
    An unwritable cache only costs a compile per run, so it is not an error."""
    try:
        os.makedirs(cdir, 0o700, exist_ok=True)
        tmp = f"{cached}.{os.getpid()}.tmp"
        # 0600 whatever the umask: a group-writable program would not be trusted when read back
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600),
                  "wb") as f:
            f.write(program)
        os.replace(tmp, cached)
    except OSError:
        pass


def _applies(rule: dict[str, Any]) -> bool:
    """OCI includes/excludes: we hold no capability; match the arch and kernel version."""
    uname = os.uname()
    arch = _GOARCH.get(uname.machine, uname.machine)
    release = tuple(int(x) for x in uname.release.split("-")[0].split(".")[:2] if x.isdigit())
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    if inc.get("caps"):
        return False
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if exc.get("arches") and arch in exc["arches"]:
        return False
    if inc.get("minKernel"):
        want = tuple(int(x) for x in str(inc["minKernel"]).split(".")[:2])
        if release < want:
            return False
    return True


def _action(sc: Any, name: Any, errno_ret: Any, where: str) -> int:
    if name not in _ACTIONS:
        raise SandboxError(f"{where}: unknown action {name!r}", hint=f"use one of {', '.join(_ACTIONS)}")
    action: int  # libseccomp's action value (the binding is untyped)
    if name == "SCMP_ACT_ALLOW":
        action = sc.ALLOW
    elif name == "SCMP_ACT_ERRNO":
        action = sc.ERRNO(int(errno_ret) if errno_ret is not None else E.EPERM)
    elif name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        action = sc.KILL
    elif name == "SCMP_ACT_KILL_PROCESS":
        action = sc.KILL_PROCESS
    elif name == "SCMP_ACT_TRAP":
        action = sc.TRAP
    elif name == "SCMP_ACT_LOG":
        action = sc.LOG
    else:
        action = sc.TRACE(int(errno_ret or 0))
    return action


def compile_profile(profile: dict[str, Any], *, source: str = "profile", deny_unknown: bool = True) -> bytes:
    """Compile an OCI seccomp profile to a BPF program for the native architecture."""
    try:
        import pyseccomp as sc
    except (ImportError, OSError) as e:
        raise SandboxError(f"cannot load libseccomp to compile {source}: {e}",
                           hint="install libseccomp (Debian/Ubuntu: apt install libseccomp2; "
                                "Fedora: dnf install libseccomp) and `pip install pyseccomp`") from None
    if not isinstance(profile, dict) or "defaultAction" not in profile:
        raise SandboxError(f"{source}: not an OCI seccomp profile (no defaultAction)")
    default = _action(sc, profile["defaultAction"], profile.get("defaultErrnoRet"), f"{source}: defaultAction")
    f = sc.SyscallFilter(default)
    native = sc.system_arch()
    for i, rule in enumerate(profile.get("syscalls") or []):
        where = f"{source}: syscalls[{i}]"
        names = rule.get("names") or ([rule["name"]] if "name" in rule else [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SandboxError(f"{where}: `names` must be a list of syscall names")
        if not _applies(rule):
            continue
        action = _action(sc, rule.get("action"), rule.get("errnoRet"), where)
        if action == default:
            continue  # libseccomp refuses a rule that repeats the default action
        conds = []
        for a in rule.get("args") or []:
            if a.get("op") not in _OPS:
                raise SandboxError(f"{where}: unknown comparison {a.get('op')!r}", hint=f"use one of {', '.join(_OPS)}")
            conds.append(sc.Arg(int(a["index"]), _OPS[a["op"]], int(a["value"]), int(a.get("valueTwo", 0))))
        # runc's rule: conditions on distinct arguments must all hold (one rule); several
        # conditions on the same argument are alternatives (one rule each).
        indexes = [int(a["index"]) for a in rule.get("args") or []]
        groups = [conds] if len(set(indexes)) == len(indexes) else [[c] for c in conds]
        for name in names:
            try:
                nr = sc.resolve_syscall(native, name)
            except ValueError:
                nr = -1
            if nr < 0:
                continue  # not a syscall of this architecture (e.g. socketcall on x86_64)
            for g in groups:
                try:
                    f.add_rule(action, name, *g)
                except OSError as e:
                    raise SandboxError(f"{where}: libseccomp refused the rule for {name}: {e.strerror}") from None
    if default == sc.ALLOW and deny_unknown:
        _deny_unknown(sc, f, native)
    fd = os.memfd_create("pypm-seccomp", os.MFD_CLOEXEC)
    try:
        f.export_bpf(_Fd(fd))
        size = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, 0, os.SEEK_SET)
        program = b""
        while len(program) < size:
            program += os.read(fd, size - len(program))
    finally:
        os.close(fd)
    return program


class _Fd:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


def _deny_unknown(sc: Any, f: Any, native: int) -> None:
    """With an allow-by-default profile, a syscall newer than this libseccomp could not be
    named in a deny rule and would slip through. Return ENOSYS for the numbers just past
    the newest one libseccomp knows (runc does the same), so programs take their fallback."""
    newest = 0
    for nr in range(0, 1024):
        try:
            if sc.resolve_syscall(native, nr):
                newest = nr
        except ValueError:
            continue
    for nr in range(newest + 1, newest + 128):
        try:
            f.add_rule(sc.ERRNO(E.ENOSYS), nr)
        except OSError:
            continue
