"""`pypm add`, `pypm remove` and `pypm version`: edit pyproject.toml, then lock and sync.

The array is `[project] dependencies` by default, `[project.optional-dependencies] EXTRA` with
`--optional EXTRA`, or `[dependency-groups] NAME` with `--group NAME` (`--dev`: the `dev` group,
PEP 735, as uv). pyproject.toml is edited with tomlkit, which keeps what people wrote around the
change: comments, key order, quoting and the array's layout. tomllib and tomli-w (what the rest
of pypm uses) read and write TOML data, not documents: a round trip through them would drop every
comment of the file.

What `add` writes (as uv):
- an entry with the same name and the same marker as the new one is replaced where it stands
  (its extras merged with the new ones, its version specifier kept when the new one has none);
  any other is appended, or inserted in order when the array is sorted by name;
- a requirement given without a version or URL gets a lower bound at the version the lock
  picked (`requests` -> `requests>=2.32.3`), unless `--raw`.

Nothing is left half-done. pyproject.toml and pypm.lock are written atomically, and when the lock
or the sync fails or is interrupted both are put back as they were (the sync rolls the venv back
itself), so the project is never left naming a package that cannot be locked or installed. With
`--frozen` only pyproject.toml changes; with `--no-sync` the lock follows and .venv is left alone.
"""

from __future__ import annotations

import argparse
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .errors import ExitCode, ProjectError, UsageError
from .lockfile import canonical_name
from .pathdeps import ARCHIVES, REMOTE
from .project import _NAME, _NAME_HINT

if TYPE_CHECKING:  # pragma: no cover
    from packaging.requirements import Requirement

    from .project import Project

__all__ = ["add_command", "remove_command", "version_command", "bump_version", "parse_requirement"]

@dataclass(frozen=True)
class _Target:
    """Which requirement array of pyproject.toml a command changes."""

    kind: str  # "dependencies" | "optional" | "group"
    name: str = ""  # the extra or group, as given

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> _Target:
        chosen = [t for t in (cls("optional", args.optional) if args.optional else None,
                              cls("group", args.group) if args.group else None,
                              cls("group", "dev") if args.dev else None) if t is not None]
        if len(chosen) > 1:
            raise UsageError("--dev, --group and --optional each name an array: give one of them",
                             hint="run the command once per array")
        target = chosen[0] if chosen else cls("dependencies")
        if target.kind != "dependencies" and not _NAME.match(target.name):
            flag = "--optional" if target.kind == "optional" else "--group"
            raise UsageError(f"{flag} {target.name!r} is not a valid name", hint=_NAME_HINT)
        return target

    @property
    def key(self) -> str:
        """The array's key, as pypm's errors about pyproject.toml name it."""
        if self.kind == "dependencies":
            return "project.dependencies"
        if self.kind == "optional":
            return f"project.optional-dependencies.{self.name}"
        return f"dependency-groups.{self.name}"

    def array(self, doc: Any, *, create: bool) -> Any:
        """The tomlkit array (None when it does not exist and `create` is false)."""
        import tomlkit

        project = doc.get("project")
        if self.kind == "dependencies":
            if "dependencies" not in project:
                if not create:
                    return None
                project["dependencies"] = tomlkit.array()
            return project["dependencies"]
        if self.kind == "optional":
            parent = project.get("optional-dependencies")
            if parent is None:
                if not create:
                    return None
                project["optional-dependencies"] = parent = tomlkit.table()
        else:
            parent = doc.get("dependency-groups")
            if parent is None:
                if not create:
                    return None
                doc["dependency-groups"] = parent = tomlkit.table()
        key = next((k for k in parent if canonical_name(k) == canonical_name(self.name)), None)  # PEP 685 / PEP 735 names
        if key is None:
            if not create:
                return None
            key = self.name
            parent[key] = tomlkit.array()
        return parent[key]


# --------------------------------------------------------------------------- the commands

def add_command(ctx: Any, args: argparse.Namespace) -> int:
    """`pypm add REQ...`."""
    files = getattr(args, "requirements_files", None) or []
    if files:  # `-r requirements.txt` (as uv's): its requirements after those given, in order
        args.requirements, editables = list(args.requirements), []
        for f in files:
            reqs, edits = read_requirements_file(ctx, Path(ctx.directory, f))
            args.requirements += reqs
            editables += edits
        # `-e DIR` lines: path dependencies installed editable, as --editable makes them
        args.requirements += editables
        args.editable_paths = set(editables)
    if not args.requirements:
        raise UsageError("`pypm add` needs a requirement or -r FILE", hint="e.g. `pypm add requests` or "
                                                                         "`pypm add -r requirements.txt`")
    if getattr(args, "script", None):
        return _edit_script(ctx, args, add=True)
    with _project_locked(ctx) as ws:
        return _add(ctx, args, ws)


def remove_command(ctx: Any, args: argparse.Namespace) -> int:
    """`pypm remove NAME...`."""
    if getattr(args, "script", None):
        return _edit_script(ctx, args, add=False)
    with _project_locked(ctx) as ws:
        return _remove(ctx, args, ws)


