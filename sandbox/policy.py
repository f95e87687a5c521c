"""The sandbox policy: what to unshare, mount, pass and filter, as plain data (pure)."""

from __future__ import annotations

import posixpath

from .errors import SandboxError
from .record import as_dict, record, replace

TYPE_CHECKING = False  # typing itself costs ~2 ms at import; annotations are strings here
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "NAMESPACES",
    "Mount",
    "Policy",
    "system_mounts",
    "python_policy",
    "with_changes",
    "filter_env",
    "env_entry_ok",
    "ENV_ALLOWLIST",
    "LIMITS",
    "parse_limit",
    "limits_with",
    "limit_value",
    "check_limits",
]

# Every namespace the runner knows, in the order unshare() takes them. "net" is left out
# when the policy shares the host's network.
NAMESPACES = ("user", "mount", "pid", "net", "ipc", "uts", "cgroup")

MOUNT_KINDS = ("bind", "tmpfs", "proc", "devpts", "dev", "file", "symlink", "dir")

# What an interpreter and ordinary tools read from the host's root, read-only. Missing
# paths are skipped (the list covers Debian/Ubuntu merged-/usr, Fedora and older layouts).
# Top-level directories that are symlinks on the host (merged /usr: /lib -> usr/lib) are
# recreated as the same symlink rather than bound, so paths resolve as they do outside.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_SYSTEM_ETC = (
    "/etc/alternatives",  # Debian: /usr/bin/awk -> /etc/alternatives/awk -> ...
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",  # the dynamic loader
    "/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/crypto-policies",  # TLS trust
    "/etc/localtime", "/etc/timezone", "/etc/os-release", "/etc/mime.types",
    "/etc/services", "/etc/protocols", "/etc/inputrc", "/etc/terminfo",
)
# Only with the host's network: how names are resolved there.
_NETWORK_ETC = ("/etc/resolv.conf", "/etc/hosts", "/etc/host.conf", "/etc/gai.conf", "/etc/nsswitch.conf")
# CPU topology for os.cpu_count-like probes (torch, BLAS): read-only, nothing else of /sys.
_SYS_RO = ("/sys/devices/system/cpu", "/sys/devices/system/node")

# Environment variables that describe the terminal, locale and Python's behaviour, never a
# host path or secret. Everything else must be asked for with --env NAME.
ENV_ALLOWLIST = (
    "TERM", "COLORTERM", "COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "CLICOLOR", "CLICOLOR_FORCE",
    "LANG", "LANGUAGE", "TZ", "CI", "SOURCE_DATE_EPOCH",
    "PYTHONHASHSEED", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONWARNINGS",
    "PYTHONFAULTHANDLER", "PYTHONDEVMODE", "PYTHONUTF8", "PYTHONIOENCODING", "PYTHONTRACEMALLOC",
)
ENV_ALLOW_PREFIXES = ("LC_",)

# Resource limits the command starts with, set with setrlimit (soft = hard: the command cannot
# raise them again, which needs CAP_SYS_RESOURCE in the initial user namespace). name ->
# (the kernel's limit, unit, what it bounds). They are per process, except `processes`: the
# kernel counts tasks per user *and user namespace*, and the sandbox's user namespace is new,
# so that one bounds the whole sandbox (a fork bomb stops there, not at the host's ulimit -u).
# Memory is per process too (address space, `ulimit -v`); a total would need a cgroup, which an
# unprivileged user cannot be counted on to have.
LIMITS = {
    "memory": ("RLIMIT_AS", "bytes", "address space of each process (ulimit -v)"),
    "cpu": ("RLIMIT_CPU", "seconds", "CPU seconds of each process (ulimit -t); killed (SIGKILL) at the limit"),
    "processes": ("RLIMIT_NPROC", "count", "processes and threads in the whole sandbox, its init included (ulimit -u)"),
    "open-files": ("RLIMIT_NOFILE", "count", "open files of each process (ulimit -n)"),
    "file-size": ("RLIMIT_FSIZE", "bytes", "largest file a process may write (ulimit -f)"),
    # Not an rlimit: the size= of each writable tmpfs the sandbox makes. Their pages are RAM (or
    # swap), and at the kernel's default each could take half of it.
    "tmp-size": ("", "bytes", "size of each of the sandbox's writable tmpfs: /tmp, $HOME, /dev, /dev/shm"),
}
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_TIME_UNITS = {"": 1, "S": 1, "M": 60, "H": 3600}
_LIMIT_MAX = (1 << 63) - 1  # RLIM_INFINITY is all ones: every value stays below it


