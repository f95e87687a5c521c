"""The `pypm lock` workflow: inputs -> content-hash fast path -> resolve -> pypm.lock, atomically.

Also `ensure_lock`, which sync/run/export call to get a current lock. The fast path (lock
fresh, nothing asked to change) imports neither httpx, resolvelib nor pypm.index; `fast_lock`
answers a no-op `pypm lock` from the entry point, before the CLI loads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .errors import ExitCode, IndexError_, IntegrityError, LockError, ResolutionError, StaleLockError, UsageError
from .lockfile import LOCK_NAME, Dependency, FileEntry, Lock, LockedPackage, canonical_name
from .project import INDEX_STRATEGIES, PRERELEASE_MODES, Project, content_hash

__all__ = ["LockOptions", "lock_project", "ensure_lock", "lock_inputs_hash", "fast_lock"]

DEFAULT_PRERELEASE = "if-necessary-or-explicit"
PEP517_DEFAULT_BUILD_REQUIRES = ("setuptools>=40.8.0",)


@dataclass(frozen=True)
class LockOptions:
    refresh: bool = False
    check: bool = False
    upgrade: bool = False
    upgrade_package: tuple[str, ...] = ()
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    prerelease: str | None = None
    index_strategy: str | None = None
    no_build: bool = False
    no_binary: bool = False
    exclude_newer: str | None = None
    offline: bool = False
    from_pylock: str | None = None
    sign: str | None = None
    dry_run: bool = False  # `lock --dry-run`: resolve and say what would change; write nothing

    @classmethod
    def from_args(cls, args: Any) -> "LockOptions":
        def g(k: str, d: Any = None) -> Any:  # sync/run namespaces lack some flags
            return getattr(args, k, d)

        fl = tuple(x if "://" in x else str(Path(x).expanduser().resolve()) for x in g("find_links", []) or [])
        opts = cls(
            refresh=bool(g("refresh", False)), check=bool(g("check", False)), upgrade=bool(g("upgrade", False)),
            upgrade_package=tuple(canonical_name(x) for x in g("upgrade_package", []) or []),
            index_url=g("index_url"), extra_index_urls=tuple(g("extra_index_url", []) or []), find_links=fl,
            prerelease=g("prerelease"), index_strategy=g("index_strategy"),
            no_build=bool(g("no_build", False)), no_binary=bool(g("no_binary", False)),
            exclude_newer=g("exclude_newer"), offline=bool(g("offline", False)), from_pylock=g("from_pylock"),
            sign=g("sign"), dry_run=bool(g("dry_run", False)),
        )
        if opts.exclude_newer:
            _parse_exclude_newer(opts.exclude_newer)  # fail early on a bad date
        return opts

    @classmethod
    def from_lock(cls, lock: Lock, *, offline: bool = False) -> "LockOptions":
        """The options a lock was made with (those given on the command line are recorded in it)."""
        return cls.from_recorded(lock.options, offline=offline)

    @classmethod
    def from_recorded(cls, o: Mapping[str, Any], *, offline: bool = False) -> "LockOptions":
        """The options a lock's [options] table `o` records (checked: a string where an array
        belongs would otherwise be read as one source per character)."""

        def bad(key: str, what: str) -> LockError:
            return LockError(f"{LOCK_NAME}: [options] {key} must be {what}, not {o[key]!r}",
                             hint="re-create the lock with `pypm lock`")

        for key in ("extra-index-url", "find-links"):
            v = o.get(key, [])
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise bad(key, "an array of strings")
        for key in ("index-url", "prerelease", "exclude-newer", "index-strategy"):
            if o.get(key) is not None and not isinstance(o[key], str):
                raise bad(key, "a string")
        if o.get("index-strategy") is not None and o["index-strategy"] not in INDEX_STRATEGIES:
            raise bad("index-strategy", f"one of {', '.join(INDEX_STRATEGIES)}")
        for key in ("no-build", "no-binary"):
            if not isinstance(o.get(key, False), bool):
                raise bad(key, "true or false")
        return cls(
            index_url=o.get("index-url"), extra_index_urls=tuple(o.get("extra-index-url", ())),
            find_links=tuple(o.get("find-links", ())), prerelease=o.get("prerelease"),
            index_strategy=o.get("index-strategy"), no_build=o.get("no-build", False), no_binary=o.get("no-binary", False),
            exclude_newer=o.get("exclude-newer"), offline=offline,
        )

    def over(self, base: "LockOptions") -> "LockOptions":
        """These options, with every resolution option left unset here taken from `base`."""
        from dataclasses import fields, replace

        names = ("index_url", "extra_index_urls", "find_links", "prerelease", "no_build", "no_binary",
                 "exclude_newer", "index_strategy")
        unset = {f.name: getattr(base, f.name) for f in fields(self)
                 if f.name in names and getattr(self, f.name) in (None, (), False)}
        return replace(self, **unset)

    def recorded(self) -> dict[str, Any]:
        """What goes into the lock's [options] table: what the command line chose."""
        from .credentials import strip

        d: dict[str, Any] = {}
        if self.index_url:
            d["index-url"] = strip(self.index_url)  # never a password in pypm.lock
        if self.extra_index_urls:
            d["extra-index-url"] = [strip(u) for u in self.extra_index_urls]
        if self.find_links:
            d["find-links"] = [strip(u) for u in self.find_links]
        if self.prerelease:
            d["prerelease"] = self.prerelease
        if self.index_strategy:
            d["index-strategy"] = self.index_strategy
        if self.no_build:
            d["no-build"] = True
        if self.no_binary:
            d["no-binary"] = True
        if self.exclude_newer:
            d["exclude-newer"] = self.exclude_newer
        return d


@dataclass(frozen=True)
class _Inputs:
    index_url: str
    extra_index_urls: tuple[str, ...]
    find_links: tuple[str, ...]
    prerelease: str
    hash: str
    options: Mapping[str, Any] = field(default_factory=dict)
    index_strategy: str = "first-index"
    # pypm.pathdeps: the path sources, and the requirement arrays with local direct references
    # made plain names ({"dependencies": ..., "optional:X": ..., "group:X": ...}).
    local: Mapping[str, Any] = field(default_factory=dict)
    requirements: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    members: tuple[str, ...] = ()  # the workspace's members (pypm.pathdeps.workspace_members)


