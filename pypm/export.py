"""Lock export and import: pypm.lock to PEP 751 `pylock.toml` or hashed requirements.txt, and back.

`render_pylock` and `render_requirements` are pure (a Lock and a Selection in, text out);
`export_project` reads the lock and writes the file; `import_pylock` reads a pylock.toml
into a `Lock` whose pins `pypm lock --from` uses as preferences.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping
from urllib.parse import unquote

from .errors import ExitCode, LockError, ProjectError, UsageError
from .lockfile import (
    LOCK_NAME,
    Dependency,
    FileEntry,
    Lock,
    LockedPackage,
    _k,
    _s,
    _v,
    canonical_name,
    write_atomic,
)
from .selection import Selection, entry_dependencies, select_packages

if TYPE_CHECKING:  # the CLI's Context would be a circular import at run time
    import argparse

    from .cli import Context
    from .project import Project

__all__ = [
    "PYLOCK_VERSION",
    "export_project",
    "render_pylock",
    "render_requirements",
    "selection_markers",
    "import_pylock",
    "is_pylock_name",
]

PYLOCK_VERSION = "1.0"
# PEP 751: "pylock.toml" or "pylock.<name>.toml" where <name> has no dot.
_PYLOCK_NAME = re.compile(r"^pylock\.([^.]+)\.toml$|^pylock\.toml$")


def is_pylock_name(name: str) -> bool:
    return bool(_PYLOCK_NAME.match(name))


# --------------------------------------------------------------------------- markers per selection
# A package's lock `marker` says when *some* selection needs it. An export is for one
# selection (say, no dev group), so each package's marker is recomputed from the paths that
# selection actually takes: OR over paths of the AND of the edge markers along the path.
# Markers are kept in disjunctive normal form over atoms (each atom one normalised marker
# string from the lock) with absorption, which keeps the usual cases (a marker on one edge,
# the same package reached conditionally and unconditionally) short without a full algebra.

_Conj = frozenset  # of atom strings; the empty conjunction is "always"
_ALWAYS: frozenset[frozenset[str]] = frozenset({frozenset()})
_NEVER: frozenset[frozenset[str]] = frozenset()


_MAX_TERMS = 64  # past this many alternatives a marker is replaced by the lock's own (a safe superset)


def _atom(marker: str, owner: str) -> str:
    from packaging.markers import InvalidMarker, Marker

    try:
        return str(Marker(marker))
    except InvalidMarker as e:
        raise LockError(f"{LOCK_NAME}: {owner} has an invalid marker {marker!r} ({e})",
                        hint="re-create the lock with `pypm lock`") from None


def _absorb(dnf: Iterable[frozenset[str]]) -> frozenset[frozenset[str]]:
    items = set(dnf)
    return frozenset(c for c in items if not any(o < c for o in items))


def _and_atom(dnf: frozenset[frozenset[str]], atom: str | None) -> frozenset[frozenset[str]]:
    if not atom:
        return dnf
    return _absorb(c | {atom} for c in dnf)


def _render(dnf: frozenset[frozenset[str]]) -> str | None:
    if _ALWAYS <= dnf or not dnf:
        return None

    def paren(a: str) -> str:
        return f"({a})" if " or " in a else a

    conjs = sorted(" and ".join(paren(a) for a in sorted(c)) for c in dnf)
    if len(conjs) == 1:
        return conjs[0]
    return " or ".join(f"({c})" if " and " in c else c for c in conjs)


def selection_markers(lock: Lock, selection: Selection) -> dict[tuple[str, str], str | None]:
    """For every package the selection reaches: the marker under which it is needed (None: always)."""
    entry = entry_dependencies(lock, selection)
    index = {p.key: p for p in lock.packages}

    # Nodes are (package key, extra) with "" for the package itself; an extra's node carries
    # the edges of that extra, reached only through a dependency that asks for it.
    node: dict[tuple[tuple[str, str], str], frozenset[frozenset[str]]] = {}
    work: list[tuple[tuple[str, str], str]] = []
    collapsed: set[tuple[tuple[str, str], str]] = set()

    def feed(dep: Dependency, via: frozenset[frozenset[str]]) -> None:
        m = _and_atom(via, _atom(dep.marker, f"the edge to {dep.name}=={dep.version}") if dep.marker else None)
        key = (canonical_name(dep.name), dep.version)
        for extra in ("",) + tuple(canonical_name(x) for x in dep.extras):
            n = (key, extra)
            if n in collapsed:
                continue
            old = node.get(n, _NEVER)
            new = _absorb(old | m)
            if len(new) > _MAX_TERMS:
                # Many marker'd paths (diamonds of conditional edges): settle, for good, for the
                # lock's own marker of this package, true wherever any selection needs it.
                collapsed.add(n)
                target = index.get(key)
                pm = target.marker if target is not None else None
                new = frozenset({frozenset({_atom(pm, f"{dep.name}=={dep.version}")})}) if pm else _ALWAYS
            if new != old:
                node[n] = new
                work.append(n)

    for d in entry:
        feed(d, _ALWAYS)
    while work:
        n = work.pop()
        key, extra = n
        pkg = index.get(key)
        if pkg is None:
            raise LockError(f"{LOCK_NAME} names {key[0]}=={key[1]} as a dependency but has no such package",
                            hint="re-create it with `pypm lock`")
        edges = pkg.dependencies if extra == "" else pkg.optional_dependencies.get(extra, [])
        for d in edges:
            feed(d, node[n])

    out: dict[tuple[str, str], str | None] = {}
    for (key, extra), dnf in node.items():
        if extra:
            continue
        pkg = index[key]
        if pkg.marker:
            # The lock's own marker (e.g. a resolver fork) still bounds the package.
            dnf = _and_atom(dnf, _atom(pkg.marker, f"{pkg.name}=={pkg.version}"))
        out[key] = _render(dnf)
    return out


# --------------------------------------------------------------------------- rendering

def _check_hashes(pkgs: Iterable[LockedPackage]) -> None:
    for p in pkgs:  # (a path dependency's directory has no file: nothing to check)
        for f in p.files():
            if not f.has_valid_hash():
                raise LockError(
                    f"{LOCK_NAME}: {p.name}=={p.version} has no valid sha256 for {f.filename}",
                    hint="fill in the missing hashes with `pypm lock --refresh`, then export again",
                )


def _pylock_file(f: FileEntry) -> dict[str, Any]:
    d: dict[str, Any] = {"name": f.filename, "url": f.url}
    if f.size is not None:
        d["size"] = f.size
    d["hashes"] = {"sha256": f.sha256}
    return d


def _posix_rel(target: Path, base: Path) -> str:
    rel = os.path.relpath(target, base)
    return Path(rel).as_posix()


def render_pylock(lock: Lock, selection: Selection, *, project_dir: Path | None = None,
                  project_name: str | None = None, editable: bool = True, base_dir: Path | None = None,
                  lock_dir: Path | None = None) -> str:
    """PEP 751 text for the packages `selection` needs, in every environment the lock serves.

    `project_dir`: when given (a non-virtual project whose selection includes it), the project
    is written as a `directory` entry with a path relative to `base_dir` (where the file goes).
    `lock_dir`: the lock's directory, which its path dependencies' paths are relative to.
    """
    pkgs = select_packages(lock, selection, env=None)
    _check_hashes(pkgs)
    markers = selection_markers(lock, selection)
    out = [
        f"lock-version = {_s(PYLOCK_VERSION)}\n",
        'created-by = "pypm"\n',
    ]
    if lock.requires_python:
        out.append(f"requires-python = {_s(lock.requires_python)}\n")
    entries: list[tuple[tuple[str, str], dict[str, Any]]] = []
    if project_dir is not None and project_name:
        path = _posix_rel(project_dir, base_dir or Path.cwd())
        d: dict[str, Any] = {"name": canonical_name(project_name),
                             "directory": {"path": path, "editable": editable}}
        entries.append(((canonical_name(project_name), ""), d))
    for p in pkgs:
        m = markers.get(p.key, p.marker)
        if p.virtual_member:  # not installed (its dependencies are listed as they are reached)
            continue
        if p.local_directory:  # a path dependency's directory: no version (PEP 751: not stable)
            where = Path(os.path.normpath((lock_dir or Path.cwd()) / p.local_directory))
            d = {"name": canonical_name(p.name), **({"marker": m} if m else {}),
                 "directory": {"path": _posix_rel(where, base_dir or Path.cwd()), "editable": "editable" in p.source}}
            entries.append((p.key, d))
            continue
        if p.git:  # PEP 751: a VCS package (no version: the commit is what is pinned)
            from .gitsource import parse_lock_source

            ref, commit = parse_lock_source(p.git, LOCK_NAME)
            vcs = {"type": "git", "url": ref.url, **({"requested-revision": ref.rev} if ref.rev else {}),
                   "commit-id": commit, **({"subdirectory": ref.subdirectory} if ref.subdirectory else {})}
            entries.append((p.key, {"name": canonical_name(p.name), **({"marker": m} if m else {}), "vcs": vcs}))
            continue
        d = {"name": canonical_name(p.name), "version": p.version}
        if m:
            d["marker"] = m
        if "registry" in p.source:
            d["index"] = p.source["registry"]
        elif not p.files() and ("url" in p.source or "path" in p.source):
            # A release pinned by URL or path with no file entry: an archive, as PEP 751 calls it.
            loc = p.source.get("url") or Path(p.source["path"]).resolve().as_uri()
            d["archive"] = {"url": loc}
        if p.sdist:
            d["sdist"] = _pylock_file(p.sdist)
        if p.wheels:
            d["wheels"] = [_pylock_file(w) for w in sorted(p.wheels, key=lambda f: (f.filename, f.url, f.sha256))]
        if not p.files() and "archive" not in d:
            raise LockError(f"{LOCK_NAME}: {p.name}=={p.version} has no files to install",
                            hint="re-create the lock with `pypm lock --refresh`")
        entries.append((p.key, d))
    for _, d in sorted(entries, key=lambda e: e[0]):
        out.append("\n[[packages]]\n")
        for k, v in d.items():
            if k == "wheels":
                out.append("wheels = [\n" + "".join(f"    {_v(w)},\n" for w in v) + "]\n")
            else:
                out.append(f"{_k(k)} = {_v(v)}\n")
    return "".join(out)


def render_requirements(lock: Lock, selection: Selection, *, project_dir: Path | None = None,
                        base_dir: Path | None = None, lock_dir: Path | None = None) -> str:
    """A pip requirements file: `name==version ; marker` and a `--hash` for every locked file."""
    pkgs = select_packages(lock, selection, env=None)
    _check_hashes(pkgs)
    markers = selection_markers(lock, selection)
    out = ["# This file was generated by `pypm export --format requirements.txt`; do not edit it by hand.\n"]
    if project_dir is not None:
        path = _posix_rel(project_dir, base_dir or Path.cwd())
        out.append(f"-e {path if path.startswith('.') else './' + path}\n")
    for p in pkgs:
        name = canonical_name(p.name)
        if p.virtual_member:
            continue
        if p.local_directory:  # a path dependency's directory, as the project's own line is written
            where = _posix_rel(Path(os.path.normpath((lock_dir or Path.cwd()) / p.local_directory)),
                               base_dir or Path.cwd())
            where = where if where.startswith(("/", ".")) else "./" + where
            m = markers.get(p.key, p.marker)
            out.append(("-e " if "editable" in p.source else "") + where + (f" ; {m}" if m else "") + "\n")
            continue
        if p.git:  # pip checks out that very commit
            from .gitsource import parse_lock_source

            ref, commit = parse_lock_source(p.git, LOCK_NAME)
            line = f"{name} @ {ref.pep508(commit)}"
        elif "url" in p.source or "path" in p.source:
            # A file named by URL or path, not a release an index serves: pip must fetch that file
            # (`name==version` would send it to the index). A locked file is the one its hash names.
            loc = p.source.get("url") or Path(os.path.normpath((lock_dir or Path.cwd()) / p.source["path"])).as_uri()
            line = f"{name} @ {loc}"
        else:
            line = f"{name}=={p.version}"
        m = markers.get(p.key, p.marker)
        if m:
            line += f" ; {m}"
        hashes = sorted({f.sha256 for f in p.files()})
        if hashes:
            line += " \\\n" + " \\\n".join(f"    --hash=sha256:{h}" for h in hashes)
        out.append(line + "\n")
    return "".join(out)


# --------------------------------------------------------------------------- the command

def _read_lock(ctx: "Context", project: "Project") -> Lock:
    import importlib.util

    if importlib.util.find_spec("pypm.locking") is None:
        from .lockfile import read

        return read(project.root / LOCK_NAME)
    from .errors import PypmError
    from .locking import LockOptions, ensure_lock, lock_inputs_hash

    path = project.root / LOCK_NAME
    if not path.exists():
        raise LockError(f"{path} does not exist, so there is nothing to export",
                        hint="create it with `pypm lock`, then export")

    # Export writes the lock as it is (no network, no resolver); a stale lock is worth a warning.
    lock = ensure_lock(ctx, project, locked=False, frozen=True, offline=True)
    try:
        stale = lock.content_hash != lock_inputs_hash(project, LockOptions.from_lock(lock))
    except PypmError as e:  # e.g. no index configurable: the check is advisory, the export is not
        ctx.debug(f"could not tell whether {LOCK_NAME} is current: {e.message}")
        stale = False
    if stale:
        ctx.info(f"warning: {LOCK_NAME} is out of date with pyproject.toml; exporting it as it is "
                 "(run `pypm lock` first to update it)")
    return lock


def _validate_names(project: "Project", args: "argparse.Namespace") -> None:
    known_extras = set(project.optional_dependencies)
    known_groups = set(project.dependency_groups)
    for flag, names, known in (("--extra", args.extra, known_extras), ("--group", args.group, known_groups),
                               ("--only-group", args.only_group, known_groups)):
        for n in names:
            if canonical_name(n) not in known:
                what = "optional-dependencies" if flag == "--extra" else "dependency-groups"
                raise UsageError(
                    f"{flag} {n}: {project.pyproject} defines no such entry in [{'project.' if flag == '--extra' else ''}{what}]",
                    hint=f"known: {', '.join(sorted(known)) or '(none)'}",
                )


def export_project(ctx: "Context", project: "Project", args: "argparse.Namespace") -> int:
    """`pypm export`: write the locked set in another format, to a file (atomically) or stdout."""
    _validate_names(project, args)
    sel = Selection.from_flags(extras=args.extra, all_extras=args.all_extras, no_dev=args.no_dev,
                               groups=args.group, only_groups=args.only_group,
                               no_install_project=args.no_install_project,
                               packages=getattr(args, "package", []) or [],
                               all_packages=bool(getattr(args, "all_packages", False)))
    out_path = Path(args.output).resolve() if args.output else None
    if out_path is not None:
        if args.format == "pylock.toml" and not is_pylock_name(out_path.name):
            raise UsageError(f"-o {args.output}: PEP 751 lock files must be named pylock.toml or pylock.NAME.toml",
                             hint=f"use e.g. -o {out_path.with_name('pylock.toml')}")
        if not out_path.parent.is_dir():
            raise UsageError(f"-o {args.output}: directory {out_path.parent} does not exist",
                             hint="create it first, or write somewhere else")
    lock = _read_lock(ctx, project)
    base = out_path.parent if out_path else Path.cwd()
    project_dir = project.root if (sel.include_project and not project.is_virtual) else None
    if args.format == "pylock.toml":
        text = render_pylock(lock, sel, project_dir=project_dir, project_name=project.name, base_dir=base,
                             lock_dir=project.root)
    else:
        text = render_requirements(lock, sel, project_dir=project_dir, base_dir=base, lock_dir=project.root)
    if out_path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        try:
            write_atomic(out_path, text)
        except OSError as e:
            raise ProjectError(f"cannot write {out_path}: {e.strerror or e}",
                               hint="check the directory exists and is writable") from None
        ctx.info(f"wrote {out_path}")
    return ExitCode.OK


# --------------------------------------------------------------------------- import

_VERSION_OK = re.compile(r"^1(\.\d+)?$")


def _pl_err(path: Path, key: str, msg: str) -> LockError:
    return LockError(f"{path}: `{key}` {msg}",
                     hint="regenerate the file with the tool that wrote it (it must follow PEP 751)")


def _pl_file(d: Any, where: str, path: Path) -> FileEntry:
    if not isinstance(d, Mapping):
        raise _pl_err(path, where, "must be a table")
    url = d.get("url")
    local = d.get("path")
    if url is not None and not isinstance(url, str):
        raise _pl_err(path, f"{where}.url", "must be a string")
    if local is not None and not isinstance(local, str):
        raise _pl_err(path, f"{where}.path", "must be a string")
    if not url:
        if not local:
            raise _pl_err(path, where, "has neither `url` nor `path`")
        p = Path(local)
        url = (p if p.is_absolute() else (path.parent / p)).resolve().as_uri()
    name = d.get("name")
    if name is None:
        name = unquote(url.rstrip("/").rsplit("/", 1)[-1])
    if not isinstance(name, str) or not name:
        raise _pl_err(path, f"{where}.name", "must be a file name")
    hashes = d.get("hashes")
    if not isinstance(hashes, Mapping) or not hashes:
        raise _pl_err(path, f"{where}.hashes", "must be a table with at least one hash (e.g. sha256)")
    sha = hashes.get("sha256", "")
    if not isinstance(sha, str):
        raise _pl_err(path, f"{where}.hashes.sha256", "must be a string")
    # A file hashed only with another algorithm keeps an empty sha256: `pypm lock --refresh`
    # fills it, and sync refuses it until then.
    size = d.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise _pl_err(path, f"{where}.size", "must be a non-negative integer")
    return FileEntry(filename=name, url=url, sha256=sha.lower(), size=size)


def import_pylock(path: Path | str) -> Lock:
    """Read a PEP 751 file into a Lock of pins (no root package, no content-hash).

    Entries without a version (directories, unpinned VCS checkouts) carry nothing to prefer
    and are left out; every other entry keeps its index, marker and files.
    """
    import tomllib

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LockError(f"{path} does not exist", hint="pass the path of a pylock.toml to --from") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LockError(f"cannot read {path}: {e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LockError(f"{path}: not valid TOML: {e}", hint="fix the syntax, or regenerate the file") from None
    ver = data.get("lock-version")
    if ver is None:
        raise _pl_err(path, "lock-version", "is missing; this does not look like a PEP 751 lock file")
    if not isinstance(ver, str) or not _VERSION_OK.match(ver):
        raise LockError(f"{path}: `lock-version` is {ver!r}; pypm reads PEP 751 lock-version 1.x",
                        hint="export the lock again with a tool that writes lock-version 1.0")
    rp = data.get("requires-python", "")
    if not isinstance(rp, str):
        raise _pl_err(path, "requires-python", "must be a string")
    raw = data.get("packages", [])
    if not isinstance(raw, list):
        raise _pl_err(path, "packages", "must be an array of tables ([[packages]])")
    from packaging.markers import InvalidMarker, Marker
    from packaging.version import InvalidVersion, Version

    packages: list[LockedPackage] = []
    seen: set[tuple[str, str, str | None]] = set()
    for i, p in enumerate(raw):
        where = f"packages[{i}]"
        if not isinstance(p, Mapping):
            raise _pl_err(path, where, "must be a table")
        name = p.get("name")
        if not isinstance(name, str) or not name:
            raise _pl_err(path, f"{where}.name", "must be a non-empty string")
        where = f"packages[{i}] ({name})"
        version = p.get("version")
        if version is None:
            continue
        if not isinstance(version, str):
            raise _pl_err(path, f"{where}.version", "must be a string")
        try:
            Version(version)
        except InvalidVersion:
            raise _pl_err(path, f"{where}.version", f"is {version!r}, not a PEP 440 version") from None
        marker = p.get("marker")
        if marker is not None:
            if not isinstance(marker, str):
                raise _pl_err(path, f"{where}.marker", "must be a string")
            try:
                Marker(marker)
            except InvalidMarker as e:
                raise _pl_err(path, f"{where}.marker", f"is not a valid PEP 508 marker: {marker!r} ({e})") from None
        index = p.get("index")
        if index is not None and not isinstance(index, str):
            raise _pl_err(path, f"{where}.index", "must be a URL string")
        sdist = _pl_file(p["sdist"], f"{where}.sdist", path) if "sdist" in p else None
        wheels_raw = p.get("wheels", [])
        if not isinstance(wheels_raw, list):
            raise _pl_err(path, f"{where}.wheels", "must be an array of tables")
        wheels = [_pl_file(w, f"{where}.wheels[{j}]", path) for j, w in enumerate(wheels_raw)]
        source: dict[str, str]
        if index:
            source = {"registry": index}
        elif isinstance(p.get("archive"), Mapping) and isinstance(p["archive"].get("url"), str):
            source = {"url": p["archive"]["url"]}
        elif isinstance(p.get("vcs"), Mapping) and isinstance(p["vcs"].get("url"), str):
            vcs = p["vcs"]
            source = {"url": f"{vcs.get('type', 'git')}+{vcs['url']}@{vcs.get('commit-id', '')}".rstrip("@")}
        elif sdist or wheels:
            source = {"url": (sdist or wheels[0]).url.rsplit("/", 1)[0] + "/"}
        else:
            raise _pl_err(path, where, "has a version but no index, archive, vcs, sdist or wheels")
        ident = (canonical_name(name), version, marker)
        if ident in seen:
            raise _pl_err(path, where, f"repeats {name}=={version} with the same marker")
        seen.add(ident)
        packages.append(LockedPackage(name=canonical_name(name), version=version, source=source,
                                      marker=marker or None, sdist=sdist, wheels=wheels))
    return Lock(requires_python=rp, content_hash="", packages=packages)