@contextmanager
def _project_locked(ctx: Any) -> Iterator[tuple[Path, str] | None]:
    """The project's sync lock (`sync.project_lock`), from reading pyproject.toml to the end of the
    sync: two `pypm add`s at once would each write their own edit over the other's, and a
    `pypm sync` meanwhile would install from a lock about to be rolled back. Yields the project's
    workspace (`project.find_workspace`: its root and this member's name), or None: found once,
    for the whole command."""
    from .project import find_project_root, find_workspace
    from .sync import project_lock

    from .editjournal import recover

    root = find_project_root(ctx.directory)
    ws = find_workspace(root)  # a workspace member: the workspace's lock and .venv are what change
    with project_lock(ctx, ws[0] if ws else root):
        recover(ctx, root)  # an add or remove killed here before: rolled back first (held: ours to do)
        yield ws


def _add(ctx: Any, args: argparse.Namespace, ws: tuple[Path, str] | None) -> int:
    project, doc = _load(ctx)
    target = _Target.from_args(args)
    _refuse_dynamic(project, target)
    from packaging.requirements import Requirement

    editable = bool(getattr(args, "editable", False))
    editable_paths: set[str] = getattr(args, "editable_paths", set())  # (`-e DIR` lines of a -r file)
    reqs, local = [], []
    for text in args.requirements:
        if looks_local(text):  # `pypm add ../lib`: a path dependency, named in [tool.pypm.sources] (as uv)
            name, path = _local_target(text, project, ctx.directory)
            this = editable or text in editable_paths
            if this and not Path(project.root, path).is_dir():
                raise UsageError(f"{'--editable' if editable else '-e'} {text}: only a project directory can be "
                                 "installed editable")
            reqs.append(Requirement(name))
            local.append((name, path, this))
        else:
            reqs.append(parse_requirement(named_url(text, ""), local_urls=True))
    if editable and not local:
        raise UsageError("--editable takes a project directory (pypm add --editable ../lib)",
                         hint="a package from an index is never editable; give the path of its source")
    for req in reqs:
        if canonical_name(req.name) == project.normalized_name and not req.extras:
            raise UsageError(f"{req.name} is this project ({project.pyproject}); a project cannot depend on itself")
    array = target.array(doc, create=True)
    _check_array(array, project.pyproject, target)
    bound = []  # entries to give a lower bound once the lock has picked a version
    # No bound for what comes from a path: the directory is the version (as uv), and that includes
    # the names [tool.pypm.sources] already holds and the members of the workspace
    from .pathdeps import workspace_members
    from .project import load_project

    members = workspace_members(load_project(ws[0]) if ws is not None else project)
    local_names = {canonical_name(n) for n, _, _ in local} | set(members) | {
        n for n, where, _ in project.tool.sources if not where.startswith("index+")}  # (an index's: a version)
    for name, path, this in local:
        _set_source(doc, name, path, this)
    for req in reqs:
        entry = _upsert(array, req)
        if not args.raw and not entry.specifier and not entry.url and canonical_name(entry.name) not in local_names:
            bound.append(entry)
    names = ", ".join(str(r) for r in reqs)
    # The sync installs what was added to: its extra or group besides the default selection (as uv)
    selection = argparse.Namespace(offline=args.offline, extra=[target.name] if target.kind == "optional" else [],
                                   group=[target.name] if target.kind == "group" else [])
    return _apply(ctx, args, project, doc, ws, f"added {names} to {target.key}", selection,
                  lambda lock: _add_bounds(array, bound, lock))


def _remove(ctx: Any, args: argparse.Namespace, ws: tuple[Path, str] | None) -> int:
    project, doc = _load(ctx)
    target = _Target.from_args(args)
    _refuse_dynamic(project, target)
    array = target.array(doc, create=False)
    if array is not None:
        _check_array(array, project.pyproject, target)
    for given in args.packages:
        if not _NAME.match(given):
            raise UsageError(f"{given!r} is not a package name",
                             hint="give the name only (`pypm remove requests`), without a version or extras")
        found = [i for i, item in enumerate(array or ()) if isinstance(item, str) and _entry_name(item) == canonical_name(given)]
        if not found:
            raise ProjectError(f"{given} is not in {target.key} of {project.pyproject}",
                               hint=_where_else(doc, given, target))
        for i in reversed(found):
            del array[i]
        _drop_source(doc, given)  # (as uv: a source no requirement names any more goes too)
    return _apply(ctx, args, project, doc, ws, f"removed {', '.join(args.packages)} from {target.key}",
                  argparse.Namespace(offline=args.offline), None)


# --------------------------------------------------------------------------- editing

def _load(ctx: Any) -> tuple[Project, Any]:
    """The project (validated as every command validates it) and its pyproject.toml as a document."""
    import tomlkit

    from .project import find_project_root, load_project

    project = load_project(find_project_root(ctx.directory))
    # Bytes decoded, not read_text: universal newlines would turn a CRLF file into an LF one
    doc = tomlkit.parse(project.pyproject.read_bytes().decode("utf-8"))  # tomllib has just read it
    if "project" not in doc:
        raise ProjectError(f"{project.pyproject} has no [project] table",
                           hint="add one with a name (PEP 621), or create the file with `pypm init`")
    return project, doc