def _parse_exclude_newer(value: str) -> Any:
    from datetime import datetime, timezone

    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--exclude-newer {value!r} is not a date",
                         hint="use RFC 3339 (2024-05-01T00:00:00Z) or YYYY-MM-DD") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _check_urls(urls: Iterable[str]) -> None:
    """Refuse a source URL that cannot even be split (`http://[::1`, `http://host:abc/`) here,
    where every source is known, rather than deep in the index client."""
    import urllib.parse

    for url in urls:
        if "://" not in url:
            continue  # a local directory
        try:
            urllib.parse.urlsplit(url).port  # the port is only checked when asked for
        except ValueError as e:
            raise UsageError(f"{url!r} is not a valid URL ({e})",
                             hint="fix it where it is set: --index-url, --extra-index-url or --find-links, "
                                  "[tool.pypm] in pyproject.toml, PYPM_INDEX_URL or PIP_INDEX_URL") from None


def _inputs(project: Project, opts: LockOptions) -> _Inputs:
    from .config import default_index_url

    from .credentials import strip

    # Without `user:password@`: they are kept for the requests (pypm.credentials), never recorded in
    # the lock or its content-hash (a new password does not make the lock stale).
    index_url = strip(default_index_url(opts.index_url, project.tool.index_url))
    extra = tuple(dict.fromkeys(strip(u) for u in opts.extra_index_urls + project.tool.extra_index_urls))
    find_links = tuple(dict.fromkeys(strip(u) for u in opts.find_links + project.find_links_paths()))
    _check_urls((index_url, *extra, *find_links))
    prerelease = opts.prerelease or project.tool.prerelease or DEFAULT_PRERELEASE
    if prerelease not in PRERELEASE_MODES:
        raise UsageError(f"--prerelease {prerelease!r} is not one of {', '.join(PRERELEASE_MODES)}")
    options = {"prerelease": prerelease, "exclude-newer": opts.exclude_newer,
               "no-build": opts.no_build, "no-binary": opts.no_binary}
    strategy = opts.index_strategy or project.tool.index_strategy or INDEX_STRATEGIES[0]
    if strategy not in INDEX_STRATEGIES:
        raise UsageError(f"--index-strategy {strategy!r} is not one of {', '.join(INDEX_STRATEGIES)}")
    if strategy != INDEX_STRATEGIES[0]:  # (only then: the content-hash of other locks stays what it was)
        options["index-strategy"] = strategy
    sources: dict[str, Any] = {"index-url": index_url, "extra-index-urls": list(extra), "find-links": list(find_links)}
    local: Mapping[str, Any] = {}
    requirements: Mapping[str, tuple[str, ...]] = {}
    members: tuple[str, ...] = ()
    texts = (*project.dependencies, *(t for v in project.optional_dependencies.values() for t in v),
             *(t for v in project.dependency_groups.values() for t in v))
    # pypm.pathdeps only for a project with path sources, a workspace or a direct reference: the
    # no-op `pypm lock` runs this too, and most projects have none of them
    if project.tool.sources or project.tool.workspace is not None or any("@" in t for t in texts):
        from .pathdeps import collect, hash_inputs

        local, requirements, members = collect(project)
    if local:  # (only then: the content-hash of a lock without path sources stays what it was)
        sources["path-sources"] = hash_inputs(local, project.root)
    if members:
        sources["workspace-members"] = list(members)
    return _Inputs(index_url, extra, find_links, prerelease, content_hash(project, options, sources), options,
                   strategy, local, requirements, members)


def lock_inputs_hash(project: Project, opts: LockOptions | None = None) -> str:
    """The content-hash a lock of `project` made with `opts` carries."""
    return _inputs(project, opts or LockOptions()).hash


def _read_old(path: Path, ctx: Any) -> Lock | None:
    if not path.exists():
        return None
    from .lockfile import loads, read

    try:
        try:
            data = path.read_bytes()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return read(path)  # raises the LockError that says what is wrong with the file
        lock = loads(text, path)
    except LockError as e:
        ctx.info(f"warning: ignoring the existing {path.name}: {e.message}")
        return None
    _remember(data, lock)
    return lock


# ---------------------------------------------------------------------- the command

def lock_project(ctx: Any, project: Project, opts: LockOptions) -> int:
    """`pypm lock`: returns the exit code."""
    started = time.monotonic()
    path = project.root / LOCK_NAME
    old = _read_old(path, ctx)
    if old is not None:
        opts = _with_recorded(project, opts, LockOptions.from_lock(old))
    inputs = _inputs(project, opts)
    asks_change = opts.upgrade or bool(opts.upgrade_package) or opts.refresh or bool(opts.from_pylock)
    fresh = old is not None and old.content_hash == inputs.hash
    if opts.check:
        if old is None:
            what = "cannot be read (see above)" if path.exists() else "does not exist"
            raise StaleLockError(f"{path} {what}", hint="run `pypm lock` and commit the result")
        if not fresh:
            raise StaleLockError(f"{path} is out of date: pyproject.toml or the lock options changed since it was made",
                                 hint="run `pypm lock` and commit the result")
        _refuse_stale_version(path, old, project, "run `pypm lock` and commit the result")
        ctx.info(f"{path.name} is up to date ({_count(old)} packages)")
        _note_noop(project.root)
        return ExitCode.OK
    if opts.dry_run:
        return _dry_run(ctx, project, opts, inputs, old, fresh and not asks_change, started)
    if fresh and not asks_change:
        assert old is not None
        if _stale_version(old, project) is not None:  # nothing to resolve: the record is brought up to date
            _set_version(ctx, project, path, old, opts)
            return ExitCode.OK
        if opts.sign:  # issue 7: sign the lock exactly as it is (as reviewed), without resolving again
            _write(ctx, project, path, old, opts)
            ctx.info(f"Signed {path.name} ({_count(old)} packages) with {opts.sign}")
            return ExitCode.OK
        ctx.info(f"Resolved {_count(old)} packages in {time.monotonic() - started:.2f}s ({path.name} is up to date)")
        _note_noop(project.root)
        return ExitCode.OK
    lock = _relock(ctx, project, opts, inputs, old)
    _write(ctx, project, path, lock, opts)
    ctx.info(f"Resolved {_count(lock)} packages in {time.monotonic() - started:.2f}s")
    _note_noop(project.root)  # the next `pypm lock` with nothing to do: fastpath.noop_lock
    unknown = sorted(set(opts.upgrade_package) - {canonical_name(p.name) for p in lock.packages})
    if unknown:  # a typo would otherwise look like "already the newest"
        ctx.info(f"warning: --upgrade-package {', '.join(unknown)}: no such package in {path.name}; nothing upgraded "
                 f"for {'it' if len(unknown) == 1 else 'them'}")
    return ExitCode.OK


