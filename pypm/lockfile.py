"""The pypm.lock model: plain data, a deterministic TOML writer, a validating reader.

Pure: no network, no processes; `write_atomic` is the only function that touches disk.
The format is specified in docs/lock-format.md; keep the two in step.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import LockError, ProjectError
from .fastpath import LOCK_VERSION  # (defined there: the no-op lock keys its record by it without this module)

__all__ = [
    "LOCK_VERSION",
    "LOCK_NAME",
    "FileEntry",
    "Dependency",
    "LockedPackage",
    "Lock",
    "dumps",
    "loads",
    "read",
    "write_atomic",
    "canonical_name",
]

LOCK_NAME = "pypm.lock"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CANON = re.compile(r"[-_.]+")


def canonical_name(name: str) -> str:
    """PEP 503 normalisation; kept here (not packaging.utils) so reading a lock stays cheap."""
    return _CANON.sub("-", name).lower()


@dataclass(frozen=True, order=True)
class FileEntry:
    """One installable file of a release: where it is and what its bytes must hash to."""

    filename: str
    url: str
    sha256: str  # 64 lowercase hex digits; anything else is refused by `sync`
    size: int | None = None

    def has_valid_hash(self) -> bool:
        return bool(_HEX64.match(self.sha256))

    def to_toml(self) -> dict[str, Any]:
        d: dict[str, Any] = {"filename": self.filename, "url": self.url, "sha256": self.sha256}
        if self.size is not None:
            d["size"] = self.size
        return d


@dataclass(frozen=True, order=True)
class Dependency:
    """An edge of the locked graph: `name` at `version`, needed when `marker` holds."""

    name: str
    version: str
    marker: str | None = None
    extras: tuple[str, ...] = ()

    def to_toml(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "version": self.version}
        if self.extras:
            d["extras"] = sorted(self.extras)
        if self.marker:
            d["marker"] = self.marker
        return d


def _dep_key(d: "Dependency") -> tuple[str, str, str, tuple[str, ...]]:
    # Not the dataclass order: a None marker beside a string one would make sorted() raise.
    return (canonical_name(d.name), d.version, d.marker or "", tuple(sorted(d.extras)))


def _file_key(f: "FileEntry") -> tuple[str, str, str, int]:
    return (f.filename, f.url, f.sha256, -1 if f.size is None else f.size)


@dataclass
class LockedPackage:
    """One `[[package]]`: a name at one version, its edges and every file of the release."""

    name: str
    version: str
    # {"registry": index-url} | {"find-links": dir-or-url} | {"editable": "."} (the project) |
    # {"virtual": "."} | {"virtual": dir} (a workspace member without [build-system]) |
    # {"editable": dir} / {"directory": dir} (a path dependency, installed
    # editable or built) | {"path": file} (a local wheel or sdist) | {"url": u}
    source: dict[str, str]
    marker: str | None = None  # when the environment needs this package at all (None: always)
    main: bool = False  # pulled in by [project] dependencies
    extras: list[str] = field(default_factory=list)  # project extras that pull it in
    groups: list[str] = field(default_factory=list)  # PEP 735 groups that pull it in
    dependencies: list[Dependency] = field(default_factory=list)
    optional_dependencies: dict[str, list[Dependency]] = field(default_factory=dict)
    dependency_groups: dict[str, list[Dependency]] = field(default_factory=dict)  # the root, workspace members
    sdist: FileEntry | None = None
    wheels: list[FileEntry] = field(default_factory=list)
    # Issue 5 (hermetic builds): pinned build-system requirements of a package built from source.
    build_dependencies: list[Dependency] = field(default_factory=list)
    build_network: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (canonical_name(self.name), self.version)

    @property
    def is_root(self) -> bool:
        return self.source.get("editable") == "." or self.source.get("virtual") == "."

    @property
    def virtual_member(self) -> bool:
        """A workspace member without a [build-system] (`virtual = "<dir>"`): its dependencies are
        installed, it is not (as uv's virtual members)."""
        return not self.is_root and "virtual" in self.source

    @property
    def local_directory(self) -> str | None:
        """A path dependency's directory as the lock writes it (relative to the lock's
        directory), when it is one (`editable` or `directory`); None otherwise."""
        if self.is_root:
            return None
        return self.source.get("editable") or self.source.get("directory")

    @property
    def git(self) -> str | None:
        """A git dependency's source (`URL?tag=...&subdirectory=...#COMMIT`, pypm.gitsource), when it
        is one: built from that commit's checkout, with no file of its own."""
        return self.source.get("git")

    @property
    def has_no_files(self) -> bool:
        """Built from a tree, not installed from a locked file: the project, a path dependency's
        directory, a virtual member, a git commit (the lock pins what it declares, not bytes)."""
        return self.is_root or bool(self.local_directory) or self.virtual_member or bool(self.git)

    def files(self) -> list[FileEntry]:
        return ([self.sdist] if self.sdist else []) + list(self.wheels)

    def index_source(self) -> tuple[str, str] | None:
        """("registry", index URL) or ("find-links", location) when an index serves it, else None."""
        for kind in ("registry", "find-links"):
            if self.source.get(kind):
                return kind, self.source[kind]
        return None

    def to_toml(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "version": self.version, "source": dict(self.source)}
        if self.marker:
            d["marker"] = self.marker
        if self.main:
            d["main"] = True
        if self.extras:
            d["extras"] = sorted(self.extras)
        if self.groups:
            d["groups"] = sorted(self.groups)
        if self.build_network:
            d["build-network"] = True
        if self.dependencies:
            d["dependencies"] = [x.to_toml() for x in sorted(self.dependencies, key=_dep_key)]
        if self.build_dependencies:
            d["build-dependencies"] = [x.to_toml() for x in sorted(self.build_dependencies, key=_dep_key)]
        if self.optional_dependencies:
            d["optional-dependencies"] = {
                k: [x.to_toml() for x in sorted(v, key=_dep_key)] for k, v in sorted(self.optional_dependencies.items())
            }
        if self.dependency_groups:
            d["dependency-groups"] = {
                k: [x.to_toml() for x in sorted(v, key=_dep_key)] for k, v in sorted(self.dependency_groups.items())
            }
        if self.sdist:
            d["sdist"] = self.sdist.to_toml()
        if self.wheels:
            d["wheels"] = [w.to_toml() for w in sorted(self.wheels, key=_file_key)]
        return d


@dataclass
class Lock:
    requires_python: str
    content_hash: str  # "sha256:<hex>" of the canonical resolution inputs (see project.content_hash)
    packages: list[LockedPackage] = field(default_factory=list)
    version: int = LOCK_VERSION
    options: dict[str, Any] = field(default_factory=dict)  # resolution options, recorded for humans
    resolution_markers: list[str] = field(default_factory=list)  # the forks, when there were any
    # Issue 7: {"root": hex, "key-id": ..., "signature": base64} — written by `lock --sign`.
    signature: dict[str, str] = field(default_factory=dict)
    # The workspace's members (normalised names), each a package with an `editable` source.
    members: list[str] = field(default_factory=list)

    def root(self) -> LockedPackage | None:
        for p in self.packages:
            if p.is_root:
                return p
        return None

    def by_name(self, name: str) -> list[LockedPackage]:
        n = canonical_name(name)
        return [p for p in self.packages if canonical_name(p.name) == n]

    def get(self, name: str, version: str) -> LockedPackage | None:
        n = canonical_name(name)
        for p in self.packages:
            if canonical_name(p.name) == n and p.version == version:
                return p
        return None

    def sorted_packages(self) -> list[LockedPackage]:
        # Root first, then by canonical name and version string: stable on every machine.
        return sorted(self.packages, key=lambda p: (not p.is_root, canonical_name(p.name), p.version))


# --------------------------------------------------------------------------- writing
# A small hand-written TOML emitter: the lock's byte-for-byte stability is part of the
# spec (same inputs, same bytes, reviewable diffs), and tomli-w gives no control over
# which tables are inline. Only the value types a lock holds are supported.

# Printable ASCII but `"` and `\`: written as it is. Nearly every string of a lock (names,
# versions, URLs, hashes, times) is one, and json.dumps for each was most of writing a 60-package
# lock (~9 -> ~5 ms).
_PLAIN = re.compile(r"[ !#-\[\]-~]*")


def _s(value: str) -> str:
    if _PLAIN.fullmatch(value):
        return f'"{value}"'
    # A JSON string is a TOML basic string, but for DEL, which TOML wants escaped and JSON does not.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _v(value: Any) -> str:
    if type(value) is str:  # the common case first
        return _s(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _s(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_k(k)} = {_v(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_v(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} into a lock")


_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _k(key: str) -> str:
    return key if _BARE.match(key) else _s(key)


def _array_of_tables(key: str, items: list[dict[str, Any]]) -> str:
    if not items:
        return f"{key} = []\n"
    return f"{key} = [\n" + "".join(f"    {_v(i)},\n" for i in items) + "]\n"


def _package_block(d: dict[str, Any]) -> str:
    out = ["[[package]]\n"]
    subtables: list[str] = []
    for k, v in d.items():
        if k in ("dependencies", "build-dependencies", "wheels"):
            out.append(_array_of_tables(k, v))
        elif k in ("optional-dependencies", "dependency-groups"):
            block = f"\n[package.{k}]\n" + "".join(_array_of_tables(_k(g), deps) for g, deps in v.items())
            subtables.append(block)
        else:
            out.append(f"{_k(k)} = {_v(v)}\n")
    return "".join(out) + "".join(subtables)


def dumps(lock: Lock) -> str:
    """Serialise deterministically: sorted, no timestamps, one stable layout."""
    head = [
        "# This file is generated by `pypm lock`; do not edit it by hand.\n",
        f"version = {lock.version}\n",
        f"requires-python = {_s(lock.requires_python)}\n",
        f"content-hash = {_s(lock.content_hash)}\n",
    ]
    if lock.resolution_markers:
        head.append("resolution-markers = [\n" + "".join(f"    {_s(m)},\n" for m in sorted(lock.resolution_markers)) + "]\n")
    if lock.members:
        head.append("members = [" + ", ".join(_s(m) for m in sorted(lock.members)) + "]\n")
    if lock.options:
        head.append("\n[options]\n" + "".join(f"{_k(k)} = {_v(v)}\n" for k, v in sorted(lock.options.items())))
    if lock.signature:
        head.append("\n[signature]\n" + "".join(f"{_k(k)} = {_v(v)}\n" for k, v in sorted(lock.signature.items())))
    blocks = [_package_block(p.to_toml()) for p in lock.sorted_packages()]
    return "".join(head) + "".join("\n" + b for b in blocks)


_STALE_TMP_SECONDS = 15 * 60  # a write takes milliseconds; a temp file this old was abandoned


def _umask() -> int:
    # Linux reports it without changing it; os.umask() can only be read by setting it, which
    # would race with files other threads (downloads) create meanwhile.
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_abandoned_temps(path: Path) -> None:
    """Temp files of an earlier write killed before its rename (kill -9, power loss)."""
    import time

    now = time.time()
    for old in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if now - old.stat().st_mtime > _STALE_TMP_SECONDS:
                old.unlink()
        except FileNotFoundError:  # another process cleaned it first
            pass


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never a mix.

    The new file keeps the old one's permissions, or gets the usual 0666 & ~umask (mkstemp
    alone would leave 0600, making a committed lock or pyproject unreadable to others).
    """
    path = Path(path)
    if path.is_dir():  # os.replace would fail only after the whole text was written
        raise ProjectError(f"cannot write {path}: it is a directory",
                           hint=f"remove or rename the directory {path}, then run the command again")
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    _remove_abandoned_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # read-only or full file system, no permission on the directory
        raise ProjectError(f"cannot write {path}: {e.strerror or e}",
                           hint=f"check that {path.parent} exists and is writable") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):  # disk full, I/O error: the old file is untouched
            raise ProjectError(f"cannot write {path}: {e.strerror or e}",
                               hint=f"check free space and permissions in {path.parent}") from None
        raise


# --------------------------------------------------------------------------- reading

def _need(d: Mapping[str, Any], key: str, typ: type | tuple[type, ...], where: str, path: Path) -> Any:
    if key not in d:
        raise LockError(f"{path}: {where} has no `{key}`", hint="re-create the lock with `pypm lock`")
    v = d[key]
    if not isinstance(v, typ):
        raise LockError(f"{path}: {where}.{key} has the wrong type ({type(v).__name__})",
                        hint="re-create the lock with `pypm lock`")
    return v


def _file(d: Any, where: str, path: Path) -> FileEntry:
    if not isinstance(d, Mapping):
        raise LockError(f"{path}: {where} must be a table", hint="re-create the lock with `pypm lock`")
    sha = d.get("sha256", "")
    if not isinstance(sha, str):
        sha = ""
    if sha.startswith("sha256:"):
        sha = sha[len("sha256:"):]
    size = d.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        # Not dropped silently: a size is checked on every download.
        raise _bad(path, f"{where}.size must be a whole number of bytes, not {size!r}")
    filename = _need(d, "filename", str, where, path)
    if "/" in filename or "\\" in filename or filename in ("", ".", ".."):
        # The cache stores files under their name: a path here must never become one.
        raise _bad(path, f"{where}.filename {filename!r} is not a plain file name")
    return FileEntry(
        filename=filename,
        url=_need(d, "url", str, where, path),
        sha256=sha,
        size=size,
    )


def _bad(path: Path, msg: str) -> LockError:
    return LockError(f"{path}: {msg}", hint="re-create the lock with `pypm lock`")


def _str_list(v: Any, where: str, path: Path) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _bad(path, f"{where} must be an array of strings")
    return list(v)


def _opt_str(d: Mapping[str, Any], key: str, where: str, path: Path) -> str | None:
    v = d.get(key)
    if v is not None and not isinstance(v, str):
        raise _bad(path, f"{where}.{key} must be a string")
    return v or None


def _table(v: Any, where: str, path: Path) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _bad(path, f"{where} must be a table")
    return v


def _deps(items: Any, where: str, path: Path) -> list[Dependency]:
    if not isinstance(items, list):
        raise _bad(path, f"{where} must be an array")
    out = []
    for i, d in enumerate(items):
        w = f"{where}[{i}]"
        if not isinstance(d, Mapping):
            raise _bad(path, f"{w} must be a table")
        out.append(Dependency(
            name=_need(d, "name", str, w, path),
            version=_need(d, "version", str, w, path),
            marker=_opt_str(d, "marker", w, path),
            extras=tuple(_str_list(d.get("extras", []), f"{w}.extras", path)),
        ))
    return out


def _dep_tables(v: Any, where: str, path: Path) -> dict[str, list[Dependency]]:
    return {k: _deps(x, f"{where}.{k}", path) for k, x in _table(v, where, path).items()}


def loads(text: str, path: Path | str = LOCK_NAME) -> Lock:
    """Parse and validate a lock; every problem is a LockError naming the file and the key."""
    from .locktoml import Unsupported
    from .locktoml import loads as fast_loads

    path = Path(path)
    try:
        data = fast_loads(text)  # the layout dumps() writes, read by the C JSON decoder
    except Unsupported:  # anything else: the full TOML parser reads it, or says what is wrong
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise LockError(f"{path}: not valid TOML: {e}", hint="re-create it with `pypm lock`") from None
    version = data.get("version")
    # `isinstance(True, int)` holds and `True == 1`: a boolean is not a format version.
    if isinstance(version, bool) or version != LOCK_VERSION:
        raise LockError(
            f"{path}: lock format version {version!r} is not supported (this pypm reads version {LOCK_VERSION})",
            hint="re-create it with `pypm lock`, or use the pypm that wrote it",
        )
    raw_packages = data.get("package", [])
    if not isinstance(raw_packages, list):
        raise _bad(path, "`package` must be an array of tables ([[package]])")
    packages = []
    seen: set[tuple[str, str]] = set()
    for i, p in enumerate(raw_packages):
        where = f"package[{i}]"
        if not isinstance(p, dict):
            raise _bad(path, f"{where} must be a table")
        name = _need(p, "name", str, where, path)
        where = f"package {name!r}"
        wheels = p.get("wheels", [])
        if not isinstance(wheels, list):
            raise _bad(path, f"{where}.wheels must be an array")
        source = dict(_need(p, "source", dict, where, path))
        if not all(isinstance(v, str) for v in source.values()):
            raise _bad(path, f"{where}.source must map its kind to a string, not {source!r}")
        pkg = LockedPackage(
            name=name,
            version=_need(p, "version", str, where, path),
            source=source,
            marker=_opt_str(p, "marker", where, path),
            main=bool(p.get("main", False)),
            extras=_str_list(p.get("extras", []), f"{where}.extras", path),
            groups=_str_list(p.get("groups", []), f"{where}.groups", path),
            dependencies=_deps(p.get("dependencies", []), f"{where}.dependencies", path),
            optional_dependencies=_dep_tables(p.get("optional-dependencies", {}), f"{where}.optional-dependencies", path),
            dependency_groups=_dep_tables(p.get("dependency-groups", {}), f"{where}.dependency-groups", path),
            sdist=_file(p["sdist"], f"{where}.sdist", path) if "sdist" in p else None,
            wheels=[_file(w, f"{where}.wheels[{j}]", path) for j, w in enumerate(wheels)],
            build_dependencies=_deps(p.get("build-dependencies", []), f"{where}.build-dependencies", path),
            build_network=bool(p.get("build-network", False)),
        )
        if pkg.key in seen:  # which entry's files and edges would count is anybody's guess
            raise _bad(path, f"package {name!r} version {pkg.version!r} is listed twice")
        seen.add(pkg.key)
        packages.append(pkg)
    rp = data.get("requires-python", "")
    ch = data.get("content-hash", "")
    if not isinstance(rp, str) or not isinstance(ch, str):
        raise _bad(path, "`requires-python` and `content-hash` must be strings")
    return Lock(
        version=version,
        requires_python=rp,
        content_hash=ch,
        packages=packages,
        options=dict(_table(data.get("options", {}), "`options`", path)),
        resolution_markers=_str_list(data.get("resolution-markers", []), "`resolution-markers`", path),
        signature=dict(_table(data.get("signature", {}), "`signature`", path)),
        members=_str_list(data.get("members", []), "`members`", path),
    )


def read(path: Path) -> Lock:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LockError(f"{path} does not exist", hint="create it with `pypm lock`") from None
    except UnicodeDecodeError as e:
        raise LockError(f"{path} is not UTF-8 text ({e})", hint="re-create it with `pypm lock`") from None
    except OSError as e:  # a directory, no permission, an I/O error
        raise LockError(f"cannot read {path}: {e.strerror or e}",
                        hint="pypm.lock must be a readable file; re-create it with `pypm lock`") from None
    return loads(text, path)


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def iter_files(lock: Lock) -> Iterable[tuple[LockedPackage, FileEntry]]:
    for p in lock.sorted_packages():
        for f in p.files():
            yield p, f