def limit_value(name: str, value: object) -> int | None:
    """`value` (an int, or a string such as "2G", "512MiB", "90s", "10m", "unlimited") as the
    limit's number in its unit; None for "unlimited" (no limit: the caller's own stays).
    Raises ValueError with the reason."""
    if name not in LIMITS:
        raise ValueError(f"unknown limit {name!r}; known: {', '.join(LIMITS)}")
    unit = LIMITS[name][1]
    if isinstance(value, bool):  # an int to Python, but `memory = true` is a mistake
        raise ValueError(f"{name} = {value!r} is not a number")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        # Parsed by hand, not with re: this runs on `pypm run`'s hot path, which loads no re.
        text = value.strip().upper()
        if text in ("UNLIMITED", "INFINITY"):
            return None
        units = _TIME_UNITS if unit == "seconds" else _SIZE_UNITS if unit == "bytes" else {"": 1}
        if unit == "bytes":
            text = text[:-2] if text.endswith("IB") else text[:-1] if text.endswith("B") else text
        suffix = text[-1:] if text[-1:].isalpha() else ""
        digits = text[:len(text) - len(suffix)].strip()
        if suffix not in units or not digits.isdigit() or not digits.isascii():
            what, examples = {"bytes": ("size", '"512M", "2G" or a number of bytes'),
                              "seconds": ("duration", '"90s", "10m", "1h" or a number of seconds'),
                              "count": ("count", "a whole number")}[unit]
            raise ValueError(f"{name} = {value!r} is not a {what} the sandbox understands: use {examples}, "
                             'or "unlimited"')
        n = int(digits) * units[suffix]
    else:
        raise ValueError(f"{name} = {value!r} is not a number")
    low = 0 if name == "file-size" else 1  # 0 open files or 0 bytes of memory: nothing could even start
    if n < low:
        raise ValueError(f"{name} = {value!r} is below {low}")
    if n > _LIMIT_MAX:
        raise ValueError(f"{name} = {value!r} is too large")
    return n


def parse_limit(text: str) -> tuple[str, int | None]:
    """"NAME=VALUE" (`--limit`) -> (name, value or None for "unlimited"); ValueError says why not."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"{text!r} is not NAME=VALUE (e.g. memory=2G, cpu=60, processes=256)")
    return name, limit_value(name, value)


def limits_with(base: Iterable[tuple[str, int]], items: Iterable[str]) -> dict[str, int]:
    """`base` with each "NAME=VALUE" of `items` (`--limit`, in order) over it; "NAME=unlimited"
    removes NAME. ValueError says which item is malformed and why."""
    out = dict(base)
    for item in items:
        name, value = parse_limit(item)
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def check_limits(limits: Iterable[tuple[str, int]]) -> None:
    """Refuse a limit above the caller's own hard limit, which no unprivileged process can raise:
    said here in words, before anything starts, rather than as setrlimit's EPERM from inside."""
    import os
    import resource

    for name, value in limits:
        if name == "processes" and os.getuid() == 0:
            # The kernel exempts uid 0 of the initial namespace from RLIMIT_NPROC (copy_process:
            # INIT_USER), and the sandbox's processes are that uid when root starts it: the limit
            # would be set and never enforced. Refused rather than silently not applied.
            raise SandboxError(f"the sandbox limit processes={value} cannot be enforced when pypm runs as root: the "
                               "kernel exempts root from the process limit (RLIMIT_NPROC)",
                               hint="run pypm as an ordinary user, or drop the limit for this run with "
                                    "--limit processes=unlimited")
        hard = resource.getrlimit(getattr(resource, LIMITS[name][0]))[1]
        if hard != resource.RLIM_INFINITY and value > hard:
            raise SandboxError(f"the sandbox limit {name}={value} is above this process's own hard limit ({hard})",
                               hint=f"lower {name} to at most {hard}, or raise the hard limit where pypm is started "
                                    f"(ulimit -H; /etc/security/limits.conf)")


def _amount(name: str, value: int) -> str:
    """`value` of limit `name` as people write it: "2G", "90s", "64"."""
    unit = LIMITS[name][1]
    if unit == "bytes":
        for suffix in ("T", "G", "M", "K"):
            if value >= _SIZE_UNITS[suffix] and value % _SIZE_UNITS[suffix] == 0:
                return f"{value // _SIZE_UNITS[suffix]}{suffix}"
    return f"{value}{'s' if unit == 'seconds' else ''}"