def _refuse_dynamic(project: Project, target: _Target) -> None:
    field = {"dependencies": "dependencies", "optional": "optional-dependencies"}.get(target.kind)
    if field and field in project.dynamic:
        raise ProjectError(f"{project.pyproject}: `project.{field}` is listed in `project.dynamic`: the build "
                           "backend computes it, so pypm cannot edit it",
                           hint=f"edit where the backend reads it from, or remove {field!r} from `project.dynamic`")


def _check_array(array: Any, path: Path, target: _Target) -> None:
    import tomlkit.items

    if not isinstance(array, tomlkit.items.Array):
        raise ProjectError(f"{path}: `{target.key}` must be an array", hint="fix it by hand, then run the command again")


_LOCAL_HINT = ("pypm locks releases from an index, a find-links location, a local path or (a project's "
               "dependencies) the https:// URL of a wheel or sdist, not VCS checkouts: put the wheel or sdist in a "
               "directory named by [tool.pypm] find-links (or --find-links), and add it by name")


def parse_requirement(text: str, what: str = "", *, local_urls: bool = False, remote_urls: bool = False) -> Requirement:
    """`text` as a Requirement, or a UsageError naming it (`what`: the flag it came with). A direct
    URL (`NAME @ URL`) that cannot be locked is refused here, with the way that works: the lock
    would fail only after the edit, to be rolled back.
    `remote_urls`: the http(s) URL of a wheel or sdist (pypm.pathdeps.remote_archive) and a git
    URL (pypm.gitsource) are taken, checked. `local_urls`: those, and a `file:` URL (a project's
    path dependency, pypm.pathdeps: relative to the project, so not for `pypm x` or scripts)."""
    from packaging.requirements import InvalidRequirement, Requirement

    said = f"{what} {text!r}" if what else repr(text)
    try:
        req = Requirement(text)
    except InvalidRequirement as e:
        hint = "a PEP 508 requirement: NAME, NAME>=1.2, NAME[extra], with a marker after ;"
        if "/" in text or text.endswith(ARCHIVES):
            hint = _LOCAL_HINT
        raise UsageError(f"{said} is not a valid requirement: {e}", hint=hint) from None
    if not req.url:
        return req
    if (local_urls or remote_urls) and req.url.startswith((*REMOTE, "git+")):
        from packaging.utils import canonicalize_name

        from .errors import ProjectError

        origin = f"{what or 'pypm add'} {req.name}"
        try:
            if req.url.startswith("git+"):  # a git dependency
                from .gitsource import parse_requirement_url

                parse_requirement_url(req.url, origin)
            else:  # a remote wheel or sdist
                from .pathdeps import remote_archive

                remote_archive(str(canonicalize_name(req.name)), req.url, origin)
        except ProjectError as e:  # a bad command line (exit 2), not a bad project
            raise UsageError(e.message, hint=e.hint) from None
        return req
    if not (local_urls and req.url.startswith("file:")):
        raise UsageError(f"{said} is a direct URL, which pypm cannot lock yet", hint=_LOCAL_HINT)
    return req


# pip's options that change what or how it installs, not which requirements: said and skipped
# (pypm takes its sources from [tool.pypm] and its hashes from the lock).
_REQ_FILE_OPTIONS = ("-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--trusted-host",
                     "--pre", "--prefer-binary", "--only-binary", "--no-binary", "--no-index", "--use-feature")


def read_requirements_file(ctx: Any, path: Path, seen: tuple[Path, ...] = ()) -> tuple[list[str], list[str]]:
    """(requirements, `-e` paths) of a pip requirements file, in order: comments, blank lines and
    `--hash` options dropped, `\\` continuations joined, `-r FILE` followed (relative to the
    file). pip's source options (`--index-url`, `--find-links` ...) are skipped with a warning
    naming the line: pypm reads them from [tool.pypm]. A constraints file (`-c`) and anything
    else pip does not take is an error naming the file and the line."""
    import os
    import shlex

    def beside(target: str) -> str:
        """A path the file names, relative to the file, as one relative to the working directory
        (absolute stays absolute): [tool.pypm.sources] then writes it relative to the project."""
        target = os.path.expanduser(target)
        if os.path.isabs(target):
            return target
        rel = os.path.relpath(os.path.join(path.parent, target), ctx.directory)
        return rel if "/" in rel else f"./{rel}"

    where = path.resolve()
    if where in seen:
        raise UsageError(f"{path}: it includes itself (-r)", hint="remove the cycle of -r lines")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read the requirements file {path}: {getattr(e, 'strerror', None) or e}",
                         hint="give the path of a pip requirements file") from None
    reqs: list[str] = []
    editables: list[str] = []
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw if raw.lstrip().startswith("#") else raw.split(" #", 1)[0]
        if line.lstrip().startswith("#"):
            line = ""
        if not pending:
            start = n
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append((start, (pending + line).strip()))
        pending = ""
    if pending.strip():
        logical.append((start, pending.strip()))
    for n, line in logical:
        if not line:
            continue
        at = f"{path}:{n}"
        if line.startswith("-"):
            try:
                words = shlex.split(line)
            except ValueError as e:
                raise UsageError(f"{at}: {e}: {line}") from None
            flag, _, value = words[0].partition("=")
            rest = [value] if value else words[1:]
            if flag in ("-r", "--requirement") and rest:
                sub, edits = read_requirements_file(ctx, Path(ctx.directory, beside(rest[0])), (*seen, where))
                reqs += sub
                editables += edits
            elif flag in ("-e", "--editable") and rest:
                target = os.path.expanduser(rest[0])
                if "://" in target or target.startswith("git+"):
                    raise UsageError(f"{at}: `-e {rest[0]}`: pypm installs only a local directory editable",
                                     hint="clone it and give the directory, or drop -e to add it built")
                editables.append(beside(target))
            elif flag in _REQ_FILE_OPTIONS:
                ctx.info(f"warning: {at}: `{line}` is not applied: pypm takes its index and find-links from "
                         "[tool.pypm] (index-url, extra-index-url, find-links) and uses wheels and sdists as they lock")
            else:
                raise UsageError(f"{at}: `{line}` is not something `pypm add -r` takes",
                                 hint="requirements, -r FILE and -e DIR lines are added; a constraints file (-c) "
                                      "is not a list of requirements")
            continue
        # `NAME==1.0 --hash=sha256:...`: the lock keeps the hashes, not pyproject.toml
        words = line.split()
        kept = [w for w in words if not w.startswith("--hash")]
        if any(w.startswith("-") for w in kept):
            raise UsageError(f"{at}: `{line}`: only --hash options may follow a requirement here")
        req = " ".join(kept)
        if looks_local(req):  # `./lib` or `lib.whl`: relative to the requirements file, as pip reads it
            req = beside(req)
        reqs.append(req)
    return reqs, editables


