"""`pypm run`'s launcher: a sandboxed run replayed from a recorded plan, by exec'ing the compiled helper in pypm's place.

Why: a sandboxed `pypm run -- python -c pass` pays two Python start-ups (pypm's, the
command's). Everything pypm's Python does between them (matching state.json, building the
policy, compiling seccomp, waiting for the command) was ~12 ms; `uv run` is ~27 ms in all.
So the first sandboxed run of a synced project records what it decided (`record`), and the
next ones (`launch`), once every input of that decision is seen unchanged, exec the
compiled helper (sandbox/helper.c) directly: pypm imports nothing of its own, builds no
policy and does not wait; the helper is the process the caller waits for.

What "unchanged" means: the same argv shape (`pypm run [flags] CMD...` with the same flags; an --env-file is also a checked file below),
working directory, uid/gid, every environment variable pypm reads on the way (the sandbox's
allowlist, LC_*, the passthrough names of [tool.pypm.sandbox] env, PYPM_*, HOME, USER, SHELL,
PATH, TMPDIR, PYTHONPATH, PYTHONHOME, XDG_CACHE_HOME, XDG_DATA_HOME: present or absent, same value), and the stat identity (device, inode,
size, mtime and ctime in ns, mode) of every file the decision read: pyproject.toml,
pypm.lock, the venv's state.json, pyvenv.cfg and interpreter links, its site-packages
directories and .pth files, .git, /etc/passwd, the seccomp profile, the plugin files
state.json names, the helper, and pypm's own modules on this path. Any difference, a file
changed in the last ~30 ms (file times are coarse: a later change could keep the same
time), or any error: nothing is launched and pypm runs as without a launcher, which records
a new plan. A ctime cannot be set back by an unprivileged user, so a file rewritten with
its old size and mtime still differs.

A PEP 723 script's run (`pypm run script.py`, pypm.script) is recorded and replayed the same way
when its environment is current: its plan is keyed by the script's real path and also checks the
script's own identity (its bytes decide its environment), the environment's pyproject.toml and
pypm.lock, and the Python pypm runs on; it holds the command's first words (the environment's
python, the script). The directory the run binds is the current one, as for any script's run.
So is `pypm x TOOL ARGS` (pypm.toolrun.fast_x): keyed by the current directory (the one it binds)
and TOOL as written, the plan checks the tool's command in its environment's bin/ instead of a
script, and holds that command.

Where: in the user's pypm cache (`run-plans/<sha256 of the project root>`), owned by the user
and writable by nobody else, never inside the project: a plan is executed outside the
sandbox, so a checked-out repository (or a sandboxed command, which can write the project)
must not be able to plant one. The cache is not visible inside the sandbox. If the helper cannot set the sandbox
up (a bind source vanished, ...), it removes its temporary root and runs pypm again with
PYPM_NO_LAUNCHER=1, which sets the sandbox up the ordinary way and reports the failure.

This module runs on every `pypm run`: it imports nothing but `os` and `sys` on `launch`.
"""

from __future__ import annotations

import os
import sys

from sandbox.cachedir import default_cache_dir, ours

TYPE_CHECKING = False  # typing costs ~2 ms; annotations are strings here
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Sequence

__all__ = ["launch", "record", "plan_path", "script_plan_path", "tool_plan_path", "tool_key", "has_script_block", "python_for_script", "PLANS_DIR",
           "NO_LAUNCHER_ENV"]