@record
class Mount:
    """One step of building the new root, applied in order (bubblewrap's SetupOp).

    kind: bind (src on the host -> dst), tmpfs, proc, devpts, dev (the minimal /dev),
    file (src is the content), symlink (src is the target), dir.
    """

    kind: str
    dst: str  # absolute path inside the sandbox
    src: str | None = None
    writable: bool = False  # bind: read-write (otherwise read-only); every bind is nosuid,nodev
    optional: bool = False  # bind: skip when src does not exist on the host
    mirror_symlink: bool = False  # bind: if src is a symlink on the host, make the same symlink
    mode: int = 0o755  # tmpfs, dir, file
    size: int = 0  # tmpfs, dev (its tmpfs and /dev/shm): size= in bytes; 0 = the kernel's default (half of RAM)

    def describe(self) -> str:
        if self.kind == "bind":
            how = "rw" if self.writable else "ro"
            extra = " (if present)" if self.optional else ""
            if self.src == self.dst:
                return f"bind-{how:2} {self.dst}{extra}"
            return f"bind-{how:2} {self.src} -> {self.dst}{extra}"
        if self.kind == "file":
            return f"file     {self.dst} ({len(self.src or '')} bytes, mode {self.mode:o})"
        if self.kind == "symlink":
            return f"symlink  {self.dst} -> {self.src}"
        size = f", {_amount('tmp-size', self.size)}" if self.size else ""
        if self.kind == "tmpfs":
            return f"tmpfs    {self.dst} (mode {self.mode:o}{size})"
        return f"{self.kind:8} {self.dst}{f' (tmpfs{size})' if size else ''}"


@record
class Policy:
    """Everything the runner needs to know, and nothing it must look up (except the host's ids)."""

    mounts: tuple[Mount, ...]
    env: tuple[tuple[str, str], ...]  # the command's whole environment, sorted
    cwd: str = "/"
    namespaces: tuple[str, ...] = NAMESPACES
    network: str = "none"  # "none": a private network namespace with only lo; "host": the host's
    uid: int | None = None  # the id inside; None = the caller's own (mapped to itself)
    gid: int | None = None
    hostname: str = "pypm-sandbox"
    seccomp: str | None = "default"  # a profile name, or a path to an OCI JSON profile
    disable_userns: bool = True  # also set user.max_user_namespaces=0 inside (beside seccomp)
    new_keyring: bool = True  # a fresh session keyring, not the caller's
    die_with_parent: bool = True
    limits: tuple[tuple[str, int], ...] = ()  # (name in LIMITS, value), sorted by name; () = the caller's

    def __post_init__(self) -> None:
        if self.network not in ("none", "host"):
            raise SandboxError(f"network is {self.network!r}", hint='use "none" or "host"')
        for ns in self.namespaces:
            if ns not in NAMESPACES:
                raise SandboxError(f"unknown namespace {ns!r}", hint=f"known: {', '.join(NAMESPACES)}")
        if "user" not in self.namespaces or "mount" not in self.namespaces or "pid" not in self.namespaces:
            raise SandboxError("a policy must unshare at least the user, mount and PID namespaces")
        if (self.network == "none") != ("net" in self.namespaces):
            raise SandboxError("network = \"none\" needs the net namespace, \"host\" must not unshare it")
        for m in self.mounts:
            if m.kind not in MOUNT_KINDS:
                raise SandboxError(f"unknown mount kind {m.kind!r} for {m.dst}")
            if not posixpath.isabs(m.dst) or posixpath.normpath(m.dst) != m.dst or m.dst == "/":
                raise SandboxError(f"mount destination {m.dst!r} must be an absolute, normalised path other than /")
            if type(m.size) is not int or m.size < 0 or m.size > _LIMIT_MAX or (m.size and m.kind not in ("tmpfs", "dev")):
                raise SandboxError(f"mount {m.dst}: size {m.size!r} (only a tmpfs or /dev has one, a whole number of bytes)")
        if not posixpath.isabs(self.cwd):
            raise SandboxError(f"working directory {self.cwd!r} must be absolute")
        names = [n for n, _ in self.limits]
        if names != sorted(set(names)):
            raise SandboxError("the policy's limits must be sorted by name, each name once")
        for name, value in self.limits:
            try:
                if name in LIMITS and not LIMITS[name][0]:
                    raise ValueError(f"{name} is given by the tmpfs mounts' size, not as a process limit")
                if type(value) is not int or limit_value(name, value) != value:
                    raise ValueError(f"{name} = {value!r} is not a whole number")
            except ValueError as e:
                raise SandboxError(f"invalid sandbox limit: {e}") from None

    @property
    def environ(self) -> dict[str, str]:
        return dict(self.env)

    def to_dict(self) -> dict[str, Any]:
        d = as_dict(self)
        d["env"] = dict(self.env)
        d["mounts"] = [{k: v for k, v in as_dict(m).items() if v not in (None, False) or k == "writable"}
                       for m in self.mounts]
        return d

    def to_json(self) -> str:
        import json

        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_text(self) -> str:
        ids = "the caller's own uid/gid" if self.uid is None else f"uid {self.uid}, gid {self.gid}"
        lines = [
            f"namespaces: {' '.join(self.namespaces)}",
            f"user:       {ids} (setgroups denied; no other id mapped)",
            f"network:    {'loopback only' if self.network == 'none' else 'the host network'}",
            f"hostname:   {self.hostname}",
            f"seccomp:    {self.seccomp or 'none'}",
            "privileges: no_new_privs, every capability dropped (bounding, ambient, effective),"
            f" pdeathsig{', user namespaces disabled' if self.disable_userns else ''}"
            f"{', fresh session keyring' if self.new_keyring else ''}",
            f"limits:     {', '.join(f'{n}={_amount(n, v)}' for n, v in self.limits) or 'none set (inherited from the caller)'}",
            f"cwd:        {self.cwd}",
            "root:       tmpfs (read-only once built), then in order:",
        ]
        lines += [f"  {m.describe()}" for m in self.mounts]
        lines.append("environment:")
        lines += [f"  {k}={v}" for k, v in self.env]
        return "\n".join(lines)