def looks_local(text: str) -> bool:
    """Whether a requirement given on the command line is a path (`../lib`, `./dist/x.whl`, `~/src/x`)."""
    return "@" not in text and "://" not in text and ("/" in text or text.startswith((".", "~"))
                                                      or text.endswith(ARCHIVES))


def named_url(text: str, what: str) -> str:
    """`text`, or for a bare URL, as uv takes one, `NAME @ URL`: a wheel's or sdist's
    (`https://host/tool-1.0-py3-none-any.whl`) named by its file name, a git repository's
    (`git+https://host/tool.git@v1`) by the [project] name of the commit's pyproject.toml (fetched
    into the cache, where its lock finds it). A bare URL that names neither is a UsageError saying
    to name it."""
    if text.startswith("git+") and " " not in text:
        return f"{_git_project_name(text, what)} @ {text}"
    if not text.startswith(REMOTE) or " " in text:
        return text
    from urllib.parse import unquote, urlsplit

    from .simpleapi import parse_filename

    parsed = parse_filename(unquote(urlsplit(text).path.rpartition("/")[2]))
    if parsed is None:
        raise UsageError(f"{what or 'the requirement'} {text}: a URL needs a name (`NAME @ URL`) unless it names "
                         "a wheel or an sdist", hint=f"e.g. 'pkg @ {text}'")
    return f"{parsed[1]} @ {text}"


def _git_project_name(url: str, what: str) -> str:
    from .config import cache_dir
    from .errors import ProjectError
    from .gitsource import checkout, parse_requirement_url, resolve

    said = f"{what or 'the requirement'} {url}"
    try:
        ref = parse_requirement_url(url, said)
        commit = resolve(ref, cache_dir(), offline=False, what=said)
        tree = checkout(ref, commit, cache_dir(), offline=False, what=said)
    except ProjectError as e:  # a bad command line (exit 2), not a bad project
        raise UsageError(e.message, hint=e.hint) from None
    name = _project_name(tree)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(f"{said}: commit {commit[:12]} has no pyproject.toml with a valid [project] name to take "
                         "the package's name from", hint=f"name it: 'NAME @ {url}'")
    return name