PLANS_DIR = "run-plans"
NO_LAUNCHER_ENV = "PYPM_NO_LAUNCHER"
_MAGIC = b"pypm-run-plan-1"
# The plan of a command in an environment of its own: a PEP 723 script's (`pypm run script.py`,
# pypm.script), keyed by the script's real path, or a tool's (`pypm x TOOL`, pypm.toolrun), keyed
# by the directory and TOOL. It also holds the command's first words (the environment's python and
# the script; the tool's command).
_SCRIPT_MAGIC = b"pypm-script-plan-1"
_RECENT_NS = 30_000_000  # younger than this (3 ticks at HZ=100), a file's times cannot vouch for its content yet
# When this process started deciding (set by `launch`, which pypm's entry point calls first): a
# file changed after that may have been read before the change, so it cannot vouch for the plan.
_started_ns: int | None = None
_FLAGS = frozenset({"--frozen", "-q", "--quiet", "--no-env-file"})  # run flags a plan can be recorded for
# ... and sandbox flags whose whole effect is on the policy the plan holds (no host path or
# environment variable to check again at replay, unlike --bind or --env): they are part of the
# plan's key with their values, as given (joined with \x1f there: a value may hold a space).
_POLICY_FLAGS = frozenset({"--read-only-project", "--writable-project"})
_POLICY_VALUED = frozenset({"--limit", "--network"})
# `pypm x`'s flags that choose the tool's environment (pypm.toolrun): part of the plan's flags,
# as given, and of its key (tool_key), so that each environment of a directory has a plan.
_X_VALUED = frozenset({"--from", "--with"})
# --env-file PATH (either command): its variables are in the policy the plan holds, so the plan
# is keyed by it as given, and the file's identity is among the checked ones (_env_files).
_ENV_FILE = "--env-file"
# `run --with REQ` (pypm.run._fast_with): the layered environment's files are among the plan's
# checked ones (record's `vouch`), and the flag with its value is part of the plan's key.
_WITH = "--with"
_RUN_VALUED = _POLICY_VALUED | {_ENV_FILE, _WITH}
_X_FLAGS, _X_ALL_VALUED = _FLAGS - {"--frozen"}, _POLICY_VALUED | {_ENV_FILE} | _X_VALUED  # (x has no --frozen)
# pypm's own modules whose code decides the plan: a new pypm version records a new one.
_CODE = ("pypm/launch.py", "pypm/run.py", "pypm/sandboxing.py", "pypm/fastpath.py", "pypm/script.py",
         "pypm/toolrun.py", "pypm/config.py", "sandbox/policy.py",
         "sandbox/host.py", "sandbox/seccomp.py", "sandbox/cachedir.py", "sandbox/native.py", "sandbox/caller.py", "sandbox/helper.c")


def _now_ns() -> int:
    import time  # a builtin module: no file to find or load

    return time.time_ns()


def _split(argv: Sequence[str]) -> tuple[list[str], list[str]] | None:
    """(flags, command) of `run [flags] [--] CMD...` or `x [flags] [--] TOOL...`, or None."""
    if not argv or argv[0] not in ("run", "x"):
        return None
    bare, valued = (_FLAGS, _RUN_VALUED) if argv[0] == "run" else (_X_FLAGS, _X_ALL_VALUED)
    i, flags = 1, []
    while i < len(argv):
        a = argv[i]
        if a in bare or a in _POLICY_FLAGS:
            flags.append(a)
            i += 1
        elif "=" in a and a.partition("=")[0] in valued:
            flags.append(a)
            i += 1
        elif a in valued and i + 1 < len(argv):
            flags += [a, argv[i + 1]]
            i += 2
        else:
            break
    if i < len(argv) and argv[i] == "--":
        i += 1
    cmd = list(argv[i:])
    if not cmd or (cmd[0].startswith("-") and argv[i - 1] != "--"):
        return None
    return flags, cmd


def plan_path(root: str, cache_dir: str | None = None) -> str:
    """Where the plan for the project at `root` lives (in the user's cache, never the project)."""
    return _plan_file(os.fsencode(root), cache_dir)


def script_plan_path(script: str, cache_dir: str | None = None) -> str:
    """Where the plan for the PEP 723 script at the real path `script` lives (beside the projects')."""
    return _plan_file(b"script\0" + os.fsencode(script), cache_dir)