def _dry_run(ctx: Any, project: Project, opts: LockOptions, inputs: _Inputs, old: Lock | None, current: bool,
             started: float) -> int:
    """`pypm lock --dry-run` (as uv's): resolve as `pypm lock` would, print on stdout what would
    change in pypm.lock (packages added, removed, moved to other versions), and write nothing: not
    the lock, not pypm's record of it."""
    path = project.root / LOCK_NAME
    if current:
        assert old is not None
        print(f"{path.name} is up to date ({_count(old)} packages): nothing would change")
        return ExitCode.OK
    lock = _relock(ctx, project, opts, inputs, old)
    ctx.info(f"Resolved {_count(lock)} packages in {time.monotonic() - started:.2f}s")

    def versions(lk: Lock | None) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for p in (lk.packages if lk is not None else ()):
            if not p.is_root:
                out.setdefault(canonical_name(p.name), []).append(p.version)
        return {n: sorted(v) for n, v in out.items()}

    before, after = versions(old), versions(lock)
    lines = []
    for name in sorted(before.keys() | after.keys()):
        was, now = before.get(name), after.get(name)
        if was == now:
            continue
        if was is None:
            lines.append(f" + {name}=={', '.join(now or ())}")
        elif now is None:
            lines.append(f" - {name}=={', '.join(was)}")
        else:
            lines.append(f" ~ {name} {', '.join(was)} -> {', '.join(now)}")
    from .lockfile import dumps

    try:
        same = path.read_bytes() == dumps(lock).encode("utf-8")
    except OSError:
        same = False
    if same:
        print(f"{path.name} would not change ({_count(lock)} packages)")
    elif not lines:
        print(f"{path.name} would change, with the same packages and versions (its hashes, sources or markers)")
    else:
        adds, removes = sum(x.startswith(" +") for x in lines), sum(x.startswith(" -") for x in lines)
        print(f"Would add {adds}, remove {removes}, change {len(lines) - adds - removes} in {path.name}:")
        print("\n".join(lines))
    return ExitCode.OK


def _stale_version(lock: Lock, project: Project) -> str | None:
    """The project's version as the lock records it, when pyproject.toml now says another; else None.

    The version is no resolution input (not in `content-hash`: nothing resolved depends on it), so
    a lock whose hash is current may still record an old one after a hand edit. uv takes that lock
    as out of date; pypm rewrites the record without resolving (`_set_version`), and `--check` and
    `--locked` refuse it as stale."""
    me = lock.root()
    return me.version if me is not None and me.version != (project.version or "0") else None


def _refuse_stale_version(path: Path, lock: Lock, project: Project, hint: str) -> None:
    old = _stale_version(lock, project)
    if old is not None:
        raise StaleLockError(f"{path} records the project's version {old}; pyproject.toml says "
                             f"{project.version or '0 (dynamic)'}", hint=hint)


def _set_version(ctx: Any, project: Project, path: Path, lock: Lock, opts: LockOptions) -> Lock:
    """`lock` with the project's version from pyproject.toml, written. A signature covered the old
    version: with `--sign KEY` the lock is signed again (in `_write`), else the signature goes,
    with a warning."""
    me = lock.root()
    assert me is not None
    old, me.version = me.version, project.version or "0"
    if lock.signature and not opts.sign:
        lock.signature = {}
        ctx.info(f"warning: the signature of {path.name} covered the old version and is removed: "
                 "sign it again with `pypm lock --sign KEY`")
    _write(ctx, project, path, lock, opts)
    ctx.info(f"Updated the project's version in {path.name}: {old} => {me.version}")
    return lock


def _with_recorded(project: Project, opts: LockOptions, rec: LockOptions) -> LockOptions:
    """`opts` for `pypm lock` over an existing lock that records the options `rec`."""
    if opts.check:
        # CI runs `pypm lock --check` bare: the options the lock was made with still apply.
        return opts.over(rec)
    # `pypm lock --index-url X` once, then a bare `pypm lock`: keep the sources the lock was made
    # from (as sync and --check do) rather than silently re-resolving against the default index.
    from dataclasses import replace

    return replace(opts, index_url=opts.index_url or (None if project.tool.index_url else rec.index_url),
                   extra_index_urls=opts.extra_index_urls or rec.extra_index_urls,
                   find_links=opts.find_links or rec.find_links)


def _count(lock: Lock) -> int:
    return sum(1 for p in lock.packages if not p.is_root)


# ---------------------------------------------------------------------- the no-op fast path

# A lock pypm has parsed and validated, keyed by the sha256 of its bytes (and this pypm's version:
# another one may validate differently): what the no-op check needs from it, so that `pypm lock`
# with unchanged inputs neither parses the whole lock (tomllib: ~40 ms on a 500 KB lock) nor trusts
# a header whose body it has not read. Content-addressed, so it never goes stale. Its path:
# fastpath.lock_seen_path (`lock-seen/`); fastpath.noop_lock reads its "unchanged" entry.


def _seen_path(data: bytes) -> Path:
    from .config import cache_dir_str
    from .fastpath import lock_seen_path

    return Path(lock_seen_path(data, cache_dir_str()))


def _remember(data: bytes, lock: Lock) -> None:
    """Record that `data` is a valid lock (best effort: the cache may be read-only). A record that
    says so already is left as it is (with what fast_lock added to it)."""
    import json

    me = lock.root()
    record = {"content-hash": lock.content_hash, "options": lock.options, "packages": _count(lock),
              "root-version": me.version if me is not None else None}
    try:
        path = _seen_path(data)
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(old, dict) and {k: v for k, v in old.items() if k != "unchanged"} == record:
                return
        except (OSError, ValueError):
            pass
        _write_seen(path, record)
    except OSError:
        pass