def _project_name(directory: Path) -> object:
    """`project.name` of the directory's pyproject.toml as written (not checked), or None."""
    import tomllib

    try:
        return tomllib.loads((directory / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError):
        return None


def _local_target(text: str, project: Project, cwd: Path) -> tuple[str, str]:
    """(name, path as [tool.pypm.sources] writes it) of the directory or file `text` names (`pypm
    add ../lib`): relative to the project when given relative, absolute when given absolute."""
    import os

    name, where = local_source(text, cwd)
    path = str(where) if os.path.isabs(os.path.expanduser(text)) else Path(os.path.relpath(where, project.root)).as_posix()
    return name, path


def local_source(text: str, cwd: Path) -> tuple[str, Path]:
    """(name, absolute path) of the project directory, wheel or sdist that `text` names, relative
    to `cwd`: the name from its pyproject.toml's [project] table or the file's name. A UsageError
    naming it when it is none of those."""
    import os

    given = os.path.expanduser(text)
    where = Path(os.path.normpath(os.path.join(cwd, given)))
    if where.is_dir():
        name = _project_name(where)
        if name is None:
            raise UsageError(f"{text}: {where} holds no pyproject.toml with a [project] name",
                             hint="pypm takes a path dependency's metadata from its [project] table")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise UsageError(f"{where / 'pyproject.toml'}: `project.name` is {name!r}, not a valid name", hint=_NAME_HINT)
    elif where.is_file() and where.name.endswith(ARCHIVES):
        from .simpleapi import parse_filename

        parsed = parse_filename(where.name)
        if parsed is None:
            raise UsageError(f"{text}: {where.name} is not a valid wheel or sdist name")
        name = parsed[1]
    else:
        raise UsageError(f"{text}: {where} is not a project directory, a wheel or an sdist",
                         hint="give the path of a directory with a pyproject.toml, or of a .whl/.tar.gz file; "
                              f"a package from an index is added by name. {_LOCAL_HINT}")
    return name, where


def _set_source(doc: Any, name: str, path: str, editable: bool) -> None:
    """`[tool.pypm.sources] NAME = { path = "...", editable = true }`, tables made when missing."""
    import tomlkit

    node = doc
    for key in ("tool", "pypm", "sources"):
        if key not in node:
            node[key] = tomlkit.table(is_super_table=key != "sources")
        node = node[key]
    # Parsed from text: an inline table built item by item is written `{path = ...}`, where
    # people (and uv) write `{ path = ... }`.
    text = f"x = {{ path = {tomlkit.string(path).as_string()}{', editable = true' if editable else ''} }}\n"
    node[name] = tomlkit.parse(text)["x"]


def _drop_source(doc: Any, name: str) -> bool:
    """Remove NAME's `[tool.pypm.sources]` entry when no requirement array names it any more."""
    sources = doc.get("tool", {}).get("pypm", {}).get("sources")
    if not sources:
        return False
    keys = [k for k in sources if canonical_name(k) == canonical_name(name)]
    if not keys:
        return False
    arrays = [doc.get("project", {}).get("dependencies") or [],
              *(doc.get("project", {}).get("optional-dependencies") or {}).values(),
              *(doc.get("dependency-groups") or {}).values()]
    if any(isinstance(item, str) and _entry_name(item) == canonical_name(name) for a in arrays for item in a):
        return False
    for k in keys:
        del sources[k]
    if not sources:  # an empty [tool.pypm.sources] says nothing: it goes too
        import tomlkit.items

        parent = doc["tool"]["pypm"]
        del parent["sources"]
        # with the blank line tomlkit put before its header when `add` made it
        # (tomlkit leaves a Null where the table was)
        body = parent.value.body
        items = [i for i, (_, v) in enumerate(body) if not isinstance(v, tomlkit.items.Null)]
        if items and body[items[-1]][0] is None and isinstance(body[items[-1]][1], tomlkit.items.Whitespace) \
                and body[items[-1]][1].as_string() == "\n":
            del body[items[-1]]
    return True


def _entry_name(item: str) -> str | None:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", item)
    return canonical_name(m.group(1)) if m else None


def _entries(array: Any) -> Iterator[tuple[int, Requirement]]:
    from packaging.requirements import InvalidRequirement, Requirement

    for i, item in enumerate(array):
        if isinstance(item, str):  # not an {include-group = ...} table
            try:
                yield i, Requirement(str(item))
            except InvalidRequirement:  # load_project has validated them all; kept for safety
                continue


def _upsert(array: Any, req: Requirement) -> Requirement:
    """Put `req` into `array` (see the module's docstring); returns the entry as written."""
    same = next(((i, old) for i, old in _entries(array)
                 if canonical_name(old.name) == canonical_name(req.name) and str(old.marker or "") == str(req.marker or "")), None)
    if same is not None:
        i, old = same
        if not req.specifier and not req.url:
            req.specifier = old.specifier
            req.url = old.url
        req.extras = set(old.extras) | set(req.extras)
        if str(req) != str(old):  # the same requirement stays as it was written
            array[i] = _text(req)
        return req
    names = [_entry_name(str(item)) or "" for item in array if isinstance(item, str)]
    grows_past_one = len(array) == 1
    if names and len(names) == len(array) and names == sorted(names):
        at = next((k for k, n in enumerate(names) if n > canonical_name(req.name)), len(names))
        array.insert(at, _text(req))
    else:
        array.append(_text(req))
    if grows_past_one or len(array) == 1:
        _layout(array)
    return req


def _text(req: Requirement) -> str:
    """`req` as an entry: packaging's spelling, with a marker's quotes single (as uv writes them),
    so that TOML needs no escapes: `"tomli>=2; python_version < '3.11'"`."""
    text = str(req)
    return text.replace('"', "'") if "'" not in text else text


def _layout(array: Any) -> None:
    """One entry per line for an array that has just grown past one entry (`["a"]` + b), as uv
    writes them. Any other keeps the layout it was written in: several entries on one line stay
    on one line, an array over several lines keeps its lines (and its comments)."""
    if len(array) > 1 and "\n" not in array.as_string():
        array.multiline(True)


def _add_bounds(array: Any, entries: list[Requirement], lock: Any) -> bool:
    """Give each of `entries` a lower bound at the version `lock` picked; whether any changed."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    changed = False
    for req in entries:
        versions = []
        for p in lock.packages:
            if canonical_name(p.name) == canonical_name(req.name):
                try:
                    versions.append(Version(p.version))
                except InvalidVersion:
                    continue
        if not versions:  # e.g. only locked for other environments' markers... nothing to pin to
            continue
        low = min(versions)  # forks may lock several; the lowest holds for all of them
        for i, old in _entries(array):
            if canonical_name(old.name) == canonical_name(req.name) and str(old.marker or "") == str(req.marker or "") \
                    and not old.specifier and not old.url:
                old.specifier = SpecifierSet(f">={low.public}")
                array[i] = _text(old)
                changed = True
    return changed


def _where_else(doc: Any, name: str, target: _Target) -> str:
    """A hint naming the arrays that do hold `name`, with the flag that selects each."""
    places = []
    project = doc.get("project", {})
    candidates = [("dependencies", "", project.get("dependencies"))]
    candidates += [("optional", k, v) for k, v in (project.get("optional-dependencies") or {}).items()]
    candidates += [("group", k, v) for k, v in (doc.get("dependency-groups") or {}).items()]
    for kind, key, array in candidates:
        t = _Target(kind, key)
        if t == target or not isinstance(array, list):
            continue
        if any(isinstance(item, str) and _entry_name(item) == canonical_name(name) for item in array):
            flag = {"dependencies": "(no flag)", "optional": f"--optional {key}",
                    "group": "--dev" if canonical_name(key) == "dev" else f"--group {key}"}[kind]
            places.append(f"{t.key} ({flag})")
    if places:
        return f"it is in {', '.join(places)}"
    return "check the name; `pypm remove` takes the name as written in pyproject.toml"


# --------------------------------------------------------------------------- lock, sync, roll back

def _apply(ctx: Any, args: argparse.Namespace, project: Project, doc: Any, ws: tuple[Path, str] | None, what: str,
           selection: argparse.Namespace, then: Any) -> int:
    """Write the edited `doc`, lock and sync `selection` (sync's flags); on any failure (or Ctrl-C)
    put pyproject.toml and pypm.lock back as they were. `then(lock)`, once the lock exists: a
    second edit (the bounds; the lock's record of the project's version); true when it changed
    the document, which is then written and locked again."""
    import tomlkit

    from .editjournal import Journal
    from .lockfile import LOCK_NAME, read, write_atomic
    from .project import load_project

    pyproject = project.pyproject
    # In a workspace member (`ws`), its own pyproject.toml is edited, and the workspace is locked
    # and synced (the member selected, as `pypm sync` there would).
    lock_dir = ws[0] if ws is not None else project.root
    lock_path = lock_dir / LOCK_NAME
    if ws is not None:
        selection = argparse.Namespace(**vars(selection), package=[ws[1]])

    def locked_project() -> Project:  # what is locked and synced, as the files now say
        return load_project(lock_dir) if ws is not None else project
    before = pyproject.read_bytes()
    try:
        lock_before: bytes | None = lock_path.read_bytes()
    except FileNotFoundError:
        lock_before = None
    except OSError as e:
        raise ProjectError(f"cannot read {lock_path}: {e.strerror or e}") from None
    text = tomlkit.dumps(doc)
    changed = text.encode("utf-8") != before
    wrote: dict[Path, bytes] = {}  # what this command last wrote to each file
    done = False
    # What a `kill -9` would leave: rolled back by the next command (pypm.editjournal)
    command = getattr(args, "command", None) or "add"
    journal = Journal(lock_dir, command, what, {pyproject: before, lock_path: lock_before})
    try:
        if changed:
            journal.ours(pyproject, text.encode("utf-8"))
            write_atomic(pyproject, text)
            wrote[pyproject] = text.encode("utf-8")
            project = load_project(project.root)  # what was written is what every later command reads
        if not args.frozen:
            _lock(ctx, locked_project(), args)
            wrote[lock_path] = lock_path.read_bytes()
            journal.ours(lock_path, wrote[lock_path])
            if then is not None and then(read(lock_path)):
                text = tomlkit.dumps(doc)
                journal.ours(pyproject, text.encode("utf-8"))
                write_atomic(pyproject, text)
                wrote[pyproject] = text.encode("utf-8")
                project = load_project(project.root)
                # The same pins (the lock's own are preferred), for the new content hash: said once
                _lock(_Quiet(ctx), locked_project(), args)
            wrote[lock_path] = lock_path.read_bytes()  # (`then` may have rewritten it)
            journal.ours(lock_path, wrote[lock_path])
            if not args.no_sync:
                from .sync import SyncOptions, keeping_held, sync_project

                synced = locked_project()  # (with the selection .venv was synced for: sync.keeping_held)
                # (as uv: add and version leave other installers' packages, remove is exact)
                sync_project(ctx, synced, keeping_held(synced, SyncOptions.from_args(selection),
                                                       foreign=command != "remove"))
        done = True
    finally:
        if not done and wrote:  # (the bounds may write pyproject.toml where the first edit did not)
            _restore(ctx, {pyproject: before, lock_path: lock_before}, wrote)
        journal.close()  # finished, or put back here: nothing for the next command to roll back
    ctx.info(f"{what} in {pyproject}" if pyproject in wrote else f"{pyproject.name} already says so: unchanged")
    return ExitCode.OK


class _Quiet:
    """`ctx` without its informational messages."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def info(self, msg: str) -> None:
        pass


def _lock(ctx: Any, project: Project, args: argparse.Namespace) -> None:
    from .locking import LockOptions, lock_project

    # --sign: the new lock signed (a project with [tool.pypm] trusted-keys syncs only a signed one)
    lock_project(ctx, project, LockOptions(offline=bool(args.offline), sign=getattr(args, "sign", None)))


def _restore(ctx: Any, before: dict[Path, bytes | None], wrote: dict[Path, bytes]) -> None:
    """Put back each file this command wrote (`before`: its bytes before, None where it did not
    exist); called while an error (or Ctrl-C) is on its way to the user. A file that no longer
    holds what this command wrote was changed meanwhile (an editor, another pypm): left as it is."""
    from .lockfile import write_atomic

    names = " and ".join(p.name for p in before)
    left = False
    for path, ours in wrote.items():
        old = before[path]
        try:
            if path.read_bytes() != ours:
                ctx.info(f"warning: {path} changed while this command ran: left as it is, not put back")
                left = True
            elif old is None:
                path.unlink()
            else:
                write_atomic(path, old.decode("utf-8"))
        except (OSError, ProjectError) as e:  # the error on its way out matters more; say what is left
            ctx.info(f"warning: could not put {path} back as it was: {e}")
            left = True
    if not left:
        ctx.info(f"{names} are as they were before the command")


# --------------------------------------------------------------------------- pypm version

_BUMPS = ("major", "minor", "patch", "stable", "alpha", "beta", "rc", "post", "dev")
_PRE = {"alpha": "a", "beta": "b", "rc": "rc"}


def bump_version(current: str, bumps: list[str]) -> str:
    """`current` moved by each of `bumps` in turn, as `uv version --bump` moves it (pure):
    major/minor/patch raise that part and drop what follows; stable drops pre-, post- and dev-
    release parts; alpha/beta/rc start or raise a pre-release (of the next release only after a
    major/minor/patch bump: 1.2.3 --bump beta alone would go down); post and dev likewise.
    Raises ValueError with the reason when the result would not be higher than `current`."""
    from packaging.version import InvalidVersion, Version

    try:
        v = Version(current)
    except InvalidVersion:
        raise ValueError(f"the current version {current!r} is not a valid version (PEP 440)") from None
    release = list(v.release) + [0] * max(0, 3 - len(v.release))
    pre: tuple[str, int] | None = v.pre
    post, dev = v.post, v.dev
    for b in bumps:
        if b in ("major", "minor", "patch"):
            i = ("major", "minor", "patch").index(b)
            if not (pre or dev) or any(release[i + 1:]):  # a pre-release of X.0.0, --bump major: X.0.0
                release[i] += 1
                release[i + 1:] = [0] * len(release[i + 1:])
            pre = post = dev = None
        elif b == "stable":
            pre = post = dev = None
        elif b in _PRE:
            kind = _PRE[b]
            if pre is not None and pre[0] == kind:
                pre = (kind, pre[1] + 1)
            else:
                pre = (kind, 1)
            post = dev = None
        elif b == "post":
            post = 1 if post is None else post + 1
            dev = None
        elif b == "dev":
            dev = 1 if dev is None else dev + 1
        else:  # argparse's choices keep this out
            raise ValueError(f"unknown bump {b!r}")
    text = ".".join(str(x) for x in release)
    if v.epoch:
        text = f"{v.epoch}!{text}"
    if pre is not None:
        text += f"{pre[0]}{pre[1]}"
    if post is not None:
        text += f".post{post}"
    if dev is not None:
        text += f".dev{dev}"
    if Version(text) <= v:
        hint = ""
        if pre is not None and not v.is_prerelease:
            hint = f" (a pre-release of {'.'.join(map(str, release))}; add --bump patch, minor or major for the next one)"
        raise ValueError(f"{current} -> {text} would not be higher{hint}")
    return text


def version_command(ctx: Any, args: argparse.Namespace) -> int:
    """`pypm version [VALUE] [--bump PART]... [--short] [--dry-run]`."""
    if args.value is not None and args.bump:
        raise UsageError("give a version or --bump, not both")
    if args.value is None and not args.bump:  # show it: no lock, no write
        from .project import find_project_root, load_project

        project = load_project(find_project_root(ctx.directory))
        if project.version is None:
            raise ProjectError(f"{project.pyproject}: `project.version` is dynamic (the build backend computes it)",
                               hint="the backend's own configuration holds it")
        print(project.version if args.short else f"{project.name} {project.version}")
        return ExitCode.OK
    with _project_locked(ctx) as ws:
        return _set_version(ctx, args, ws)


def _set_version(ctx: Any, args: argparse.Namespace, ws: tuple[Path, str] | None) -> int:
    from packaging.version import InvalidVersion, Version

    project, doc = _load(ctx)
    if project.version is None:
        raise ProjectError(f"{project.pyproject}: `project.version` is listed in `project.dynamic`: the build backend "
                           "computes it, so pypm cannot set it",
                           hint="set it where the backend reads it from")
    old = project.version
    if args.value is not None:
        try:
            new = str(Version(args.value))  # in PEP 440's normal form: 1.0-RC1 -> 1.0rc1
        except InvalidVersion:
            raise UsageError(f"{args.value!r} is not a valid version (PEP 440)", hint="e.g. 1.2.3, 2.0.0rc1") from None
    else:
        try:
            new = bump_version(old, args.bump)
        except ValueError as e:
            raise UsageError(f"--bump {' --bump '.join(args.bump)}: {e}") from None
    if args.dry_run:
        print(f"{project.name} {old} => {new}")
        return ExitCode.OK
    doc["project"]["version"] = new
    # (The lock's record of the version follows in `pypm lock`, signed again with --sign.)
    rc = _apply(ctx, args, project, doc, ws, f"version {old} => {new}", argparse.Namespace(offline=args.offline),
                None)
    print(new if args.short else f"{project.name} {old} => {new}")
    return rc


# --------------------------------------------------------------------------- --script: PEP 723 blocks

def _edit_script(ctx: Any, args: argparse.Namespace, *, add: bool) -> int:
    """`pypm add/remove --script FILE ...`: the `dependencies` of the script's `# /// script` block
    (made, at the top after a shebang or coding line, when it has none), edited like a
    pyproject.toml array; bounds from a lock of the script's environment (pypm.script), which is
    not synced: `pypm run FILE` syncs it. The file is written atomically, keeping its mode."""
    import tomlkit

    from .lockfile import write_atomic
    from .script import block_toml, parse_metadata, script_blocks, script_metadata

    flags = [f for attr, f in (("dev", "--dev"), ("group", "--group"), ("optional", "--optional"),
                               ("no_sync", "--no-sync"), ("sign", "--sign")) if getattr(args, attr, None)]
    if flags:
        raise UsageError(f"{', '.join(flags)}: not with --script (a script has one array, `dependencies`)")
    path = Path(ctx.directory, args.script)
    if not path.is_file():
        raise UsageError(f"--script {args.script}: no such file ({path})", hint="name an existing .py file")
    script_metadata(path)  # the block as it is must be valid (errors name the key)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ProjectError(f"cannot read {path}: {e}") from None
    match = next(iter(script_blocks(text)), None)
    if match is None:
        import sys

        body = f'requires-python = ">={sys.version_info[0]}.{sys.version_info[1]}"\ndependencies = []\n'
    else:
        body = block_toml(match)
    doc = tomlkit.parse(body)
    if "dependencies" not in doc:
        doc["dependencies"] = tomlkit.array()
    array = doc["dependencies"]
    where = f"the `# /// script` block of {path}"
    if add:
        bound = []
        for req_text in args.requirements:
            entry = _upsert(array, parse_requirement(req_text))  # (lays the array out as it grows)
            if not args.raw and not args.frozen and not entry.specifier and not entry.url:
                bound.append(entry)
        if bound:  # the versions a lock of the script's environment picks (nothing is installed)
            _add_bounds(array, bound, _lock_script(ctx, path, parse_metadata(tomlkit.dumps(doc), path), args))
        what = f"added {', '.join(args.requirements)} to {where}"
    else:
        for given in args.packages:
            found = [i for i, item in enumerate(array) if isinstance(item, str) and _entry_name(item) == canonical_name(given)]
            if not found:
                raise ProjectError(f"{given} is not in the dependencies of {where}")
            for i in reversed(found):
                del array[i]
        what = f"removed {', '.join(args.packages)} from {where}"
    block = "# /// script\n" + "".join(f"# {line}" if line.strip() else "#\n"
                                       for line in tomlkit.dumps(doc).splitlines(keepends=True)) + "# ///"
    if match is not None:
        new = text[:match.start()] + block + text[match.end():]
    else:  # at the top, after a shebang and a coding line (which must stay first)
        lines = text.splitlines(keepends=True)
        keep = 0
        while keep < len(lines) and keep < 2 and (lines[keep].startswith("#!") and keep == 0
                                                   or re.match(r"^[ \t\f]*#.*?coding[:=]", lines[keep])):
            keep += 1
        new = "".join(lines[:keep]) + block + "\n" + ("\n" if lines[keep:] else "") + "".join(lines[keep:])
    parse_metadata(block_toml(script_blocks(new)[0]), path)  # what is written reads back, valid
    if new != text:
        write_atomic(path, new)
    ctx.info(what if new != text else f"{path.name} already says so: unchanged")
    return ExitCode.OK


def _lock_script(ctx: Any, path: Path, meta: dict[str, Any], args: argparse.Namespace) -> Any:
    """A lock of the script's environment for `meta` (pypm.script's, not synced)."""
    from .locking import LockOptions, lock_project
    from .lockfile import LOCK_NAME, read
    from .project import load_project
    from .script import environment_args
    from .toolrun import tool_dir

    env_args = environment_args(meta, path.resolve().parent, args)
    # Keyed as pypm.script.run_script keys it (the requirements as written). The bound then changes
    # the block, so the first `pypm run` locks an environment of its own (from the warm cache)
    root = tool_dir([d.strip() for d in meta.get("dependencies", [])], env_args,
                    meta.get("requires-python"), kind="script")
    lock_project(_Quiet(ctx), load_project(root), LockOptions(offline=bool(args.offline)))
    return read(root / LOCK_NAME)