def tool_plan_path(cwd: str, tool: str, cache_dir: str | None = None) -> str:
    """Where the plan for `pypm x TOOL` (TOOL as written: `ruff`, `ruff@0.6.9`; with --from or
    --with, as tool_key gives it) run in `cwd` lives."""
    return _plan_file(b"x\0" + os.fsencode(cwd) + b"\0" + os.fsencode(tool), cache_dir)


def tool_key(flags: Sequence[str], tool: str) -> str:
    """TOOL, or with `pypm x`'s --from/--with among `flags` (_split's), those and TOOL: the key
    of the plan of each environment a directory runs a command from."""
    words, i = [], 0
    while i < len(flags):
        name, eq, value = flags[i].partition("=")
        if name in _X_VALUED:
            if not eq:
                i += 1
                value = flags[i]
            words += [name, value]
        elif flags[i] in _POLICY_VALUED:
            i += 1  # (its value: it may be spelled "--from")
        i += 1
    return "\x1f".join([*words, tool]) if words else tool


def _plan_file(key: bytes, cache_dir: str | None) -> str:
    try:
        from _sha256 import sha256  # not hashlib: no OpenSSL here
    except ImportError:  # pragma: no cover - other Python builds
        from hashlib import sha256
    return os.path.join(cache_dir or default_cache_dir(), PLANS_DIR, sha256(key).hexdigest()[:32])


