"""Path dependencies: a package taken from a local directory or file instead of an index.

Declared two ways, as uv takes them:

- `[tool.pypm.sources] lib = { path = "../lib", editable = true }`, with `lib` named in a
  requirement array as usual (`dependencies = ["lib"]`);
- a PEP 508 direct reference to a local path, `lib @ file:///abs/lib` (never editable).

A source names where the package comes from wherever it is required: the index is not asked
for it. The path may be a project directory (built in the sandbox at sync time, or installed
editable) or a wheel or sdist file (hashed into the lock like any file). Sources are followed
into path dependencies' own pyproject.toml, each path relative to the file that names it, so a
library that takes its sibling from `../core` brings that along.

A directory's metadata is read from its `[project]` table without running its build backend
when it is static. What the table leaves to the backend (`project.dynamic`: the version, the
dependencies, ...) is asked of the backend, in the build sandbox, before resolving
(`LocalSources.prepare_dynamic`, with pypm.locking's builder), as for an index's sdist whose
PKG-INFO cannot be trusted; `--no-build` refuses it, naming the file and the key. Its build
requirements are locked as an sdist's are, and its build runs in the sandbox.

The lock records the path as written (relative to the project), `source = { editable = "../lib" }`,
`{ directory = "../lib" }` or `{ path = "../wheels/lib-1.0-py3-none-any.whl" }`. A directory has
no file to hash: what the lock pins is its version and dependencies, and `content-hash` covers
the files its metadata and build come from (`inputs_token`: pyproject.toml, setup.py, setup.cfg),
so changing the library's dependencies makes the project's lock stale, and its venv re-synced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .errors import ProjectError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from .gitsource import GitRef
    from .project import Project
    from .simpleapi import CoreMetadata, DistFile

__all__ = ["PathSource", "LocalSources", "collect", "strip_direct", "inputs_token", "tree_identity", "remote_archive",
           "ARCHIVES", "REMOTE", "TREE_METADATA_DIR"]

ARCHIVES = (".whl", ".tar.gz", ".zip")  # the file names simpleapi.parse_filename reads
REMOTE = ("https://", "http://")  # a remote archive's URL (`lib @ https://host/lib-1.0.tar.gz`)
_STATIC = ("version", "dependencies", "optional-dependencies", "requires-python")


@dataclass(frozen=True)
class PathSource:
    name: str  # canonical
    path: str  # as the lock writes it: relative to the project's root (POSIX separators), or absolute as given
    editable: bool
    origin: str  # where it is declared, for messages: "pyproject.toml: `tool.pypm.sources.lib`"
    member: bool = False  # a workspace member: may be virtual (no [build-system]: not installed)
    sha256: str | None = None  # a remote archive's hash, when its URL gave one (`#sha256=...`)
    git: GitRef | None = None  # a git dependency (`path` is then "git+" and the reference's spec)
    index: str | None = None  # `{ index = URL }`: from that index only (`path` is "index+URL")

    def location(self, root: Path) -> Path:
        assert not self.is_url() and self.git is None, self.path  # no place on this machine (yet)
        return Path(os.path.normpath(os.path.join(root, self.path)))

    def is_tree(self) -> bool:
        """A local project directory (followed into: its own sources are declared there)."""
        return not self.is_file() and self.git is None and self.index is None

    def is_url(self) -> bool:
        """A remote wheel or sdist (`path` is then its URL, without the fragment)."""
        return self.git is None and self.index is None and self.path.startswith(REMOTE)

    def is_file(self) -> bool:
        return self.index is None and (self.is_url() or self.path.endswith(ARCHIVES))

    @property
    def lock_kind(self) -> str:
        """The lock's `source` key: `url` (a remote file), `path` (a local file), `editable` or
        `directory`."""
        if self.git is not None:
            return "git"
        if self.index is not None:
            return "registry"
        return "url" if self.is_url() else "path" if self.is_file() else "editable" if self.editable else "directory"

    def same_place(self, other: PathSource, root: Path) -> bool:
        if self.git is not None or other.git is not None:
            return self.git == other.git
        if self.index is not None or other.index is not None:
            return self.index == other.index
        if self.is_url() or other.is_url():
            return (self.path, self.sha256) == (other.path, other.sha256)
        return self.location(root) == other.location(root)


def inputs_token(directory: Path | str) -> str:
    """What a directory's metadata and build come from (pyproject.toml, setup.py, setup.cfg), as
    one sha256: the project's own editable install is identified the same way."""
    from .venvstate import project_token

    return project_token(directory)