def env_entry_ok(item: str) -> bool:
    """Whether `item` is NAME (passed through from the host) or NAME=VALUE: what --env and
    [tool.pypm.sandbox] env take (pypm.project checks the latter when it reads pyproject.toml)."""
    return bool(item.partition("=")[0]) and "\0" not in item


def filter_env(host_env: Mapping[str, str], passthrough: Iterable[str] = ()) -> dict[str, str]:
    """The allowlisted part of the host's environment (plus NAME / NAME=VALUE from `passthrough`)."""
    out = {k: v for k, v in host_env.items() if k in ENV_ALLOWLIST or k.startswith(ENV_ALLOW_PREFIXES)}
    for item in passthrough:
        name, sep, value = item.partition("=")
        if not env_entry_ok(item):
            raise SandboxError(f"--env {item!r}: not NAME or NAME=VALUE")
        if sep:
            out[name] = value
        elif name in host_env:
            out[name] = host_env[name]
    return out


def system_mounts(*, network: str, hostname: str, user: str, uid: int, gid: int, home: str,
                  shell: str = "/bin/sh", tmp_size: int = 0) -> list[Mount]:
    """The base of every root: system dirs read-only, a minimal /etc, /proc, /dev, /tmp, $HOME.
    `tmp_size`: the size of each writable tmpfs in bytes (0: the kernel's default)."""
    mounts: list[Mount] = [Mount("bind", d, d, optional=True, mirror_symlink=True) for d in _SYSTEM_DIRS]
    mounts += [Mount("bind", p, p, optional=True) for p in _SYSTEM_ETC]
    # Who we are, without the host's user list: just us (and root/nobody, which tools expect).
    passwd = {0: "root:x:0:0:root:/root:/bin/sh", 65534: "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin"}
    passwd[uid] = f"{user}:x:{uid}:{gid}::{home}:{shell}"
    group = {0: "root:x:0:", 65534: "nogroup:x:65534:"}
    group.setdefault(gid, f"{user}:x:{gid}:")
    mounts.append(Mount("file", "/etc/passwd", "".join(v + "\n" for _, v in sorted(passwd.items())), mode=0o644))
    mounts.append(Mount("file", "/etc/group", "".join(v + "\n" for _, v in sorted(group.items())), mode=0o644))
    mounts.append(Mount("file", "/etc/hostname", hostname + "\n", mode=0o644))
    if network == "host":
        mounts += [Mount("bind", p, p, optional=True) for p in _NETWORK_ETC]
    else:
        hosts = f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
        mounts.append(Mount("file", "/etc/hosts", hosts, mode=0o644))
        mounts.append(Mount("file", "/etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n", mode=0o644))
    mounts += [Mount("bind", p, p, optional=True) for p in _SYS_RO]
    mounts += [
        Mount("proc", "/proc"),
        Mount("dev", "/dev", size=tmp_size),
        Mount("tmpfs", "/tmp", mode=0o1777, size=tmp_size),
        Mount("tmpfs", home, mode=0o700, size=tmp_size),
    ]
    return mounts