def _write_seen(path: Path, record: dict[str, Any]) -> None:
    import json

    from .lockfile import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record, sort_keys=True) + "\n")  # (a torn or garbled one is replaced)


def _note_noop(root: Path) -> tuple[list[str], dict[str, Any]] | None:
    """Which bare kinds of command (`lock`, `check`: `pypm lock`, `pypm lock --check`) find the
    lock at `root` current with the pyproject.toml there now, and the lock's record (lock-seen);
    None when that cannot be told from pypm's record of the lock (the full command decides).
    Decided from the two files' bytes as read here, as lock_project decides (`_with_recorded`,
    `_inputs`, the project's version), and added to the record for fastpath.noop_lock, with the
    digest of what was checked, when the project's inputs are all in those files: no path, git or
    URL source and no workspace (their files are inputs too), no relative find-links (resolved on
    disk), and the index named in the lock or the project (else the environment and pip's
    configuration decide it). Never raises."""
    import json
    import tomllib

    from .errors import PypmError
    from .fastpath import sha256
    from .project import PYPROJECT, parse_pyproject

    try:
        raw = (root / PYPROJECT).read_bytes()
        seen_path = _seen_path((root / LOCK_NAME).read_bytes())
        seen = json.loads(seen_path.read_text(encoding="utf-8"))
        # (as load_project reads it: universal newlines)
        project = parse_pyproject(tomllib.loads(raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")), root)
        in_files = not any("://" not in f and not Path(f).is_absolute() for f in project.tool.find_links)
        current, recordable = [], []
        for check in (False, True):
            opts = _with_recorded(project, LockOptions(check=check), LockOptions.from_recorded(seen["options"]))
            inputs = _inputs(project, opts)
            if inputs.hash == seen["content-hash"] and seen.get("root-version") == (project.version or "0"):
                current.append("check" if check else "lock")
                if in_files and not inputs.local and not inputs.members and (opts.index_url or project.tool.index_url):
                    recordable.append(current[-1])
        memo = {"root": str(root), "pyproject-sha256": sha256(raw).hexdigest(), "modes": recordable}
        if recordable and seen.get("unchanged") != memo:
            _write_seen(seen_path, {**seen, "unchanged": memo})
        return current, seen
    except (PypmError, OSError, ValueError, LookupError, TypeError, AttributeError):
        return None


def fast_lock(argv: list[str]) -> int | None:
    """`pypm [-q] lock [-q] [--check]` with unchanged inputs, from the entry point before argparse
    and the CLI load (as `venvstate.fast_sync` does for sync), when fastpath.noop_lock could not
    tell: 0 and the same message as the full command when the lock is current, else None and
    nothing was done (the full CLI then decides exactly as before). The lock's bytes must be ones
    pypm has validated before (`_remember`); pyproject.toml is read and hashed as `lock_project`
    does (`_note_noop`, which records the answer for the next one)."""
    import os

    from .errors import PypmError
    from .fastpath import noop_lock_argv, say_lock_current
    from .project import find_project_root

    started = time.monotonic()
    if not noop_lock_argv(argv):
        return None
    try:
        found = _note_noop(find_project_root(Path(os.getcwd())))
        if found is None or ("check" if "--check" in argv else "lock") not in found[0]:
            return None
        n = int(found[1]["packages"])
    except (PypmError, ValueError, LookupError, TypeError, OSError):
        return None  # anything unusual (a cwd removed): the full command says what is wrong, or re-locks
    say_lock_current(argv, n, started)
    return 0


def _write(ctx: Any, project: Project, path: Path, lock: Lock, opts: LockOptions) -> None:
    from .lockfile import dumps, write_atomic

    if opts.sign:
        try:
            from .signing import sign_lock  # issue 7
        except ImportError:
            raise UsageError("--sign is not available in this build of pypm") from None
        lock = sign_lock(lock, Path(opts.sign))
    text = dumps(lock)
    try:  # bytes: the old file may not be UTF-8 at all (it was ignored as invalid, and is replaced)
        same = path.read_bytes() == text.encode("utf-8")
    except OSError:
        same = False
    if not same:
        write_atomic(path, text)
    _remember(text.encode("utf-8"), lock)
    from . import plugins

    plugins.fire(project, "post-lock", lock_path=path)


def ensure_lock(ctx: Any, project: Project, *, locked: bool, frozen: bool, offline: bool,
                refusal: tuple[str, str] = (", and --locked forbids updating it",
                                            "run `pypm lock` and commit pypm.lock, or drop --locked")) -> Lock:
    """The project's current lock for sync/run/export, re-locking when stale (unless told not to).
    `refusal`: what `locked` says after "PATH is out of date with pyproject.toml", and its hint."""
    path = project.root / LOCK_NAME
    if frozen:
        from .lockfile import read

        if not path.exists():
            raise LockError(f"{path} does not exist and --frozen uses the lock as it is",
                            hint="run `pypm lock` first, or drop --frozen")
        return read(path)
    old = _read_old(path, ctx)
    opts = LockOptions.from_lock(old, offline=offline) if old is not None else LockOptions(offline=offline)
    inputs = _inputs(project, opts)
    if old is not None and old.content_hash == inputs.hash:
        if _stale_version(old, project) is None:
            return old
        if locked:
            _refuse_stale_version(path, old, project, refusal[1])
        return _set_version(ctx, project, path, old, opts)
    if locked:
        what = "does not exist" if not path.exists() else "is out of date with pyproject.toml"
        raise StaleLockError(f"{path} {what}{refusal[0]}", hint=refusal[1])
    started = time.monotonic()
    lock = _relock(ctx, project, opts, inputs, old)
    _write(ctx, project, path, lock, opts)
    ctx.info(f"Resolved {_count(lock)} packages in {time.monotonic() - started:.2f}s")
    return lock


# ---------------------------------------------------------------------- resolving into a Lock

def _preferences(old: Lock | None, imported: Lock | None, opts: LockOptions) -> dict[str, list[str]]:
    if opts.upgrade:
        return {}
    prefs: dict[str, list[str]] = {}
    for lock in (imported, old):
        if lock is None:
            continue
        for p in lock.packages:
            if p.is_root:
                continue
            n = canonical_name(p.name)
            if n in opts.upgrade_package:
                continue
            prefs.setdefault(n, [])
            if p.version not in prefs[n]:
                prefs[n].append(p.version)
    return prefs


def _relock(ctx: Any, project: Project, opts: LockOptions, inputs: _Inputs, old: Lock | None) -> Lock:
    from .config import cache_dir
    from .index import IndexClient
    from .pathdeps import LocalSources

    local = None
    # `{ index = URL }` sources: packages an index serves, from that index alone (the index client's
    # business); every other source is served by LocalSources.
    pinned_index = {n: s.index for n, s in inputs.local.items() if s.index is not None}
    others = {n: s for n, s in inputs.local.items() if n not in pinned_index}
    if others:
        # A git dependency keeps the commit the old lock pinned, unless told to upgrade it.
        pins = {} if old is None or opts.upgrade else {
            canonical_name(p.name): p.source["git"] for p in old.packages
            if "git" in p.source and canonical_name(p.name) not in opts.upgrade_package}
        local = LocalSources(others, project.root, cache=cache_dir(), offline=opts.offline, pins=pins,
                             refresh=opts.refresh)
    client = IndexClient([inputs.index_url, *inputs.extra_index_urls], list(inputs.find_links),
                         cache_dir=cache_dir(), offline=opts.offline, refresh=opts.refresh,
                         warn=lambda m: ctx.info(f"warning: {m}"), write_behind=True,
                         hash_ahead=True, local=local, first_index=inputs.index_strategy == "first-index",
                         pinned_index=pinned_index)
    client.warm_up()  # the HTTP client is made meanwhile
    # No cyclic garbage collection while resolving: a lock allocates ~1M objects that live until
    # it is written (page data, releases, candidates), and the collector kept walking them all
    # (~0.12-0.14 s of a web-stack lock's CPU in ~300 collections, holding the GIL). What a lock
    # leaves in cycles is a few MB (peak RSS 104 -> 108 MB). Resuming it after froze what was
    # alive: unfrozen, the first collection walked all of it at once (~80 ms).
    from .fastpath import NoCycleCollection

    try:
        with NoCycleCollection():
            return _resolve_with(ctx, project, opts, inputs, old, client)
    finally:
        client.close()


def _resolve_with(ctx: Any, project: Project, opts: LockOptions, inputs: _Inputs, old: Lock | None,
                  client: Any) -> Lock:
    from . import plugins
    from .resolver import ResolveOptions, RootSpec, resolve

    path = project.root / LOCK_NAME
    plugins.fire(project, "pre-lock", lock_path=path)
    imported = None
    if opts.from_pylock:
        from .export import import_pylock

        imported = import_pylock(Path(opts.from_pylock))
    ropts = ResolveOptions(
        prerelease=inputs.prerelease,
        exclude_newer=_parse_exclude_newer(opts.exclude_newer) if opts.exclude_newer else None,
        no_build=opts.no_build, no_binary=opts.no_binary,
        preferences=_preferences(old, imported, opts),
        initial_forks=tuple(old.resolution_markers) if old is not None and not opts.upgrade else (),
    )
    requires_python = _requires_python(ctx, project)
    if not opts.no_build:
        from dataclasses import replace

        ropts = replace(ropts, build_metadata=_metadata_builder(ctx, project, client, requires_python, ropts))
        if client._local is not None:  # here, on this thread, before the resolver's look-ahead asks for them
            client._local.prepare_dynamic(_local_metadata(ctx, project, client, requires_python, ropts))
    reqs = inputs.requirements
    root = RootSpec(name=project.name, requires_python=requires_python,
                    dependencies=reqs.get("dependencies", project.dependencies),
                    optional_dependencies={k: reqs.get(f"optional:{k}", v)
                                           for k, v in project.optional_dependencies.items()},
                    dependency_groups={**{k: reqs.get(f"group:{k}", v) for k, v in project.dependency_groups.items()},
                                       # every member of the workspace is locked, wanted by the root or not,
                                       # and so are the members' own dependency groups
                                       **({_WORKSPACE: inputs.members} if inputs.members else {}),
                                       **{f"{_WORKSPACE}:{k.split(':', 1)[1]}": v for k, v in reqs.items()
                                          if k.startswith("member-group:")}})
    with client:
        done = False
        try:
            res = resolve(client, root, ropts)
            done = True
        finally:
            if ropts.build_metadata is not None:  # the look-ahead's metadata builds: none outlives the lock
                ropts.build_metadata.close(abandon=not done)  # type: ignore[attr-defined]
        old_hashes = {} if (old is None or opts.refresh) else {
            f.url: f for p in old.packages for f in p.files() if f.has_valid_hash()}
        packages = _packages(client, res, old_hashes)
        root_pkg = LockedPackage(
            name=project.name, version=project.version or "0",
            source={"virtual": "."} if project.is_virtual else {"editable": "."},
            dependencies=[_dep(e) for e in res.root_dependencies],
            optional_dependencies={k: [_dep(e) for e in v] for k, v in res.root_optional.items()},
            dependency_groups={k: [_dep(e) for e in v] for k, v in res.root_groups.items()},
        )
        if inputs.members:  # the members' entry point is the lock's `members`, not a group of the root's
            by_member = {canonical_name(p.name): p for p in packages if p.local_directory or p.virtual_member}
            for key in [k for k in root_pkg.dependency_groups if k.startswith(_WORKSPACE)]:
                edges = root_pkg.dependency_groups.pop(key)
                if key != _WORKSPACE:  # "<workspace>:MEMBER:GROUP": the member's own group
                    member, group = key[len(_WORKSPACE) + 1:].split(":", 1)
                    if member in by_member:
                        by_member[member].dependency_groups[group] = edges
            for p in packages:
                p.groups = [g for g in p.groups if not g.startswith(_WORKSPACE)]
        packages.append(root_pkg)
        _add_build_dependencies(ctx, client, project, requires_python, ropts, root_pkg, packages, old_hashes)
        from .build import mark_build_network  # issue 5: [tool.pypm.build] network, shown in the lock

        mark_build_network(ctx, project, packages)
    return Lock(requires_python=requires_python, content_hash=inputs.hash, packages=packages,
                options=opts.recorded(), resolution_markers=list(res.forks), members=list(inputs.members))


# The root's dependency group that holds the workspace's members while resolving: not a valid
# PEP 735 name, so no project's own group can clash with it. Dropped from the lock after.
_WORKSPACE = "<workspace>"


def _requires_python(ctx: Any, project: Project) -> str:
    """The project's requires-python; without one, the running Python's minor and newer (as uv).

    A universal lock needs a lower bound: without it every release that dropped Python 3.0
    would be unusable somewhere in the range.
    """
    if project.requires_python:
        return project.requires_python
    import sys

    rp = f">={sys.version_info[0]}.{sys.version_info[1]}"
    ctx.info(f"warning: {project.pyproject} sets no `requires-python`; locking for {rp}")
    return rp


def _dep(e: Any) -> Dependency:
    return Dependency(name=e.name, version=e.version, marker=e.marker, extras=tuple(e.extras))


def _source(files: Iterable[Any]) -> dict[str, str]:
    srcs = [f.source for f in files]
    for kind, where in srcs:
        if kind == "registry":
            return {"registry": where}
    return {srcs[0][0]: srcs[0][1]} if srcs else {"registry": ""}


def _entries(client: Any, files: list[Any], old_hashes: Mapping[str, FileEntry]) -> list[FileEntry]:
    """FileEntry for each file, hashing (concurrently) those the index gave no hash for."""
    from concurrent.futures import ThreadPoolExecutor

    def known(f: Any) -> FileEntry | None:
        """Its entry when the index or the old lock gives its hash, else None (it must be hashed)."""
        sha = f.sha256
        size = f.size
        prev = old_hashes.get(f.url)
        if not sha and prev is not None and (size is None or prev.size == size):
            sha, size = prev.sha256, size if size is not None else prev.size
        if not sha:
            return None
        if size is None and f.url.startswith("file:"):
            size = _local_size(f.url)
        return FileEntry(filename=f.filename, url=f.url, sha256=sha, size=size)

    def one(f: Any) -> FileEntry:
        size = f.size if f.size is not None or not f.url.startswith("file:") else _local_size(f.url)
        return FileEntry(filename=f.filename, url=f.url, sha256=client.file_hash(f), size=size)

    # Only the files with no hash to read go to threads: a pool job per file (1.4k for the web
    # stack, nearly all hashed by the index) cost more than making their entries here.
    out = [known(f) for f in files]
    slow = [i for i, e in enumerate(out) if e is None]
    if slow:
        with ThreadPoolExecutor(min(8, len(slow))) as pool:
            for i, e in zip(slow, pool.map(one, [files[i] for i in slow])):
                out[i] = e
    return out  # type: ignore[return-value]


def _local_size(url: str) -> int | None:
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    try:
        return Path(url2pathname(urlparse(url).path)).stat().st_size
    except OSError:
        return None


def _packages(client: Any, res: Any, old_hashes: Mapping[str, FileEntry]) -> list[LockedPackage]:
    # (A path dependency's directory is no file: it has no entry, and its source says where it is.)
    all_files = [f for n in res.nodes.values() for f in n.files if f.kind != "directory"]
    entries = dict(zip([id(f) for f in all_files], _entries(client, all_files, old_hashes)))
    out = []
    for (name, version), n in sorted(res.nodes.items()):
        files = [entries[id(f)] for f in n.files if id(f) in entries]
        kinds = {id(f): f.kind for f in n.files}
        sdists = sorted((entries[id(f)] for f in n.files if kinds[id(f)] == "sdist"), key=lambda e: e.filename)
        out.append(LockedPackage(
            name=name, version=version, source=_source(n.files), marker=n.marker, main=n.main,
            extras=sorted(n.extras), groups=sorted(n.groups),
            dependencies=[_dep(e) for e in n.dependencies],
            optional_dependencies={k: [_dep(e) for e in v] for k, v in n.optional_dependencies.items()},
            sdist=sdists[0] if sdists else None,
            wheels=sorted((e for e in files if e.filename.endswith(".whl")), key=lambda e: e.filename),
        ))
    return out


# ---------------------------------------------------------------------- build dependencies

def _add_build_dependencies(ctx: Any, client: Any, project: Project, requires_python: str, ropts: Any,
                            root_pkg: LockedPackage, packages: list[LockedPackage],
                            old_hashes: Mapping[str, FileEntry]) -> None:
    """Lock `build-system.requires` of the project and of every package locked only as an sdist.

    Each set is resolved on its own (a build environment holds only it) and recorded as
    `build-dependencies` edges to ordinary packages. A set that cannot be resolved is reported
    and left out: the build then resolves it itself (issue 5 decides whether that is allowed).
    """
    from dataclasses import replace

    from .resolver import RootSpec, resolve

    by_key = {p.key: p for p in packages}
    runtime_prefs = dict(ropts.preferences)
    for p in packages:
        runtime_prefs.setdefault(canonical_name(p.name), [p.version])
    memo: dict[tuple[str, ...], list[Dependency] | None] = {}

    def lock_set(requires: tuple[str, ...], who: str) -> list[Dependency] | None:
        if requires in memo:
            return memo[requires]
        memo[requires] = None
        spec = RootSpec(name=f"{who} (build)", requires_python=requires_python, dependencies=requires)
        try:
            # no_binary off: a build set is installed from wheels only (pypm does not build the build
            # tools from source), so `--no-binary` locked setuptools as an sdist no build could use
            res = resolve(client, spec, replace(ropts, preferences=runtime_prefs, initial_forks=(), build_metadata=None,
                                                no_binary=False))
        except (ResolutionError, IndexError_) as e:  # a hash mismatch is not a "cannot lock": it stops
            ctx.info(f"warning: the build dependencies of {who} ({', '.join(requires)}) were not locked: "
                     f"{e.message}")
            return None
        for p in _packages(client, res, old_hashes):
            if p.key not in by_key:
                # Only the build needs it: no marker, and no main/extras/groups.
                p.marker, p.main, p.extras, p.groups = None, False, [], []
                by_key[p.key] = p
                packages.append(p)
                queue.append(p)
        memo[requires] = [_dep(e) for e in res.root_dependencies]
        return memo[requires]

    from .build import backend_extras, directory_backend_extras

    state = {"requires_python": requires_python, "offline": bool(getattr(client, "offline", False)),
             "refresh": bool(getattr(client, "refresh", False))}
    queue: list[LockedPackage] = [p for p in packages if not p.is_root]

    def lookup(n: str, v: str) -> LockedPackage | None:
        return by_key.get((canonical_name(n), v))

    def with_backend_extras(directory: Path, kind: str, name: str, who: str, reqs: tuple[str, ...],
                            deps: list[Dependency]) -> list[Dependency]:
        """`deps`, or the set locked again with what the directory's backend asks for beyond it
        (hatchling's editable build: `editables`); not with --no-build, which runs no backend."""
        if ropts.no_build:
            return deps
        extra = directory_backend_extras(ctx, project, directory, kind, name, who, deps, lookup, state)
        return (lock_set(reqs + tuple(extra), who) or deps) if extra else deps

    if project.build_system is not None:
        reqs = tuple(project.build_system.get("requires", ()) or ())
        deps = lock_set(reqs, project.name) if reqs else []
        if deps is not None:  # (its editable build at sync time)
            deps = with_backend_extras(project.root, "editable", project.name, f"the project {project.name}",
                                       reqs, deps)
        if deps:
            root_pkg.build_dependencies = deps
    while queue:
        p = queue.pop(0)
        if p.local_directory or "git" in p.source:  # a path or git dependency's build-system.requires
            from .build import read_build_system

            if p.local_directory:
                directory, label = (project.root / p.local_directory).resolve(), p.local_directory
            else:  # its checkout, made while resolving
                directory, label = client._local.git_checkout(canonical_name(p.name))[0], p.source["git"]
            reqs = tuple(read_build_system(directory)[0])
            deps = lock_set(reqs, f"{p.name} ({label})") if reqs else []
            if deps is not None:
                p.build_dependencies = with_backend_extras(
                    directory, "editable" if "editable" in p.source else "wheel", p.name, f"{p.name} ({label})",
                    reqs, deps)
            continue
        if p.wheels or p.sdist is None:
            continue
        asked = getattr(ropts.build_metadata, "build_requires", {}).get((canonical_name(p.name), _norm(p.version)))
        if asked is not None:  # its metadata came from its backend: what that asked for is known
            deps = lock_set(asked, f"{p.name} {p.version}")
            if deps is not None:
                p.build_dependencies = deps
            continue
        reqs = _sdist_build_requires(client, p)
        deps = lock_set(reqs, f"{p.name} {p.version}")
        if deps is not None:
            # Issue 5: ask the backend (in the sandbox) what else it needs; lock that set instead.
            extra = backend_extras(ctx, project, p, deps, lookup, state)
            if extra:
                deps = lock_set(tuple(reqs) + tuple(extra), f"{p.name} {p.version}") or deps
            p.build_dependencies = deps


def _metadata_builder(ctx: Any, project: Project, client: Any, requires_python: str, ropts: Any) -> Any:
    """For the resolver (ResolveOptions.build_metadata): the core metadata of an sdist whose
    PKG-INFO cannot be trusted to hold its dependencies (Metadata-Version older than 2.2, or they
    are marked Dynamic) -- most sdists of older releases -- from its build backend (see
    `_backend_metadata`). What it finds is kept in the metadata cache under the sdist's sha256, so
    the next lock does not build it again. The build requirements themselves are locked
    afterwards, as any sdist's are.

    The resolver asks on its own thread; its look-ahead asks `build.ahead(f)` for the release it
    guesses the resolver will pin, which starts the build on one of build.PARALLEL_BUILDS threads (a build
    is a backend process in the sandbox, ~1 s of it mostly outside this process's GIL): a lock
    that read four legacy sdists' metadata one after the other spent 4 x ~1.3 s. Each sdist is
    built once: a second ask waits for the first build and gets its metadata or its error. A
    wrong guess costs one build. `build.close()` (after resolving) drops the builds not started
    and waits for the running ones: none may outlive the lock (their temporary trees, the client).
    `close(abandon=True)` (the lock failed or was interrupted) first interrupts the running ones'
    processes, as a Ctrl-C from the terminal would (a SIGINT sent to pypm alone reaches only
    pypm, and a backend can run for minutes)."""
    import threading
    from concurrent.futures import Future, ThreadPoolExecutor

    builds: dict[str, Future[Any]] = {}  # by the sdist's URL
    guard = threading.Lock()
    pool: list[ThreadPoolExecutor] = []
    closed = [False]
    from .build import RunningBuilds, wait_result

    running = RunningBuilds()

    def build(f: Any) -> Any:
        with guard:
            fut = builds.get(f.url)
            mine = fut is None
            if fut is None:
                fut = builds[f.url] = Future()
        if not mine:
            return wait_result(fut)  # (the other build's metadata, or its error; in slices: see there)
        try:
            meta = _build_one(f)
        except BaseException as e:
            fut.set_exception(e)
            raise
        fut.set_result(meta)
        return meta

    def ahead(f: Any, then: Callable[[Any], None]) -> None:
        with guard:
            if closed[0] or f.url in builds:
                return
            if not pool:
                from .build import PARALLEL_BUILDS

                pool.append(ThreadPoolExecutor(PARALLEL_BUILDS, thread_name_prefix="pypm-metadata"))

        def job() -> None:
            try:
                with running.running():
                    meta = build(f)
            except BaseException:  # noqa: BLE001 -- kept in its future for the resolver, if it asks
                return
            then(meta)

        pool[0].submit(job)

    def close(*, abandon: bool = False) -> None:
        with guard:
            closed[0] = True
        if not pool:
            return
        pool[0].shutdown(wait=False, cancel_futures=True)  # (a job never started made no entry in `builds`)
        if abandon:
            running.interrupt()
        pool[0].shutdown(wait=True)

    def _build_one(f: Any) -> Any:
        from .cache import Cache

        label = f"{f.name}=={f.version} ({f.filename})"
        ctx.info(f"Reading the metadata of {label} from its build backend (its PKG-INFO does not list its "
                 "dependencies reliably)")
        entry = FileEntry(filename=f.filename, url=f.url, sha256=client.file_hash(f), size=f.size)
        with Cache(offline=bool(getattr(client, "offline", False)), base_dir=project.root) as cache:
            sdist = cache.fetch(entry, package=f.name)
            requires = _archive_build_requires(client, f.name, f.version, entry, local=sdist)
            meta, requires = _backend_metadata(project, client, requires_python, ropts, cache, source=sdist,
                                               name=f.name, requires=requires, label=label)
        # (_add_build_dependencies locks these without asking the backend a second time)
        build_requires[(canonical_name(f.name), _norm(f.version))] = requires
        from packaging.version import Version

        if canonical_name(meta.name) != canonical_name(f.name) or Version(meta.version) != Version(f.version):
            raise IntegrityError(f"the build backend of {label} reports the metadata of {meta.name} {meta.version}",
                                 hint="the sdist is mislabelled; report it to the package's maintainers")
        client.remember_metadata(f, meta)
        return meta

    build_requires: dict[tuple[str, str], tuple[str, ...]] = {}
    build.build_requires = build_requires  # type: ignore[attr-defined]
    build.ahead = ahead  # type: ignore[attr-defined]
    build.close = close  # type: ignore[attr-defined]
    return build


def _backend_metadata(project: Project, client: Any, requires_python: str, ropts: Any, cache: Any, *,
                      source: Path, name: str, requires: tuple[str, ...], label: str) -> tuple[Any, tuple[str, ...]]:
    """The core metadata of `source` (an sdist, or a project directory) from its build backend's
    prepare_metadata_for_build_wheel, run in the build sandbox (no network unless the project's
    [tool.pypm.build] allows it for the package), in an environment of its build requirements
    resolved from the lock's sources (and what the backend asks for beyond them), as pip and uv
    build metadata. Returns it with the build requirements that made it (those given, and what the
    backend asked for beyond them)."""
    from dataclasses import replace

    from .build import MissingBuildRequirements, network_allowed, prepare_metadata
    from .buildenv import build_closure
    from .interpreter import find_interpreter
    from .resolver import RootSpec, resolve
    from .simpleapi import parse_core_metadata

    interp = find_interpreter(project.tool.python, requires_python, pyproject=project.pyproject)
    nested = replace(ropts, preferences={}, initial_forks=(), build_metadata=None)
    data = b""
    for attempt in range(3):  # again with what the backend asks for beyond [build-system] requires
        res = resolve(client, RootSpec(name=f"{name} (build)", requires_python=requires_python,
                                       dependencies=requires), nested)
        by_key = {p.key: p for p in _packages(client, res, {})}
        packages = build_closure(lambda n, v: by_key.get((canonical_name(n), v)), name,
                                 [_dep(e) for e in res.root_dependencies], interp.markers)
        try:
            data = prepare_metadata(source, build_packages=packages,
                                    interpreter=interp, cache=cache, network=network_allowed(project, name),
                                    label=label, limits=project.tool.build_limits)
            break
        except MissingBuildRequirements as e:
            if attempt == 2 or set(e.missing) <= set(requires):
                raise
            requires = (*requires, *e.missing)
    return parse_core_metadata(data, label)[0], requires


def _local_metadata(ctx: Any, project: Project, client: Any, requires_python: str, ropts: Any) -> Any:
    """For pypm.pathdeps.LocalSources.prepare_dynamic: a path or git dependency's metadata from its
    build backend, when its [project] table leaves some of it to the backend (`dynamic`)."""

    def build(directory: Path, name: str, label: str, shared: bool) -> Any:
        from .build import read_build_system
        from .cache import Cache

        ctx.info(f"Reading the metadata of {label} from its build backend (its pyproject.toml leaves it "
                 "to the backend)")
        import tempfile

        with Cache(offline=bool(getattr(client, "offline", False)), base_dir=project.root) as cache, \
                tempfile.TemporaryDirectory(prefix="pypm-metadata-") as tmp:
            if shared:  # a git checkout in the cache, shared: the backend writes into a copy
                from .gitsource import private_copy

                directory = private_copy(directory, Path(tmp))
            return _backend_metadata(project, client, requires_python, ropts, cache, source=directory, name=name,
                                     requires=tuple(read_build_system(directory)[0]), label=label)[0]

    return build


def _norm(version: str) -> str:
    from packaging.version import InvalidVersion, Version

    try:
        return str(Version(version))
    except InvalidVersion:
        return version


def _sdist_build_requires(client: Any, p: LockedPackage) -> tuple[str, ...]:
    """`build-system.requires` from a locked sdist's pyproject.toml (PEP 517's default without one)."""
    assert p.sdist is not None
    return _archive_build_requires(client, p.name, p.version, p.sdist)


def _archive_build_requires(client: Any, name: str, version: str, f: FileEntry,
                            local: Path | None = None) -> tuple[str, ...]:
    """`build-system.requires` from the pyproject.toml of the sdist `f` (PEP 517's default without
    one). `local`: the sdist already on disk (verified by the cache), else it is read where `f`
    says (downloaded, and checked against its sha256)."""
    import tarfile
    import tomllib
    import zipfile
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    from .index import DistFile

    dist = DistFile(name=canonical_name(name), version=version, filename=f.filename, url=f.url, kind="sdist",
                    sha256=f.sha256, size=f.size, requires_python=None, yanked=None, metadata_sha256=None,
                    has_metadata=False, upload_time=None, source=("registry", ""))

    def from_archive(fh: Any) -> bytes | None:
        if f.filename.endswith(".zip"):
            with zipfile.ZipFile(fh) as zf:
                names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/pyproject.toml")]
                return zf.read(names[0]) if names else None
        with tarfile.open(fileobj=fh, mode="r:*") as tf:
            for m in tf:
                if m.isfile() and m.name.count("/") == 1 and m.name.endswith("/pyproject.toml"):
                    x = tf.extractfile(m)
                    return x.read() if x else None
        return None

    try:
        if local is not None or f.url.startswith("file:"):
            with open(local or url2pathname(urlparse(f.url).path), "rb") as fh:
                data = from_archive(fh)
        else:
            # The index client's download checks the file against its pinned sha256.
            with client._download(dist) as fh:
                data = from_archive(fh)
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        raise LockError(f"cannot read {f.filename} to find its build requirements: {e}",
                        hint="retry with --refresh; the file may be corrupt") from None
    if data is None:
        return PEP517_DEFAULT_BUILD_REQUIRES
    try:
        bs = tomllib.loads(data.decode("utf-8")).get("build-system")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return PEP517_DEFAULT_BUILD_REQUIRES
    if not isinstance(bs, dict) or not isinstance(bs.get("requires"), list):
        return PEP517_DEFAULT_BUILD_REQUIRES
    return tuple(str(x) for x in bs["requires"])