def _stat_ident(st: os.stat_result) -> bytes:
    return b"%d:%d:%d:%d:%d:%o" % (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


def _ident(path: str) -> bytes:
    """The path's own identity and, for a symlink, where it leads and that file's identity:
    a file edited through a link (pyproject.toml -> a shared file) leaves the link's lstat as
    it was, and a link in the middle of a chain can be pointed elsewhere."""
    try:
        st = os.lstat(path)
    except OSError:
        return b"-"
    out = _stat_ident(st)
    if st.st_mode & 0o170000 == 0o120000:  # S_ISLNK, without importing stat
        real = os.path.realpath(path)
        try:
            out += b">" + os.fsencode(real) + b">" + _stat_ident(os.stat(real))
        except OSError:
            out += b">-"
    return out


def _resolved(path: str) -> bytes:
    """A resolve check ("=" + the realpath and whether it is a directory): what a bind source
    or a .pth entry resolved to when the policy was decided (a symlink on the way may change)."""
    real = os.path.realpath(path)
    return b"=" + os.fsencode(real) + (b"/d" if os.path.isdir(real) else b"/-")


def _check(path: bytes, ident: bytes) -> bool:
    p = os.fsdecode(path)
    return (_resolved(p) if ident[:1] == b"=" else _ident(p)) == ident


# Prefixes of variables pypm reads on the way to a sandbox (LC_*: passed in; PYPM_*: its own
# settings, the runner choice and PYPM_NO_LAUNCHER among them).
_ENV_PREFIXES = (b"LC_", b"PYPM_")
# Besides the sandbox's allowlist and the passthrough names: what sandbox.host.caller,
# venv_environment, the fast path's plugin check and the cache dir depend on.
_ENV_READ = ("HOME", "USER", "SHELL", "PATH", "TMPDIR", "PYTHONPATH", "PYTHONHOME", "XDG_CACHE_HOME",
             "XDG_DATA_HOME")  # (XDG_DATA_HOME: where `pypm x NAME` looks for an installed tool's receipt)


def _environ(names: frozenset[bytes]) -> list[bytes]:
    """The part of the environment a plan depends on: every variable pypm reads to decide the
    sandbox (the rest, like a benchmark's random padding or a shell's `_`, cannot change it)."""
    return sorted(k + b"=" + v for k, v in os.environb.items() if k in names or k.startswith(_ENV_PREFIXES))


def launch(argv: Sequence[str]) -> None:
    """Exec the helper for `pypm run ...` when a recorded plan still holds; else return (nothing done)."""
    global _started_ns
    _started_ns = _now_ns()
    parts = _split(argv)
    if parts is None or NO_LAUNCHER_ENV in os.environ:
        return
    flags, cmd = parts
    try:
        cwd = os.getcwd()
    except OSError:
        return
    if argv[0] == "x":  # a tool's environment (pypm.toolrun): its plan holds the tool's command
        plan = _valid_plan(tool_plan_path(cwd, tool_key(flags, cmd[0])), _SCRIPT_MAGIC, flags, cwd)
        if plan is not None:
            _exec_own(plan, list(argv), cmd[1:])
        return
    script = os.path.join(cwd, cmd[0])
    if has_script_block(script):
        # A PEP 723 script runs in its own environment (pypm.script), whose run recorded a plan of
        # its own: keyed by the script's real path, its identity among the checked files.
        plan = _valid_plan(script_plan_path(os.path.realpath(script)), _SCRIPT_MAGIC, flags, cwd)
        if plan is not None:
            _exec_own(plan, list(argv), cmd[1:])
        return
    root = cwd
    while not os.path.isfile(root + "/pyproject.toml"):
        parent = os.path.dirname(root)
        if parent == root:
            return
        root = parent
    plan = _valid_plan(plan_path(root), _MAGIC, flags, cwd)
    if plan is not None:
        _exec(plan, list(argv), python_for_script(cmd, cwd))


def _exec_own(plan: dict[str, Any], argv: list[str], args: list[str]) -> None:
    """_exec for a command in an environment of its own (its plan's prefix, then `args`), the
    environment touched first as its ordinary run touches it (pypm.toolrun.current_venv): `pypm
    cache prune` removes the environments unused for its --days, and a replayed run is a use."""
    prefix = [os.fsdecode(p) for p in plan["prefix"]]
    if not prefix:
        return
    try:  # the prefix's first word is <environment>/.venv/bin/<python or the tool's command>
        os.utime(os.path.dirname(os.path.dirname(os.path.dirname(prefix[0]))))
    except OSError:
        pass
    _exec(plan, argv, [*prefix, *args])


def _valid_plan(path: str, magic: bytes, flags: list[str], cwd: str) -> dict[str, Any] | None:
    """The plan at `path` when it is this user's, of its kind, and every input it was decided
    from is seen unchanged (see the module's docstring); else None."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not ours(st):
                return None  # only a plan this user wrote, that nobody else could have changed
            # ... in a directory nobody else can write either (in a shared cache, another user
            # could otherwise keep an old plan of ours aside and rename it back later)
            if not ours(os.stat(os.path.dirname(path))):
                return None
            fields = f.read().split(b"\0")
    except OSError:
        return None
    try:
        plan = _parse(fields, magic)
    except (ValueError, IndexError):
        return None
    if plan is None or plan["flags"] != "\x1f".join(flags).encode() or plan["cwd"] != os.fsencode(cwd):
        return None
    if plan["uid"] != os.getuid() or plan["gid"] != os.getgid() or plan["env"] != _environ(plan["names"]):
        return None
    for p, ident in plan["idents"]:
        if not _check(p, ident):
            return None
    return plan


def has_script_block(path: str) -> bool:
    """Whether `path` is a .py file holding a PEP 723 `# /// script` block's opening line: such a
    script runs in an environment of its own (pypm.script), never as the current project's
    command. Here, the first module of `pypm run`'s path, for the launcher and run's fast path."""
    if not path.endswith(".py") or not os.path.isfile(path):  # (a FIFO would block the open)
        return False
    try:
        with open(path, "rb") as f:
            return b"# /// script" in f.read(1 << 20)
    except OSError:
        return False


def python_for_script(cmd: list[str], cwd: str) -> list[str]:
    """`pypm run foo.py ARGS` runs `python foo.py ARGS` when foo.py is a file (as `uv run`
    does): a script is rarely executable, and its shebang would name some other Python. Here
    (the first module of `pypm run`'s path) for the launcher, run's fast path and the CLI alike."""
    if cmd and cmd[0].endswith(".py") and os.path.isfile(os.path.join(cwd, cmd[0])):
        return ["python", *cmd]
    return cmd


def _parse(fields: list[bytes], magic: bytes = _MAGIC) -> dict[str, Any] | None:
    if fields[0] != magic:
        return None
    it = iter(fields[1:])
    plan: dict[str, Any] = {"flags": next(it), "cwd": next(it), "uid": int(next(it)), "gid": int(next(it))}
    n = int(next(it))
    plan["idents"] = [(next(it), next(it)) for _ in range(n)]
    n = int(next(it))
    plan["names"] = frozenset(next(it) for _ in range(n))
    n = int(next(it))
    plan["env"] = [next(it) for _ in range(n)]
    plan["programs"] = bytes.fromhex(next(it).decode())
    n = int(next(it))
    plan["args"] = [next(it) for _ in range(n)]
    if magic == _SCRIPT_MAGIC:
        n = int(next(it))
        plan["prefix"] = [next(it) for _ in range(n)]
    if next(it) != b"end":
        return None
    return plan


def _exec(plan: dict[str, Any], argv: list[str], cmd: list[str]) -> None:
    """Become the helper. Every fd made here is closed again when anything fails."""
    args = [os.fsdecode(a) for a in plan["args"]]
    base = os.environ.get("TMPDIR") or "/tmp"
    root = os.path.join(base, f"pypm-sandbox.{os.getpid()}.{os.urandom(6).hex()}")
    made: list[int] = []
    try:
        os.mkdir(root, 0o700)
    except OSError:
        return
    try:
        rfd, wfd = os.pipe()  # both inherited: the helper reads one, its children write the other
        made += [rfd, wfd]
        sfd = -1
        if plan["programs"]:
            sfd = os.memfd_create("pypm-seccomp", 0)  # inherited by the helper, which closes it
            made.append(sfd)
            view = memoryview(plan["programs"])
            while view:
                view = view[os.write(sfd, view):]
        os.set_inheritable(rfd, True)
        os.set_inheritable(wfd, True)
        if sfd >= 0:
            os.set_inheritable(sfd, True)
        args[1], args[2], args[8] = str(wfd), str(sfd), root  # native.plan_argv's layout
        fallback = [sys.executable, "-m", "pypm", *argv]
        for f in (sys.stdout, sys.stderr):
            if f is not None:  # None: pypm was started with that fd closed
                f.flush()
        os.execv(args[0], [args[0], "--launch", str(rfd), str(len(fallback)), *fallback, *args[1:], "--", *cmd])
    except (OSError, IndexError, ValueError):  # IndexError: a damaged plan; the ordinary path runs
        pass
    for fd in made:
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        os.rmdir(root)
    except OSError:
        pass


# --------------------------------------------------------------------------- recording

def _env_files(flags: Sequence[str], cwd: str) -> list[str]:
    """The dotenv files this run reads (fastpath.env_file_names: --env-file in `flags`, as _split
    keeps them, else PYPM_ENV_FILE, which is among the checked variables), as pypm.run.env_file_vars
    finds them: from the current directory, `~` expanded (HOME is checked too)."""
    from .fastpath import env_file_names

    named = [f.partition("=")[2] for f in flags if f.startswith(_ENV_FILE + "=")]
    named += [flags[i + 1] for i, f in enumerate(flags[:-1]) if f == _ENV_FILE]
    files, _ = env_file_names(named, "--no-env-file" in flags)
    return [os.path.join(cwd, os.path.expanduser(f)) for f in files]


def _identity_paths(root: str, venv: str, policy: Any, tool: dict[str, Any]) -> list[str]:
    from sandbox.seccomp import profile_path

    paths = [os.path.join(root, "pyproject.toml"), os.path.join(root, "pypm.lock"), os.path.join(root, ".venv"),
             os.path.join(root, ".git"), os.path.join(venv, ".pypm", "state.json"), os.path.join(venv, "pyvenv.cfg"),
             os.path.join(venv, "bin", "python"), os.path.realpath(os.path.join(venv, "bin", "python")),
             "/etc/passwd", "/etc/group"]
    lib = os.path.join(venv, "lib")
    for py in sorted(os.listdir(lib)) if os.path.isdir(lib) else []:
        site = os.path.join(lib, py, "site-packages")
        if py.startswith("python") and os.path.isdir(site):
            paths.append(site)
            paths += [os.path.join(site, n) for n in sorted(os.listdir(site)) if n.endswith(".pth")]
    if policy.seccomp:
        paths.append(profile_path(policy.seccomp))
    rec = tool.get("plugin-run")
    if isinstance(rec, dict):
        paths += [e[0] for e in rec.get("files") or () if isinstance(e, list) and e and isinstance(e[0], str)]
    # Path dependencies (pypm.pathdeps): the files their inputs token covers, since run's check
    # compares it. state.json's own identity above vouches for the list read here.
    from .fastpath import json_loads

    try:
        with open(os.path.join(venv, ".pypm", "state.json"), encoding="utf-8") as f:
            tokens = json_loads(f.read()).get("path-tokens") or {}
    except (OSError, ValueError, AttributeError):
        tokens = {}
    for d in sorted(tokens):
        paths += [os.path.join(d, n) for n in ("pyproject.toml", "setup.py", "setup.cfg")]
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths += [os.path.join(top, rel) for rel in _CODE]
    return paths


def _resolve_paths(root: str, venv: str, policy: Any, tool: dict[str, Any]) -> list[str]:
    """Paths the policy holds only in resolved form (sandbox.host.resolve_bind, pth_paths,
    interpreter_prefixes, seccomp.profile_path): each is checked to resolve the same way."""
    out = []
    sb = tool.get("sandbox")
    if not isinstance(sb, dict):
        sb = {}
    for spec in [*(sb.get("bind") or ()), *(sb.get("ro-bind") or ())]:
        out.append(os.path.join(root, os.path.expanduser(str(spec).partition(":")[0])))
    lib = os.path.join(venv, "lib")
    for py in sorted(os.listdir(lib)) if os.path.isdir(lib) else []:
        site = os.path.join(lib, py, "site-packages")
        if not (py.startswith("python") and os.path.isdir(site)):
            continue
        for n in sorted(os.listdir(site)):
            if n.endswith(".pth"):
                with open(os.path.join(site, n), encoding="utf-8", errors="replace") as f:
                    lines = [line.strip() for line in f.read().splitlines()]
                out += [os.path.join(site, line) for line in lines
                        if line and not line.startswith(("#", "import ", "import\t"))]
    try:
        with open(os.path.join(venv, "pyvenv.cfg"), encoding="utf-8") as f:
            out += [v.strip() for k, sep, v in (line.partition("=") for line in f) if sep and k.strip() == "home"]
    except OSError:
        pass
    if policy.seccomp and "/" in policy.seccomp:
        out.append(os.path.expanduser(policy.seccomp))
    return out


def record(root: str, venv: str, flags: Sequence[str], policy: Any, tool: dict[str, Any], cache_dir: str,
           own: tuple[str, Sequence[str], Sequence[str]] | None = None, vouch: Sequence[str] = ()) -> bool:
    """Write the plan that `launch` can replay for this run (atomically); False when this run
    cannot be replayed (no compiled helper, the Python runner asked for, a file changed too
    recently to vouch for, ...). Never raises: a run without a plan is only slower.

    `own`: a command in an environment of its own (a PEP 723 script's run, pypm.script, or
    `pypm x`'s, pypm.toolrun), as (the plan's path: script_plan_path or tool_plan_path, the files
    that decided the environment and the command: the script, or the tool's command, and the
    environment's pyproject.toml and pypm.lock, the command's first words). `root` is then the
    directory the run binds (the current one), and the plan also vouches for those files and the
    Python pypm runs on (which keys the environment). `vouch`: more files the plan checks (a
    project run's `--with` environment: its pyproject.toml, pypm.lock, state and hook)."""
    try:
        return _record(root, venv, flags, policy, tool, cache_dir, own, vouch)
    except Exception:  # noqa: BLE001 - recording is an optimisation; the run goes on either way
        return False


def _record(root: str, venv: str, flags: Sequence[str], policy: Any, tool: dict[str, Any], cache_dir: str,
            own: tuple[str, Sequence[str], Sequence[str]] | None = None, vouch: Sequence[str] = ()) -> bool:
    import time

    from sandbox import native
    from sandbox.seccomp import programs_for

    if NO_LAUNCHER_ENV in os.environ or os.environ.get(native.MODE_ENV, "") not in ("", "native"):
        return False
    from sandbox.policy import ENV_ALLOW_PREFIXES, ENV_ALLOWLIST

    if any(not os.fsencode(p).startswith(_ENV_PREFIXES) for p in ENV_ALLOW_PREFIXES):
        return False  # an allowlisted prefix the comparison would not cover
    sb = tool.get("sandbox")
    if not isinstance(sb, dict):
        sb = {}
    passthrough = [str(e).partition("=")[0] for e in sb.get("env") or ()]
    names = frozenset(os.fsencode(n) for n in (*ENV_ALLOWLIST, *_ENV_READ, *passthrough))
    exe = native.helper(cache_dir)
    if exe is None:
        return False
    # Measured from when this run began deciding, not from now: a file changed in between
    # (after the decision read it) would otherwise vouch for a decision made from its old content.
    since = min(time.time_ns(), _started_ns or time.time_ns())
    paths = _identity_paths(root, venv, policy, tool) + [exe] + _env_files(flags, os.getcwd())
    if own is not None:
        paths += [*own[1], os.path.realpath(sys.executable)]
    paths += list(vouch)
    idents = []
    for p in paths:
        try:
            st = os.lstat(p)
            if since - max(st.st_mtime_ns, st.st_ctime_ns) < _RECENT_NS:
                return False  # too fresh: the next run records it
            if st.st_mode & 0o170000 == 0o120000:
                st = os.stat(p)
                if since - max(st.st_mtime_ns, st.st_ctime_ns) < _RECENT_NS:
                    return False
        except OSError:
            pass
        idents.append((os.fsencode(p), _ident(p)))
    idents += [(os.fsencode(p), _resolved(p)) for p in _resolve_paths(root, venv, policy, tool)]
    programs = b"".join(len(p).to_bytes(4, "little") + p for p in programs_for(policy.seccomp, cache_dir))
    from sandbox.caller import protect_cache

    policy = protect_cache(policy, cache_dir)  # as caller.run does: the plan mounts what a run would
    args = native.plan_argv(exe, policy, [], status_fd=-1, seccomp_fd=-1, root="ROOT", uid=os.getuid(),
                            gid=os.getgid(), old_mask=())
    args = args[:-1]  # without the "--" that plan_argv ends with (launch adds it before the command)
    fields = [_MAGIC if own is None else _SCRIPT_MAGIC, "\x1f".join(flags).encode(), os.fsencode(os.getcwd()), b"%d" % os.getuid(), b"%d" % os.getgid(),
              b"%d" % len(idents)]
    for path_b, ident in idents:
        fields += [path_b, ident]
    env = _environ(names)
    fields += [b"%d" % len(names), *sorted(names), b"%d" % len(env), *env, programs.hex().encode(),
               b"%d" % len(args), *map(os.fsencode, args)]
    if own is not None:
        fields += [b"%d" % len(own[2]), *map(os.fsencode, own[2])]
    fields.append(b"end")
    if any(b"\0" in f for f in fields):
        return False
    target = plan_path(root, cache_dir) if own is None else own[0]
    os.makedirs(os.path.dirname(target), 0o700, exist_ok=True)
    from .fastpath import replace_file

    replace_file(target, b"\0".join(fields), mode=0o600)  # O_EXCL: never through a planted link
    return True