def _depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


def _order(mounts: Sequence[Mount]) -> tuple[Mount, ...]:
    """Parents before children (a bind inside $HOME must come after $HOME's tmpfs), otherwise
    as given; a later mount at the same path replaces an earlier one."""
    last: dict[str, int] = {}
    for i, m in enumerate(mounts):
        last[m.dst] = i
    kept = [m for i, m in enumerate(mounts) if last[m.dst] == i]
    return tuple(sorted(kept, key=lambda m: _depth(m.dst)))  # sorted() is stable


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def python_policy(
    *,
    uid: int,
    gid: int,
    user: str,
    home: str,
    host_env: Mapping[str, str],
    interpreter_prefixes: Sequence[str] = (),
    venv: str | None = None,
    project: str | None = None,
    writable_project: bool = True,
    cwd: str | None = None,
    network: str = "none",
    binds: Sequence[tuple[str, str]] = (),
    ro_binds: Sequence[tuple[str, str]] = (),
    env: Sequence[str] = (),
    profile: str | None = "default",
    shell: str | None = None,
    protect: Sequence[str] = (),
    root: bool = False,
    hostname: str = "pypm-sandbox",
    extra_mounts: Sequence[Mount] = (),
    limits: Mapping[str, int] | None = None,
) -> Policy:
    """The policy for "run a command with interpreter X and venv Y in project Z".

    All paths are absolute host paths, already resolved by the caller (this function does
    no IO). The interpreter prefixes and the venv are read-only, the project read-write
    unless `writable_project` is false, `binds`/`ro_binds` are (src, dst) pairs. `protect`
    lists paths (inside the project, e.g. its .git) bound read-only over themselves before
    the binds, so that an explicit bind of the same path still wins. `limits`: name in LIMITS
    -> value, the resource limits the command starts with (tmp-size: its tmpfs mounts' size).
    """
    in_uid, in_gid = (0, 0) if root else (uid, gid)
    in_home = "/root" if root else home
    in_user = "root" if root else user
    sh = shell or "/bin/sh"
    rlimits = dict(limits or {})
    tmp_size = rlimits.pop("tmp-size", 0)
    mounts = system_mounts(network=network, hostname=hostname, user=in_user, uid=in_uid, gid=in_gid,
                           home=in_home, shell=sh, tmp_size=tmp_size)
    for prefix in interpreter_prefixes:
        if not _under(prefix, "/usr"):  # /usr is bound whole already
            mounts.append(Mount("bind", prefix, prefix))
    if project:
        mounts.append(Mount("bind", project, project, writable=writable_project))
    if venv:
        mounts.append(Mount("bind", venv, venv))
    mounts += [Mount("bind", p, p) for p in protect]
    mounts += [Mount("bind", dst=d, src=s, writable=True) for s, d in binds]
    mounts += [Mount("bind", dst=d, src=s) for s, d in ro_binds]
    mounts += list(extra_mounts)

    environ = filter_env(host_env, ())
    path = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    if venv:
        environ["VIRTUAL_ENV"] = venv
        path.insert(0, posixpath.join(venv, "bin"))
    environ.update({
        "PATH": ":".join(path),
        "HOME": in_home,
        "USER": in_user,
        "LOGNAME": in_user,
        "SHELL": sh,
        "TMPDIR": "/tmp",
        "HOSTNAME": hostname,
        "PYPM_SANDBOX": "1",
    })
    environ.update(filter_env(host_env, env))  # explicit --env wins over everything above
    environ.pop("PYTHONHOME", None)
    if cwd is None:
        cwd = project or in_home
    return Policy(
        mounts=_order(mounts),
        env=tuple(sorted(environ.items())),
        cwd=cwd,
        namespaces=tuple(n for n in NAMESPACES if n != "net" or network == "none"),
        network=network,
        uid=0 if root else None,
        gid=0 if root else None,
        hostname=hostname,
        seccomp=profile,
        limits=tuple(sorted(rlimits.items())),
    )


def with_changes(policy: Policy, **changes: Any) -> Policy:
    """A copy of `policy` with some fields replaced (validated again)."""
    return replace(policy, **changes)
