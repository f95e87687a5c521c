"""What the entry point's fast paths (run, no-op sync) share, importing nothing but `os`.

These run before argparse and the CLI load, so they cannot use `project.find_project_root`
(pathlib) or `selection.Selection` (dataclasses), nor hashlib (OpenSSL, ~2 ms) or the json
package (re and enum, ~3 ms); a test checks that the values here agree with those modules.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not from typing (~2 ms): annotations are strings here
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

__all__ = ["DEFAULT_SELECTION", "find_root", "sha256", "sha256_file", "json_loads", "json_dumps", "plain_sync_argv",
           "replace_file", "read_own_file", "FLAGS", "FLAG_YES", "FLAG_NO", "flag_value", "flags_readable"]

# venvstate._selection_json(Selection.from_flags()): the selection of a bare `pypm sync`/`pypm run`.
DEFAULT_SELECTION = {"main": True, "extras": [], "groups": ["dev"], "include-project": True}

if TYPE_CHECKING:  # pragma: no cover - _sha256 has no stubs: mypy sees hashlib's, the same digest
    from hashlib import sha256
else:
    try:  # the builtin module (3.11) rather than hashlib, which loads OpenSSL (~2 ms); the same digest
        from _sha256 import sha256
    except ImportError:  # pragma: no cover - other Pythons
        from hashlib import sha256


def owner_trusted(st: os.stat_result) -> bool:
    """A pyproject.toml found *above* the starting directory is used only when this user or root
    owns it. As git refuses a repository another user owns (CVE-2022-24765): on a shared machine
    anyone can write /tmp/pyproject.toml, name a venv or a workspace there, and wait for a
    `pypm run` in some directory below it. (One named with -C, or the current directory's own,
    is the user's explicit choice.)"""
    return st.st_uid == os.getuid() or st.st_uid == 0


def find_root(start: str | None = None) -> str | None:
    """The nearest directory at or above `start` (default: the cwd) holding a pyproject.toml; None
    when there is none, or when the one found above `start` is another user's (owner_trusted: the
    full path then says so)."""
    try:
        root = start if start is not None else os.getcwd()  # getcwd is already free of symlinks
    except OSError:
        return None
    first = root
    while True:
        try:
            st = os.stat(os.path.join(root, "pyproject.toml"))  # (the one stat os.path.isfile made)
        except OSError:
            st = None
        if st is not None and st.st_mode & 0o170000 == 0o100000:  # a regular file
            return root if root == first or owner_trusted(st) else None
        parent = os.path.dirname(root)
        if parent == root:
            return None
        root = parent


_SYNC_FLAGS = frozenset({"-q", "--quiet", "--frozen"})

# The spellings of yes and no of an on/off environment variable (config.env_flag reads them).
FLAG_YES = frozenset({"1", "true", "t", "yes", "y", "on"})
FLAG_NO = frozenset({"", "0", "false", "f", "no", "n", "off"})
# Every on/off variable pypm reads (a test checks that no other name is given to env_flag).
FLAGS = ("PYPM_OFFLINE", "PYPM_FETCH_PROCESS", "PYPM_NATIVE_TLS", "PYPM_NO_ENV_FILE")


def flag_value(name: str, default: bool = False) -> bool | None:
    """The on/off environment variable `name`: `default` when unset or empty, True or False for a
    yes or a no, None for anything else (config.env_flag refuses that with its message)."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return True if value in FLAG_YES else False if value in FLAG_NO else None


def flags_readable() -> bool:
    """Every on/off variable is unset, a yes or a no. When one is not, the entry point takes no
    fast path: the CLI refuses the value with its message, as a command that reads it does (a
    no-op `pypm sync` once answered "nothing to do" with PYPM_OFFLINE=maybe, where every
    command that got as far as reading it stopped with exit status 2)."""
    return all(flag_value(name) is not None for name in FLAGS)


def env_file_names(given: list[str], no_env_file: bool) -> tuple[list[str], str]:
    """The dotenv files a run reads (`run`, `shell`, `x`, a script's), as uv's, and where they were
    named: the --env-file flags; without any, PYPM_ENV_FILE (paths separated by os.pathsep, as
    PATH's); none with --no-env-file or PYPM_NO_ENV_FILE. One rule for pypm.run and the
    launcher's plans."""
    if no_env_file or flag_value("PYPM_NO_ENV_FILE"):
        return [], ""
    if given:
        return list(given), "--env-file"
    return [f for f in os.environ.get("PYPM_ENV_FILE", "").split(os.pathsep) if f.strip()], "PYPM_ENV_FILE"


def plain_sync_argv(argv: list[str]) -> bool:
    """`pypm [-q] sync [-q|--frozen]...`: the only forms the entry point's sync fast paths
    (venvstate.fast_sync, syncrecipe.fast_fresh_sync) answer; anything else is the CLI's."""
    if "sync" not in argv[:2] or not set(argv) - {"sync"} <= _SYNC_FLAGS or argv.count("sync") != 1:
        return False
    return argv[0] == "sync" or argv[0] in ("-q", "--quiet")


def replace_file(path: str, data: bytes | list[bytes | memoryview], mode: int = 0o644, *,
                 durable: bool = False) -> None:
    """Write `data` (or its parts, one after the other) to a temp file beside `path` and rename
    it over `path`: a reader sees the old file or the new one. No fsync unless `durable`: for
    caches and state that a crash of the machine may lose (the next run re-derives them); a
    record that must be on disk before what it protects is written asks for it."""
    tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with open(fd, "wb") as f:
            for part in [data] if isinstance(data, bytes) else data:
                f.write(part)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_own_file(path: str) -> tuple[bytes, os.stat_result] | None:
    """The bytes of `path` and its stat when it is a regular file the cache user owns and nobody
    else can write (sandbox.cachedir.ours), else None (unreadable too): for cache files that decide
    what a venv is built from (a sync recipe, a kept plan). Opened with O_NONBLOCK: a FIFO put in
    its place is refused by its type, not waited on. (`ours` is not imported: the fresh-venv fast
    path that reads these imports nothing from `sandbox`, and a test holds it to that.)"""
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_mode & 0o170000 != 0o100000 or st.st_uid != os.getuid() or st.st_mode & 0o022:
                return None
            return f.read(), st
    except OSError:
        return None


# pypm.lock's format version (pypm.lockfile's, which imports it from here: the no-op lock below
# keys its records by it without loading the lock module).
LOCK_VERSION = 1
LOCK_SEEN_DIR = "lock-seen"
_NOOP_LOCK_FLAGS = frozenset({"-q", "--quiet", "--check"})


def lock_seen_path(data: bytes, cache_dir: str) -> str:
    """Where pypm.locking records that the lock bytes `data` were read and found valid by this
    version of pypm (content-addressed: it never goes stale)."""
    from . import __version__

    key = sha256(f"{__version__}\0{LOCK_VERSION}\0".encode() + data).hexdigest()
    return os.path.join(cache_dir, LOCK_SEEN_DIR, key[:2], f"{key}.json")


def noop_lock_argv(argv: list[str]) -> bool:
    """`pypm [-q] lock [-q] [--check]`: the forms the no-op lock's fast paths answer (this module's
    noop_lock, then locking.fast_lock); anything else is the CLI's."""
    return (argv.count("lock") == 1 and set(argv) - {"lock"} <= _NOOP_LOCK_FLAGS
            and (argv[0] == "lock" or argv[0] in ("-q", "--quiet")))


def say_lock_current(argv: list[str], packages: int, started: float) -> None:
    """What the full `pypm lock` (`--check`) says of a current lock, unless -q."""
    import sys
    import time

    if not ({"-q", "--quiet"} & set(argv)):
        print(f"pypm.lock is up to date ({packages} packages)" if "--check" in argv else
              f"Resolved {packages} packages in {time.monotonic() - started:.2f}s (pypm.lock is up to date)",
              file=sys.stderr)


def noop_lock(argv: list[str]) -> int | None:
    """`pypm [-q] lock [-q] [--check]` answered from two small files, before pypm.locking loads
    (~45 ms of imports: dataclasses, packaging, the lock's model): 0 and the full command's
    message when the lock's record (lock_seen_path) says that this very pyproject.toml, in this
    very directory, was found current with these very lock bytes by this kind of command
    (locking._note_noop records that, only for a project whose inputs are all in those bytes: no
    path, git or URL source, no workspace, no relative find-links, the index named in the lock or
    the project rather than taken from the environment). Else None, nothing done."""
    import time

    started = time.monotonic()
    if not noop_lock_argv(argv):
        return None
    root = find_root()
    if root is None:
        return None
    from .config import cache_dir_str

    try:
        with open(os.path.join(root, "pypm.lock"), "rb") as f:
            data = f.read()
        with open(lock_seen_path(data, cache_dir_str()), encoding="utf-8") as f:
            seen = json_loads(f.read())
        memo = seen["unchanged"]
        if (memo["root"] != root or ("check" if "--check" in argv else "lock") not in memo["modes"]
                or memo["pyproject-sha256"] != sha256_file(os.path.join(root, "pyproject.toml"))):
            return None
        n = int(seen["packages"])
    except (OSError, ValueError, LookupError, TypeError):
        return None
    say_lock_current(argv, n, started)
    return 0


def sha256_file(path: str | os.PathLike[str]) -> str | None:
    """The file's sha256 (hex), or None when it does not exist or cannot be read (a directory, no
    permission): the fast paths then step aside and the full command says what is wrong."""
    try:
        with open(path, "rb") as f:
            return sha256(f.read()).hexdigest()
    except OSError:
        return None


class NoCycleCollection:
    """`with NoCycleCollection():` -- no cyclic garbage collection inside (a lock's resolution, a
    sync: many objects that live until the end, which the collector would walk again and again).
    Afterwards, if it was on, it resumes with everything alive frozen first, or its first pass
    would walk all of it at once; those objects are still freed by their reference counts, only
    cycles among them stay. A class, not contextlib: this module is on `pypm run`'s path."""

    def __enter__(self) -> None:
        import gc

        self._was_on = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self._was_on:
            import gc

            gc.freeze()
            gc.enable()


class _JSONContext:
    """What json's C scanner reads from a JSONDecoder (strict JSON, plain dicts and numbers)."""

    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        raise ValueError(f"{name} is not JSON")


def path_tokens_current(tokens: Any) -> bool:
    """state.json's "path-tokens" ({directory: token}) still hold: each path dependency's
    pyproject.toml, setup.py and setup.cfg are as they were at the sync (True when it has none)."""
    if tokens is None:
        return True
    if not isinstance(tokens, dict):
        return False
    from .venvstate import project_token

    return all(isinstance(d, str) and project_token(d) == t for d, t in tokens.items())


def json_loads(text: str) -> Any:
    """json.loads with json's own C scanner, without the json package: json.decoder imports re
    (and re enum), ~3 ms of a fast path for one small file. Bad JSON: ValueError."""
    try:
        from _json import make_scanner
    except ImportError:  # pragma: no cover - a Python without the accelerator
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(" \t\n\r"))
    try:
        value, end = make_scanner(_JSONContext())(text, start)  # type: ignore[arg-type]  # a duck-typed context
    except (StopIteration, SystemError, ValueError):
        # The scanner raises json.decoder's JSONDecodeError, which it finds only once json is
        # imported (else: SystemError): on this error path, let json itself say what is wrong.
        import json

        return json.loads(text, parse_constant=_JSONContext.parse_constant)
    if text[end:].strip(" \t\n\r"):
        raise ValueError("extra data after the JSON value")
    return value


def json_dumps(value: Any, *, indent: bool = True) -> str:
    """json.dumps(value, indent=2, sort_keys=True) for str, int, bool, None, lists and dicts with
    str keys, with json's C string encoder and without the json package (see json_loads); any
    other value: TypeError (ValueError for a float, which this does not write). `indent=False`:
    json.dumps(value, sort_keys=True), on one line with its ", " and ": " separators."""
    from _json import encode_basestring_ascii as enc

    out: list[str] = []
    put = out.append
    nl, step = ("\n", "  ") if indent else ("", "")

    def write(v: Any, pad: str) -> None:
        if type(v) is str:
            put(enc(v))
        elif v is None:
            put("null")
        elif v is True:
            put("true")
        elif v is False:
            put("false")
        elif type(v) is int:
            put(int.__repr__(v))
        elif type(v) is list or type(v) is tuple:
            if not v:
                put("[]")
                return
            inner = pad + step
            put("[" + nl + inner)
            for i, x in enumerate(v):
                if i:
                    put("," + (nl + inner if indent else " "))
                write(x, inner)
            put(nl + pad + "]")
        elif type(v) is dict:
            if not v:
                put("{}")
                return
            if not all(type(k) is str for k in v):
                raise TypeError("json_dumps writes only str keys")
            inner = pad + step
            put("{" + nl + inner)
            for i, k in enumerate(sorted(v)):
                if i:
                    put("," + (nl + inner if indent else " "))
                put(enc(k) + ": ")
                write(v[k], inner)
            put(nl + pad + "}")
        elif isinstance(v, float):
            raise ValueError("json_dumps does not write floats")
        else:
            raise TypeError(f"json_dumps cannot write {type(v).__name__}")

    write(value, "")
    return "".join(out)


def terminate_as_interrupt() -> None:
    """SIGTERM raises errors.Terminated in the main thread, as Ctrl-C raises KeyboardInterrupt: killed
    outright, a sync or lock left its temporary build trees behind and its running builds to
    their end, and a fresh venv half-built for the next run to find. Not when SIGTERM was ignored
    (or handled) when pypm started: a supervisor's choice. Installed by the CLI and by the entry
    point's fresh-venv sync (pypm.syncrecipe); `pypm run` passes SIGTERM on to its command while
    that runs (run.spawn_and_wait)."""
    import _signal as signal  # (the builtin module: `signal` imports enum, ~1 ms on a fast path)

    def terminated(signum: int, frame: object) -> None:
        from .errors import Terminated  # (only when it comes: pypm.errors is ~0.5 ms of a fresh venv's 40)

        raise Terminated()

    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, terminated)