# What a build backend's output cannot depend on, skipped by tree_identity: bytecode, pypm's venv,
# caches of linters and test runners, and setuptools' *.egg-info (which its metadata hook rewrites:
# kept, it would change the identity at every call).
_NOT_INPUTS = frozenset({"__pycache__", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", ".nox"})
_TREE_LIMIT = 20_000  # entries: beyond it, a tree's identity costs more than it is worth (the backend is asked)
# The cache's record of directories' metadata from their backends: <sha256 of the real path>.json
# holding {"tree": tree_identity, "meta": CoreMetadata's fields}.
TREE_METADATA_DIR = "path-metadata"


def tree_identity(directory: Path | str) -> str | None:
    """A digest of everything a build backend could read to compute `directory`'s metadata, such
    that any change to it changes the digest: the stat identity (path, type, mode, size, inode,
    mtime and ctime in ns: a file rewritten with its old size and mtime still differs) of every
    entry below it, bar _NOT_INPUTS, and of the git repository holding it (HEAD, its refs, tags,
    index: setuptools-scm and its kind take the version from there). None when that cannot be
    had surely and cheaply: a symlink to a directory outside it (the tree would go on there), a `.git`
    file (a worktree or submodule: the repository is elsewhere), more than _TREE_LIMIT entries.
    (By hand: no library computes a tree's identity; hashing every file would cost a large
    tree more than the backend it saves asking.)"""
    from .fastpath import sha256

    top = os.path.realpath(directory)
    h = sha256(b"pypm-tree-1\0" + os.fsencode(top) + b"\0")
    count = 0

    def add(rel: str, st: os.stat_result) -> None:
        h.update(b"%s\0%o %d %d %d %d\n" % (os.fsencode(rel), st.st_mode, st.st_size, st.st_ino,
                                              st.st_mtime_ns, st.st_ctime_ns))

    for base, dirs, files in os.walk(top):
        dirs.sort()
        keep = []
        for name in dirs:
            if name in _NOT_INPUTS or name.endswith(".egg-info"):
                continue
            path = os.path.join(base, name)
            if os.path.islink(path):
                # os.walk does not follow it. Into the tree: its target is walked anyway, and the
                # link itself is an entry (where it points, in its identity). Out of it: what it
                # points at would go unseen.
                target = os.path.realpath(path)
                if target != top and not target.startswith(top.rstrip("/") + "/"):
                    return None
                try:
                    add(os.path.relpath(path, top) + " -> " + os.readlink(path), os.lstat(path))
                except OSError:
                    return None
                continue
            if name == ".git":
                continue  # the repository: below, by what decides a version
            keep.append(name)
        dirs[:] = keep
        for name in sorted(files):
            if name == ".git":
                return None  # a worktree's or submodule's: its repository is elsewhere
            path = os.path.join(base, name)
            rel = os.path.relpath(path, top)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue  # removed meanwhile: as if it had not been there
            add(rel, st)
            if st.st_mode & 0o170000 == 0o120000:  # a link to a file: its target's identity too
                try:
                    add(rel + " ->", os.stat(path))
                except OSError:
                    h.update(b"dangling\0")
            count += 1
        count += len(dirs)
        if count > _TREE_LIMIT:
            return None
    # The enclosing repository's HEAD, index, packed refs and refs (a tag is a new version)
    d = top
    while True:
        git = os.path.join(d, ".git")
        if os.path.lexists(git):
            if not os.path.isdir(git) or os.path.islink(git):
                return None
            for rel in ("HEAD", "index", "packed-refs"):
                try:
                    add(".git/" + rel, os.lstat(os.path.join(git, rel)))
                except FileNotFoundError:
                    pass
            try:
                with open(os.path.join(git, "HEAD"), "rb") as f:
                    h.update(f.read(4096))  # (a branch switch may leave its size and times alike)
            except OSError:
                pass
            for base, dirs, files in os.walk(os.path.join(git, "refs")):
                dirs.sort()
                for name in sorted(files):
                    path = os.path.join(base, name)
                    try:
                        add(os.path.relpath(path, git), os.lstat(path))
                    except FileNotFoundError:
                        pass  # packed meanwhile (git pack-refs): packed-refs changed too
                    count += 1
                if count > _TREE_LIMIT:
                    return None
            break
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return h.hexdigest()


# --------------------------------------------------------------------------- declaring

def _local_url_path(url: str, base: Path) -> str | None:
    """The path a `file:` URL names (absolute, or relative to `base` for `file:../lib`), else None."""
    from urllib.parse import unquote, urlsplit

    if not url.startswith("file:"):
        return None
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        return None
    return os.path.normpath(os.path.join(base, unquote(parts.path)))


def strip_direct(text: str) -> tuple[str, str | None, str]:
    """(the requirement without its direct reference, the URL or None, its canonical name)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    r = Requirement(text)
    url = r.url
    if url is None:
        return text, None, str(canonicalize_name(r.name))
    r.url = None
    return str(r), url, str(canonicalize_name(r.name))


def remote_archive(name: str, url: str, origin: str) -> PathSource:
    """The source of `name` at `url`, a wheel or sdist on a web server, checked: http(s), no
    credentials (the lock would carry them), a file name of `name` that says what it is, and at
    most a `#sha256=HEX` fragment (then checked at every download). A VCS URL is refused."""
    import re
    from urllib.parse import unquote, urlsplit, urlunsplit

    from .simpleapi import parse_filename

    hint_vcs = ("pypm locks wheels and sdists (from an index, find-links, a local path or a URL ending in "
                ".whl, .tar.gz or .zip), project directories and git repositories (git+https://host/repo.git@REV)")
    if url.startswith(("hg+", "svn+", "bzr+")):
        raise ProjectError(f"{origin}: {url!r} is a VCS URL pypm cannot lock (of VCS, it takes git)", hint=hint_vcs)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a malformed port
    except ValueError as e:
        raise ProjectError(f"{origin}: {url!r} is not a valid URL ({e})", hint="fix the URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProjectError(f"{origin}: {url!r} is a direct URL pypm cannot lock",
                           hint=f"use an https:// URL of a wheel or sdist, or a file: URL of a local path. {hint_vcs}")
    if parts.username is not None or parts.password is not None:
        raise ProjectError(f"{origin}: {parts.scheme}://{parts.hostname}/...: the URL carries credentials, "
                           "which would be written into pypm.lock",
                           hint="serve the file without credentials, or put it in a find-links directory")
    sha256 = None
    if parts.fragment:
        m = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", parts.fragment)
        if m is None:
            raise ProjectError(f"{origin}: {url!r}: the fragment #{parts.fragment} is not #sha256=<64 hex digits>",
                               hint="give the file's sha256 as #sha256=..., or no fragment (then the file is "
                                    "hashed when the lock is made)")
        sha256 = m.group(1).lower()
    filename = unquote(parts.path.rsplit("/", 1)[-1])
    parsed = parse_filename(filename) if filename.endswith(ARCHIVES) else None
    if parsed is None:
        raise ProjectError(f"{origin}: {url!r} does not end in a wheel or sdist file name "
                           "(NAME-VERSION-...whl, NAME-VERSION.tar.gz or .zip)",
                           hint=f"name the file itself in the URL. {hint_vcs}")
    if parsed[1] != name:
        raise ProjectError(f"{origin}: {filename} is a file of {parsed[1]}, not of {name}",
                           hint="fix the URL or the requirement's name")
    return PathSource(name, urlunsplit(parts._replace(fragment="")), False, origin, sha256=sha256)


def _given_absolute(url: str) -> bool:
    from urllib.parse import unquote, urlsplit

    return os.path.isabs(unquote(urlsplit(url).path))


def _relative(target: str, root: Path) -> str:
    """`target` (absolute) as the lock writes it: relative to `root` when below or beside it."""
    rel = os.path.relpath(target, root)
    return Path(rel).as_posix()


def workspace_members(project: Project) -> dict[str, str]:
    """{normalised name: directory relative to the root} of the members of the workspace whose root
    `project` is (`[tool.pypm.workspace]`; the root itself is not listed); {} without one."""
    import tomllib

    from .lockfile import canonical_name

    if project.tool.workspace is None:
        return {}
    root = project.root.resolve()
    where = f"{project.pyproject}: `tool.pypm.workspace.members`"
    excluded = {d.resolve() for g in project.tool.workspace_exclude for d in root.glob(g)}
    found: dict[str, str] = {}
    for pattern in project.tool.workspace:
        for d in sorted(root.glob(pattern)):
            d = d.resolve()
            if not d.is_dir() or d in excluded or d == root:
                continue
            try:
                name = tomllib.loads((d / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]
            except FileNotFoundError:
                raise ProjectError(f"{where} matches {d}, which has no pyproject.toml",
                                   hint="give it one, or leave it out with `tool.pypm.workspace.exclude`") from None
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError) as e:
                raise ProjectError(f"{where} matches {d}, whose pyproject.toml has no readable [project] name ({e})",
                                   hint="fix that file, or leave the directory out with `exclude`") from None
            canon = canonical_name(str(name))
            rel = _relative(str(d), root)
            if found.get(canon, rel) != rel:
                raise ProjectError(f"{where}: two members are named {canon}: {found[canon]} and {rel}",
                                   hint="rename one, or leave one out with `exclude`")
            if canon == project.normalized_name:
                raise ProjectError(f"{where}: the member {rel} has the root project's name {canon}",
                                   hint="rename it")
            found[canon] = rel
    return found


def collect(project: Project) -> tuple[dict[str, PathSource], dict[str, tuple[str, ...]], tuple[str, ...]]:
    """The project's path sources (followed into path dependencies' own), its requirement arrays
    with local direct references made plain names ({"dependencies": (...), "optional:NAME": (...),
    "group:NAME": (...), and each workspace member's groups as "member-group:MEMBER:GROUP"}), and the names of its workspace's members (each an editable source,
    all of them locked). Remote direct references are refused here."""
    sources: dict[str, PathSource] = {}
    root = project.root
    members = workspace_members(project)

    def declared(name: str, path: str, editable: bool, base: Path, origin: str) -> PathSource:
        if path.startswith(REMOTE):  # `{ url = "https://..." }`
            return remote_archive(name, path, origin)
        if path.startswith("git+"):  # `{ git = "...", tag = "..." }`, checked by pypm.project
            from .gitsource import from_spec

            return PathSource(name, path, False, origin, git=from_spec(path[4:]))
        if path.startswith("index+"):  # `{ index = URL }`: an index's package, from that index alone
            from .credentials import strip  # (`user:password@` kept for the requests, never hashed or recorded)

            url = strip(path[len("index+"):])
            return PathSource(name, "index+" + url, False, origin, index=url)
        if path:
            return PathSource(name, _declared(path, base, root), editable, origin)
        if name not in members:  # `{ workspace = true }`
            have = ", ".join(sorted(members)) or "none"
            raise ProjectError(f"{origin} is `workspace = true`, but the workspace has no member {name} "
                               f"(its members: {have})",
                               hint="add its directory to [tool.pypm.workspace] members of the root's "
                                    "pyproject.toml, or give a `path`")
        return PathSource(name, members[name], editable, origin, member=True)

    arrays = [("dependencies", "project.dependencies", project.dependencies),
              *((f"optional:{k}", f"project.optional-dependencies.{k}", v)
                for k, v in project.optional_dependencies.items()),
              *((f"group:{k}", f"dependency-groups.{k}", v) for k, v in project.dependency_groups.items())]
    plain = {key: tuple(_take_direct(text, root, root, f"{project.pyproject}: `{where}`", sources)
                        for text in texts)
             for key, where, texts in arrays}
    for name, path, editable in project.tool.sources:
        _add(sources, declared(name, path, editable, root, f"{project.pyproject}: `tool.pypm.sources.{name}`"), root)
    for name, rel in members.items():  # every member is locked, and is the package of its name
        if name not in sources:
            _add(sources, PathSource(name, rel, True, f"{project.pyproject}: `tool.pypm.workspace.members`",
                                     member=True), root)
    if project.normalized_name in sources:
        s = sources[project.normalized_name]
        raise ProjectError(f"{s.origin} names the project itself ({project.name}) as a path dependency",
                           hint="remove that source; a project cannot depend on itself")
    # Follow directories: their sources and direct references are theirs to declare.
    # (Not into a git dependency: its checkout is made when it is locked, and its paths are the
    # repository's. Its own direct references are left to the index, by name.)
    todo = [s for s in sources.values() if s.is_tree()]
    seen = {str(root)}
    while todo:
        s = todo.pop()
        d = s.location(root)
        if str(d) in seen:
            continue
        seen.add(str(d))
        sub = _load(d, s, allow_dynamic=True)  # (its backend is asked at lock time: prepare_dynamic)
        for key, texts in (("project.dependencies", sub.dependencies),
                           *((f"project.optional-dependencies.{k}", v) for k, v in sub.optional_dependencies.items())):
            for text in texts:
                _take_direct(text, d, root, f"{sub.pyproject}: `{key}`", sources, todo)
        if s.member:  # a member's own dependency groups are locked too (`--package NAME` installs them)
            for group, texts in sub.dependency_groups.items():
                plain[f"member-group:{s.name}:{group}"] = tuple(
                    _take_direct(t, d, root, f"{sub.pyproject}: `dependency-groups.{group}`", sources, todo)
                    for t in texts)
        for name, path, editable in sub.tool.sources:
            new = declared(name, path, editable, d, f"{sub.pyproject}: `tool.pypm.sources.{name}`")
            if _add(sources, new, root) and new.is_tree():
                todo.append(new)
    return sources, plain, tuple(sorted(members))


def _declared(path: str, base: Path, root: Path) -> str:
    """A source's path as the lock writes it: relative to the project when written relative."""
    expanded = os.path.expanduser(path)
    if os.path.isabs(expanded):
        return os.path.normpath(expanded)
    return _relative(os.path.normpath(os.path.join(base, expanded)), root)


def _take_direct(text: str, base: Path, root: Path, where: str, sources: dict[str, PathSource],
                 todo: list[PathSource] | None = None) -> str:
    if "@" not in text:  # no direct reference (the common case: no parse)
        return text
    plain, url, name = strip_direct(text)
    if url is None:
        return text
    local = _local_url_path(url, base)
    if url.startswith("git+"):
        from .gitsource import parse_requirement_url

        ref = parse_requirement_url(url, where)
        new = PathSource(name, "git+" + ref.spec(), False, where, git=ref)
    elif local is None:  # a remote wheel or sdist (or an error that names what can be locked)
        new = remote_archive(name, url, where)
    else:
        # `file:///abs/lib` stays absolute, as written; `file:../lib` is relative to its pyproject.toml.
        new = PathSource(name, local if _given_absolute(url) else _relative(local, root), False, where)
    if _add(sources, new, root) and todo is not None and new.is_tree():
        todo.append(new)
    return plain


def _add(sources: dict[str, PathSource], new: PathSource, root: Path) -> bool:
    """Record `new`; False when the same source is known already (the same place, however
    written: `../lib` and `file:///abs/lib`). Two different ones are an error."""
    old = sources.get(new.name)
    if old is None:
        sources[new.name] = new
        return True
    if not old.same_place(new, root) or old.editable != new.editable:
        raise ProjectError(f"{new.name} has two sources: {old.path!r}{' (editable)' if old.editable else ''} "
                           f"from {old.origin}, and {new.path!r}{' (editable)' if new.editable else ''} from "
                           f"{new.origin}",
                           hint="make them name the same path, or keep one")
    return False


def _load(d: Path, s: PathSource, *, allow_dynamic: bool = False) -> Project:
    """The project at a directory source, with its metadata checked to be static (unless
    `allow_dynamic`: LocalSources.prepare_dynamic asks its backend then)."""
    import tomllib

    from .project import PYPROJECT, parse_pyproject

    pyproject = d / PYPROJECT
    kind = "git" if s.git is not None else "path"
    # (A git dependency's `d` is a checkout in the cache: the messages name the repository instead.)
    where_git = "" if s.git is None else \
        f"{s.git.url} ({s.git.kind or 'default branch'}{' ' + s.git.rev if s.git.rev else ''})"
    if not d.is_dir():
        what = "does not exist" if not d.exists() else "is not a directory, a wheel or an sdist"
        raise ProjectError(f"{s.origin}: {d} {what}",
                           hint="fix the path (relative paths are relative to the pyproject.toml that names them)")
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProjectError(f"{s.origin}: {where_git if s.git is not None else d} has no pyproject.toml"
                           + (f" in {s.git.subdirectory!r}" if s.git is not None and s.git.subdirectory else ""),
                           hint=f"pypm reads a {kind} dependency's metadata from its [project] table; add one"
                                + (" (or name the project's `subdirectory`)" if s.git is not None else "")) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ProjectError(f"{pyproject}: cannot be read: {e}", hint="fix the file, then run the command again") \
            from None
    sub = parse_pyproject(data, d)
    if sub.normalized_name != s.name:
        raise ProjectError(f"{s.origin}: {d} holds the project {sub.name!r}, not {s.name!r}",
                           hint=f"name it {sub.name!r} in the requirement and the source, or fix the path")
    dynamic = [k for k in _STATIC if k in sub.dynamic]
    if dynamic and not (allow_dynamic and sub.build_system is not None):
        said = f"{s.name} from {where_git}: pyproject.toml" if s.git is not None else str(pyproject)
        raise ProjectError(f"{said}: {', '.join(dynamic)} {'is' if len(dynamic) == 1 else 'are'} listed in "
                           f"`project.dynamic`; pypm reads a {kind} dependency's metadata from its [project] table "
                           "without running its build backend",
                           hint="write them in [project] statically" if s.git is None else
                           "pypm cannot lock this repository yet: depend on a release from an index, or on a "
                           "commit whose pyproject.toml states them")
    if sub.build_system is None and not s.member:  # (a member without one is virtual: not installed)
        raise ProjectError(f"{f'{where_git}: pyproject.toml' if s.git is not None else pyproject} has no "
                           f"[build-system], so {s.name} cannot be built and installed "
                           f"(required through {s.origin})",
                           hint='add one, e.g. [build-system] requires = ["hatchling"] build-backend = '
                                '"hatchling.build"')
    return sub


# --------------------------------------------------------------------------- what the index client serves

def _metadata_from(d: dict[str, Any]) -> CoreMetadata:
    from .simpleapi import CoreMetadata

    return CoreMetadata(name=d["name"], version=d["version"], requires_dist=tuple(d["requires_dist"]),
                        requires_python=d["requires_python"], provides_extra=tuple(d["provides_extra"]))


def _read_kept(path: Path) -> Any:
    """A kept record's data, trusted only when this user alone can have written it (what it says
    a package depends on is what a sync installs): else an OSError, as for none."""
    import json

    from .fastpath import read_own_file

    own = read_own_file(str(path))
    if own is None:
        raise OSError(f"{path}: none, or not this user's alone")
    return json.loads(own[0].decode("utf-8"))


def _keep(path: Path, data: dict[str, Any]) -> None:
    import json

    from .fastpath import replace_file

    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # 0600, whatever the old file's mode was (_read_kept trusts only a record nobody else can write)
        replace_file(str(path), json.dumps(data, sort_keys=True).encode(), mode=0o600)
    except OSError:
        pass  # a read-only cache: the backend is asked again next time


class LocalSources:
    """The releases and metadata of path sources, for pypm.index.IndexClient: one release each."""

    def __init__(self, sources: Mapping[str, PathSource], root: Path, *, cache: Path | None = None,
                 offline: bool = False, pins: Mapping[str, str] | None = None, refresh: bool = False) -> None:
        """`cache`: pypm's cache directory (git checkouts are made there). `pins`: {name: the old
        lock's git source} -- a git dependency whose reference is unchanged keeps its commit (a
        branch that moved on is not followed until `--upgrade`), as uv does. `refresh` (`pypm lock
        --refresh`): a directory's backend is asked again whatever the cache kept for its tree."""
        import threading

        self.sources = dict(sources)
        self.root = root
        self.cache = cache
        self.offline = offline
        self.pins = dict(pins or {})
        self.refresh = refresh
        self._meta: dict[str, CoreMetadata] = {}
        self._virtual: set[str] = set()  # members without [build-system] (metadata_of finds them)
        self._git: dict[str, tuple[Path, str]] = {}
        self._static: dict[str, Project] = {}  # projects prepare_dynamic read whose metadata is static
        self._git_lock = threading.Lock()  # (the index client asks from several threads)

    def __contains__(self, name: str) -> bool:
        return name in self.sources

    def git_checkout(self, name: str) -> tuple[Path, str]:
        """(the checkout's directory, the lock's `git` source text) of a git dependency: the pinned
        commit when the reference is unchanged, else the one it names now."""
        with self._git_lock:
            hit = self._git.get(name)
            if hit is not None:
                return hit
            from . import gitsource

            s = self.sources[name]
            assert s.git is not None and self.cache is not None
            what = f"{name} ({s.origin})"
            commit = None
            pinned = self.pins.get(name)
            if pinned:
                try:
                    ref, commit = gitsource.parse_lock_source(pinned, "pypm.lock")
                except ProjectError:
                    commit = None
                else:
                    commit = commit if ref == s.git else None
            if commit is None:
                commit = gitsource.resolve(s.git, self.cache, offline=self.offline, what=what)
            d = gitsource.checkout(s.git, commit, self.cache, offline=self.offline, what=what)
            hit = self._git[name] = (d, f"{s.git.spec()}#{commit}")
            return hit

    def prepare_dynamic(self, build: Any) -> None:
        """Ask the build backend (`build(directory, name, label, shared)` -> CoreMetadata, run by
        pypm.locking; `shared`: the directory is a checkout in the cache, not to be written into)
        in the sandbox) for the metadata of each path or git dependency whose [project] table
        leaves its version, dependencies, optional-dependencies or requires-python to the backend
        (`project.dynamic`), as uv does. Done before resolving, on the caller's thread: the index
        client's look-ahead threads then find it here."""
        from packaging.version import Version

        for name, s in sorted(self.sources.items()):
            if s.is_file():
                continue
            d = self._directory(s)
            sub = _load(d, s, allow_dynamic=True)
            if not any(k in sub.dynamic for k in _STATIC) or name in self._meta:
                self._static[name] = sub  # (metadata_of reads it from here, not the file again)
                continue
            label = f"{name} ({s.git.spec() if s.git is not None else s.path})"
            # A commit's metadata never changes: kept in the cache under it. A directory's may, with
            # any of its files (or its repository's tags): kept with the tree's identity, and asked
            # again when that changed.
            tree = tree_identity(d) if s.git is None and self.cache is not None else None
            if s.git is not None:
                kept = self._kept_metadata(name)
            else:  # (--refresh: asked again; what it says is kept for the tree as it is now)
                kept = None if self.refresh else self._kept_tree_metadata(d, tree)
            meta = kept or build(d, name, label, s.git is not None)
            if meta.name != name:
                raise ProjectError(f"{s.origin}: the build backend of {label} reports the metadata of {meta.name}",
                                   hint=f"name it {meta.name!r} in the requirement and the source")
            from dataclasses import replace

            # Direct references among its requirements are the sources' business, as for a static table.
            self._meta[name] = meta = replace(meta, version=str(Version(meta.version)),
                                              requires_dist=tuple(strip_direct(t)[0] for t in meta.requires_dist))
            if kept is None:
                if s.git is not None:
                    self._keep_metadata(name, meta)
                elif tree is not None:  # (the identity taken before the build: a change since misses)
                    self._keep_tree_metadata(d, tree, meta)

    def _kept_path(self, name: str) -> Path:
        from .fastpath import sha256
        from .gitsource import TREE_FORMAT

        assert self.cache is not None
        key = sha256(f"{TREE_FORMAT}\0{self.git_checkout(name)[1]}".encode()).hexdigest()
        return self.cache / "git" / "metadata" / f"{key}.json"

    def _kept_metadata(self, name: str) -> CoreMetadata | None:
        try:
            return _metadata_from(_read_kept(self._kept_path(name)))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # none yet (or unreadable, or not this user's alone: asked again, and replaced)

    def _keep_metadata(self, name: str, meta: CoreMetadata) -> None:
        from dataclasses import asdict

        _keep(self._kept_path(name), asdict(meta))

    def _tree_path(self, directory: Path) -> Path:
        from .fastpath import sha256

        assert self.cache is not None
        key = sha256(os.fsencode(os.path.realpath(directory))).hexdigest()
        return self.cache / TREE_METADATA_DIR / f"{key}.json"

    def _kept_tree_metadata(self, directory: Path, tree: str | None) -> CoreMetadata | None:
        """The metadata the backend gave for `directory` when its tree had the identity `tree`."""
        if tree is None:
            return None
        path = self._tree_path(directory)
        try:
            d = _read_kept(path)
            meta = _metadata_from(d["meta"]) if d.get("tree") == tree else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if meta is not None:
            try:  # used: `pypm cache prune` removes records by their mtime
                os.utime(path)
            except OSError:
                pass  # (a read-only cache: at worst the backend is asked again after a prune)
        return meta

    def _keep_tree_metadata(self, directory: Path, tree: str, meta: CoreMetadata) -> None:
        from dataclasses import asdict

        _keep(self._tree_path(directory), {"tree": tree, "meta": asdict(meta)})

    def _directory(self, s: PathSource) -> Path:
        return self.git_checkout(s.name)[0] if s.git is not None else s.location(self.root)

    def files(self, name: str) -> list[DistFile]:
        from .simpleapi import DistFile, parse_filename

        s = self.sources[name]
        common = dict(yanked=None, metadata_sha256=None, has_metadata=False, upload_time=None,
                      source=(s.lock_kind, s.path))
        if s.is_url():  # checked by remote_archive: the index client reads and hashes it as an index's file
            from urllib.parse import unquote, urlsplit

            filename = unquote(urlsplit(s.path).path.rsplit("/", 1)[-1])
            parsed = parse_filename(filename)
            assert parsed is not None
            return [DistFile(name=name, version=str(parsed[2]), filename=filename, url=s.path, kind=parsed[0],
                             sha256=s.sha256, size=None, requires_python=None, **common)]  # type: ignore[arg-type]
        if s.git is not None:
            d, locked = self.git_checkout(name)
            meta = self.metadata_of(name)
            common["source"] = ("git", locked)
            return [DistFile(name=name, version=meta.version, filename=locked, url=d.as_uri(), kind="directory",
                             sha256=None, size=None, requires_python=meta.requires_python, **common)]  # type: ignore[arg-type]
        where = s.location(self.root)
        uri = where.as_uri()
        if not s.is_file():
            meta = self.metadata_of(name)
            if name in self._virtual:
                common["source"] = ("virtual", s.path)
            return [DistFile(name=name, version=meta.version, filename=s.path, url=uri, kind="directory",
                             sha256=None, size=None, requires_python=meta.requires_python, **common)]  # type: ignore[arg-type]
        if not where.is_file():
            raise ProjectError(f"{s.origin}: {where} does not exist",
                               hint="fix the path (relative paths are relative to the pyproject.toml that names them)")
        if s.editable:
            raise ProjectError(f"{s.origin}: {s.path} is a file; only a directory can be installed editable",
                               hint="drop `editable = true`, or name the project's directory")
        parsed = parse_filename(where.name)
        if parsed is None:
            raise ProjectError(f"{s.origin}: {where.name} is not a valid wheel or sdist file name",
                               hint="name the file as its build tool did")
        kind, fname, version = parsed
        if fname != name:
            raise ProjectError(f"{s.origin}: {where.name} is a file of {fname}, not of {name}",
                               hint="fix the path or the requirement's name")
        return [DistFile(name=name, version=str(version), filename=where.name, url=uri, kind=kind, sha256=None,
                         size=where.stat().st_size, requires_python=None, **common)]  # type: ignore[arg-type]

    def metadata_of(self, name: str) -> CoreMetadata:
        """A directory's core metadata, from its [project] table (static, checked by `_load`)."""
        hit = self._meta.get(name)
        if hit is not None:
            return hit
        from packaging.requirements import Requirement
        from packaging.version import Version

        from .simpleapi import CoreMetadata

        s = self.sources[name]
        sub = self._static.get(name) or _load(self._directory(s), s)
        if sub.build_system is None:
            self._virtual.add(name)
        requires = [strip_direct(t)[0] for t in sub.dependencies]
        for extra, texts in sorted(sub.optional_dependencies.items()):
            for t in texts:
                r = Requirement(strip_direct(t)[0])
                marker, r.marker = r.marker, None
                requires.append(f'{r}; ({marker}) and extra == "{extra}"' if marker else f'{r}; extra == "{extra}"')
        assert sub.version is not None  # _load refused a dynamic version
        meta = self._meta[name] = CoreMetadata(name=name, version=str(Version(sub.version)),
                                               requires_dist=tuple(requires),
                                               requires_python=sub.requires_python or None,
                                               provides_extra=tuple(sorted(sub.optional_dependencies)))
        return meta


def hash_inputs(sources: Mapping[str, PathSource], root: Path) -> dict[str, Any]:
    """What of the sources goes into the lock's content-hash: each one's path and kind, and for a
    directory the token of the files its metadata comes from (a file's bytes are in the lock)."""
    out: dict[str, Any] = {}
    for name in sorted(sources):
        s = sources[name]
        entry: dict[str, Any] = {"path": s.path, "kind": s.lock_kind}
        if s.sha256:
            entry["sha256"] = s.sha256
        if s.is_tree():
            entry["inputs"] = inputs_token(s.location(root))
        out[name] = entry
    return out


def directories(packages: Iterable[Any], root: Path) -> dict[str, str]:
    """{absolute directory: inputs token} of the locked path dependencies among `packages` (for
    the venv's state.json: a change there means sync again, as the project's own token does)."""
    out = {}
    for p in packages:
        rel = getattr(p, "local_directory", None) or (p.source.get("virtual") if getattr(p, "virtual_member", False)
                                                      else None)
        if rel:
            d = os.path.normpath(os.path.join(root, rel))
            out[d] = inputs_token(d)
    return out


def check_usable(packages: Iterable[Any], root: Path) -> None:
    """Each locked directory exists and holds a project (before a sync builds anything)."""
    for p in packages:
        rel = getattr(p, "local_directory", None)
        if rel:
            d = Path(os.path.normpath(os.path.join(root, rel)))
            if not (d / "pyproject.toml").is_file():
                raise UsageError(f"pypm.lock: {p.name} comes from the directory {rel}, and {d} holds no pyproject.toml",
                                 hint="restore the directory, or fix [tool.pypm.sources] and run `pypm lock`")


