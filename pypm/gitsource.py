"""Git dependencies: `lib @ git+https://host/lib.git@v1.0#subdirectory=py` and
`[tool.pypm.sources] lib = { git = "https://host/lib.git", tag = "v1.0" }`.

A git dependency is a path dependency whose directory is a checkout of one commit: the lock pins
the commit (`source = { git = "https://host/lib.git?tag=v1.0#<40 hex>" }`), its metadata is read
from the checkout's `[project]` table (pypm.pathdeps' rule: what it leaves dynamic is asked of the
build backend, in the sandbox, and kept under the commit), and sync builds it in the sandbox. A commit is content-addressed, so the wheel built
from it is cached under it.

What runs here is git itself, outside the sandbox, and only `init`, `fetch`, `rev-parse`,
`describe`, `show`, `config --blob`, `ls-tree` and `archive` (a tar of the commit's tree,
unpacked by tarfile's "data" filter): no checkout, so no hook, filter or attribute of the
repository runs. Only the https, http, ssh and file transports are allowed (no `ext::`), prompts
are off (no stdin in CI: a repository that needs credentials fails with git's own message rather
than waiting).

Submodules are part of the tree, as `pip` and `uv` check them out (`git submodule update --init
--recursive`): each gitlink of the commit's tree with an entry in its `.gitmodules` gets the tree
of the commit the gitlink pins, fetched from that entry's URL (a relative URL is taken from the
repository's own, as git does; the same transports only) into a repository of its own in the
cache, at most _SUBMODULE_DEPTH levels down. The superproject's commit pins every submodule's, so
the lock's commit still names the whole tree. A submodule path that leaves the tree or goes
through a symlink is refused.

The cache: `git/db/<sha256 of the URL>` (a bare repository, fetched into) and
`git/trees/<commit>` (the tree with its submodules, made in a temporary directory and renamed
into place, so an interrupted checkout is never seen half-made; `git/checkouts/`, from before
submodules, is not read). Both under one lock file per repository.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from .errors import IndexError_, ProjectError

__all__ = ["TREE_FORMAT", "GitRef", "from_source", "from_spec", "parse_requirement_url", "parse_lock_source", "resolve",
           "checkout", "private_copy"]

_SCHEMES = ("https", "http", "ssh", "file")
_SUBMODULE_DEPTH = 8  # submodules of submodules... (a cycle of repositories stops here)
# What a commit's tree holds, in the keys of what is made from it (the wheel built from it, the
# metadata its backend reported): "2", submodules included. A tree made before them ("1", empty
# gitlinks) may have built a wheel without its submodules' files, which must not be reused.
TREE_FORMAT = "2"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_KINDS = ("rev", "tag", "branch")


@dataclass(frozen=True)
class GitRef:
    """A repository and what of it is wanted, as declared (not yet a commit)."""

    url: str  # the repository: https://host/lib.git (no `git+`, no revision, no fragment)
    kind: str | None = None  # "rev", "tag" or "branch"; None: the default branch
    rev: str | None = None
    subdirectory: str | None = None

    def spec(self) -> str:
        """The lock's form without the commit: `URL?tag=v1&subdirectory=py` (keys in this order)."""
        q = [(k, v) for k, v in ((self.kind or "", self.rev), ("subdirectory", self.subdirectory)) if k and v]
        return self.url + ("?" + urlencode(q, quote_via=quote, safe="/") if q else "")

    def pep508(self, commit: str) -> str:
        """The PEP 508 direct reference to `commit`: `git+URL@COMMIT#subdirectory=...`."""
        return f"git+{self.url}@{commit}" + (f"#subdirectory={self.subdirectory}" if self.subdirectory else "")


def _check_url(url: str, origin: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise ProjectError(f"{origin}: {url!r} is not a valid URL ({e})", hint="fix the URL") from None
    if parts.scheme not in _SCHEMES or (parts.scheme != "file" and not parts.netloc):
        raise ProjectError(f"{origin}: {url!r}: pypm fetches git repositories over https, http, ssh or file URLs",
                           hint="write it as git+https://host/repo.git (in a requirement) or "
                                '{ git = "https://host/repo.git" } (in [tool.pypm.sources])')
    if (parts.hostname or "").startswith("-") or (parts.username or "").startswith("-"):
        # ssh would take `-oProxyCommand=...` as an option (git refuses it too: twice is cheap)
        raise ProjectError(f"{origin}: {url!r}: a host or user name cannot start with '-'", hint="fix the URL")
    if parts.password is not None:
        raise ProjectError(f"{origin}: {parts.scheme}://{parts.hostname}/...: the URL carries a password, "
                           "which would be written into pypm.lock",
                           hint="let git find it (a credential helper, ~/.netrc or an ssh key) instead")
    if parts.query or parts.fragment:
        raise ProjectError(f"{origin}: {url!r}: a repository URL takes no query or fragment here",
                           hint="give the revision and the subdirectory as their own keys")
    return url


def _check_subdirectory(sub: str | None, origin: str) -> str | None:
    if sub is None:
        return None
    norm = os.path.normpath(sub)
    if not sub or os.path.isabs(sub) or norm.startswith("..") or norm == ".":
        raise ProjectError(f"{origin}: subdirectory {sub!r} must be a relative path inside the repository",
                           hint='e.g. subdirectory = "python"')
    return Path(norm).as_posix()


def from_source(url: str, table: dict[str, str], origin: str) -> GitRef:
    """`{ git = URL, tag|branch|rev = ..., subdirectory = ... }` (shape checked by pypm.project)."""
    kinds = [k for k in _KINDS if k in table]
    if len(kinds) > 1:
        raise ProjectError(f"{origin} gives {' and '.join(f'`{k}`' for k in kinds)}; give at most one",
                           hint="`tag`, `branch` or `rev` (a commit, or any revision git understands)")
    kind = kinds[0] if kinds else None
    return GitRef(_check_url(url, origin), kind, table[kind] if kind else None,
                  _check_subdirectory(table.get("subdirectory"), origin))


def parse_requirement_url(url: str, origin: str) -> GitRef:
    """PEP 508's `git+URL[@REV][#subdirectory=SUB]` (pip's form; `#egg=` is tolerated)."""
    if not url.startswith("git+"):
        raise ProjectError(f"{origin}: {url!r} is not a git URL", hint="write git+https://host/repo.git@REV")
    parts = urlsplit(url[4:])
    sub = None
    for k, v in parse_qsl(parts.fragment, keep_blank_values=True):
        if k == "subdirectory":
            sub = v
        elif k != "egg":
            raise ProjectError(f"{origin}: {url!r}: the fragment #{parts.fragment} is not #subdirectory=...",
                               hint="git+https://host/repo.git@REV#subdirectory=python")
    path, rev = parts.path, None
    if "@" in path:  # the revision follows the last @ of the path (git+ssh://git@host/x.git@v1: the user is in netloc)
        path, rev = path.rsplit("@", 1)
        if not rev:
            raise ProjectError(f"{origin}: {url!r} ends its path with an empty revision", hint="drop the @, or name one")
    repo = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    return GitRef(_check_url(repo, origin), "rev" if rev else None, rev, _check_subdirectory(sub, origin))


def from_spec(spec: str) -> GitRef:
    """GitRef.spec()'s text back (how pypm.project hands a `{ git = ... }` source on)."""
    parts = urlsplit(spec)
    query = dict(parse_qsl(parts.query))
    kind = next((k for k in _KINDS if k in query), None)
    return GitRef(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), kind,
                  query[kind] if kind else None, query.get("subdirectory"))


def parse_lock_source(text: str, where: str) -> tuple[GitRef, str]:
    """The lock's `git = "URL?tag=v1&subdirectory=py#COMMIT"`: (the reference, the commit)."""
    base, _, commit = text.partition("#")
    parts = urlsplit(base)
    query = dict(parse_qsl(parts.query))
    kinds = [k for k in _KINDS if k in query]
    if not _COMMIT.fullmatch(commit) or len(kinds) > 1 or set(query) - {*_KINDS, "subdirectory"}:
        raise ProjectError(f"{where}: git source {text!r} is not URL[?tag=...&subdirectory=...]#<40-hex commit>",
                           hint="re-create the lock with `pypm lock`")
    ref = GitRef(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), kinds[0] if kinds else None,
                 query[kinds[0]] if kinds else None, query.get("subdirectory"))
    # A lock can come from anyone (a pull request): its URL and subdirectory are held to what a
    # pyproject.toml may say, before git sees them (a transport pypm does not allow, say, or
    # `--upload-pack=...`, which git would take as an option and run).
    _check_url(ref.url, where)
    _check_subdirectory(ref.subdirectory, where)
    return ref, commit


# --------------------------------------------------------------------------- running git

def _git(args: list[str], what: str, *, cwd: Path | None = None, stdout: int | None = subprocess.PIPE) -> bytes:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", SSH_ASKPASS="true",
               GCM_INTERACTIVE="never", GIT_SSH_COMMAND=os.environ.get("GIT_SSH_COMMAND", "ssh -oBatchMode=yes"))
    cmd = ["git", "-c", "protocol.allow=never", *(x for s in _SCHEMES for x in ("-c", f"protocol.{s}.allow=always")),
           "-c", "core.hooksPath=/dev/null", "-c", "fetch.recurseSubmodules=false", *args]
    try:
        r = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                           stderr=subprocess.PIPE, check=False)
    except FileNotFoundError:
        raise ProjectError(f"{what}: git is not installed", hint="install git (e.g. apt-get install git)") from None
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace").strip().splitlines()
        raise IndexError_(f"{what}: git {args[0]} failed: {err[-1] if err else f'exit {r.returncode}'}",
                          hint="check the URL, the revision and your access to the repository")
    return r.stdout or b""


def _db(cache: Path, url: str) -> Path:
    return cache / "git" / "db" / hashlib.sha256(url.encode()).hexdigest()[:32]


def _locked(cache: Path, url: str) -> Any:
    from filelock import FileLock

    d = cache / "git" / "locks"
    d.mkdir(parents=True, exist_ok=True)
    return FileLock(str(d / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".lock")))


def _fetch(db: Path, ref: GitRef, what: str) -> None:
    if not (db / "HEAD").is_file():
        db.mkdir(parents=True, exist_ok=True)
        _git(["init", "--quiet", "--bare", str(db)], what)
    _git(["fetch", "--quiet", "--force", "--prune", "--no-tags", ref.url,
          "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*", "+HEAD:refs/remotes/origin/HEAD"],
         what, cwd=db)


def _rev_parse(db: Path, name: str) -> str | None:
    try:
        out = _git(["rev-parse", "--verify", "--quiet", f"{name}^{{commit}}"], "rev-parse", cwd=db).decode().strip()
    except IndexError_:
        return None
    return out if _COMMIT.fullmatch(out) else None


def resolve(ref: GitRef, cache: Path, *, offline: bool, what: str) -> str:
    """The commit `ref` names now (fetching the repository into the cache)."""
    if offline:
        raise IndexError_(f"{what}: resolving {ref.spec()} needs the network", hint="run without --offline")
    db = _db(cache, ref.url)
    with _locked(cache, ref.url):
        _fetch(db, ref, what)
        if ref.rev is None:
            found = _rev_parse(db, "refs/remotes/origin/HEAD")
        elif ref.kind == "tag":
            found = _rev_parse(db, f"refs/tags/{ref.rev}")
        elif ref.kind == "branch":
            found = _rev_parse(db, f"refs/remotes/origin/{ref.rev}")
        else:  # a commit (full or abbreviated), a tag or a branch: as git would take it
            found = (_rev_parse(db, f"refs/tags/{ref.rev}") or _rev_parse(db, f"refs/remotes/origin/{ref.rev}")
                     or (_rev_parse(db, ref.rev) if re.fullmatch(r"[0-9a-fA-F]{4,40}", ref.rev) else None))
            if found is None and _COMMIT.fullmatch(ref.rev.lower()):  # a commit on no branch: ask for it
                _git(["fetch", "--quiet", ref.url, ref.rev.lower()], what, cwd=db)
                found = _rev_parse(db, ref.rev.lower())
    if found is None:
        raise IndexError_(f"{what}: {ref.url} has no {ref.kind or 'default branch'}"
                          + (f" {ref.rev!r}" if ref.rev else ""),
                          hint="check the tag, branch or commit")
    return found


def checkout(ref: GitRef, commit: str, cache: Path, *, offline: bool, what: str) -> Path:
    """The tree of `commit` (its `subdirectory`, when the reference names one), from the cache or
    fetched. The checkout holds no .git directory: the build sees the files only."""
    top = cache / "git" / "trees" / commit
    if not top.is_dir():
        db = _db(cache, ref.url)
        with _locked(cache, ref.url):
            if not top.is_dir():  # (another process may have made it while this one waited)
                _have_commit(db, ref, commit, offline=offline, what=what)
                _export(db, ref, commit, top, what, cache=cache, offline=offline)
    d = top / ref.subdirectory if ref.subdirectory else top
    if not d.is_dir():
        raise ProjectError(f"{what}: commit {commit[:12]} of {ref.url} has no directory {ref.subdirectory!r}",
                           hint="fix `subdirectory`")
    return d


def _have_commit(db: Path, ref: GitRef, commit: str, *, offline: bool, what: str) -> None:
    """`commit` in the repository `db`, fetched when it is not there yet (the repository's lock held)."""
    if (db / "HEAD").is_file() and _rev_parse(db, commit) is not None:
        return
    if offline:
        raise IndexError_(f"{what}: commit {commit} of {ref.url} is not in the cache", hint="run once without --offline")
    _fetch(db, ref, what)
    if _rev_parse(db, commit) is None:  # on no branch or tag: ask for it by name
        _git(["fetch", "--quiet", ref.url, commit], what, cwd=db)
    if _rev_parse(db, commit) is None:
        raise IndexError_(f"{what}: {ref.url} has no commit {commit} any more",
                          hint="the history was rewritten: `pypm lock --upgrade-package` picks what the reference "
                               "names now")


def _export(db: Path, ref: GitRef, commit: str, top: Path, what: str, *, cache: Path, offline: bool) -> None:
    """`commit`'s tree, with its submodules, made at `top`: exported in a temporary directory
    beside it and renamed into place, so an interrupted checkout is never seen half-made (the
    repository's lock held)."""
    import shutil
    import tempfile

    top.parent.mkdir(parents=True, exist_ok=True)
    for stale in top.parent.glob(f".{commit[:12]}-*"):  # a checkout killed halfway (kill -9)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{commit[:12]}-", dir=top.parent))
    try:
        _unpack(db, commit, tmp, tmp / "tree", what)
        _archival(db, commit, tmp / "tree", ref.subdirectory)
        _submodules(db, ref.url, commit, tmp, tmp / "tree", what, cache=cache, offline=offline, depth=1)
        os.replace(tmp / "tree", top)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _unpack(db: Path, commit: str, scratch: Path, dest: Path, what: str) -> None:
    """`git archive` of `commit` unpacked at `dest` (which must not exist), through `scratch`."""
    import tarfile

    tar = scratch / f"{commit}.tar"
    with open(tar, "wb") as f:
        _git(["archive", "--format=tar", commit], what, cwd=db, stdout=f.fileno())
    try:
        with tarfile.open(tar) as tf:
            tf.extractall(dest, filter="data")  # no links out, no device files
    except tarfile.FilterError as e:  # a link out of the tree, an absolute path, a device file
        raise IndexError_(f"{what}: commit {commit[:12]} holds {e.tarinfo.name!r}, which pypm does not unpack "
                          f"({e})", hint="a tree with a link out of itself (or a device file) cannot be built "
                                         "safely; use another commit, or a wheel of the project") from None
    finally:
        tar.unlink()


def _submodules(db: Path, url: str, commit: str, scratch: Path, tree: Path, what: str, *, cache: Path,
                offline: bool, depth: int) -> None:
    """Fill the gitlinks of `commit`'s tree (unpacked at `tree`) with their commits' trees: see
    the module's docstring. A gitlink without a `.gitmodules` entry is left empty, as git leaves it."""
    links = _gitlinks(db, commit, what)
    if not links:
        return
    if depth > _SUBMODULE_DEPTH:
        raise IndexError_(f"{what}: submodules nest deeper than {_SUBMODULE_DEPTH} levels in {url}",
                          hint="a repository that is its own submodule's submodule cannot be checked out")
    urls = _gitmodules(db, commit, what)
    real_tree = os.path.realpath(tree)
    for path, sub_commit in links.items():
        sub_url = urls.get(path)
        if sub_url is None:
            continue
        sub_url = _check_url(_submodule_url(url, sub_url), f"{what}: submodule {path}")
        target = tree / path
        # The tree came from the repository: a symlink on the way (`vendor -> /etc`) would put
        # the submodule's files anywhere. Each directory on the way must be a real one inside it.
        norm = os.path.normpath(path)
        if os.path.isabs(norm) or norm == "." or norm.startswith(".."):
            raise IndexError_(f"{what}: submodule path {path!r} leaves the repository's tree", hint="fix .gitmodules")
        parent = real_tree
        for part in Path(norm).parts[:-1]:
            parent = os.path.join(parent, part)
            if os.path.islink(parent) or (os.path.lexists(parent) and not os.path.isdir(parent)):
                raise IndexError_(f"{what}: submodule path {path!r} goes through {parent}, which is not a directory "
                                  "of the tree", hint="fix the repository's tree or its .gitmodules")
        if os.path.islink(target) or (target.exists() and (not target.is_dir() or any(target.iterdir()))):
            raise IndexError_(f"{what}: submodule path {path!r} is not an empty directory of the tree",
                              hint="fix the repository's tree or its .gitmodules")
        if target.is_dir():
            target.rmdir()
        sub_db = _db(cache, sub_url)
        sub_ref = GitRef(sub_url)
        sub_what = f"{what}: submodule {path} ({sub_url})"
        with _locked(cache, sub_url):
            _have_commit(sub_db, sub_ref, sub_commit, offline=offline, what=sub_what)
            _unpack(sub_db, sub_commit, scratch, target, sub_what)
            _submodules(sub_db, sub_url, sub_commit, scratch, target, sub_what, cache=cache, offline=offline,
                        depth=depth + 1)


def _gitlinks(db: Path, commit: str, what: str) -> dict[str, str]:
    """{path: the commit it pins} for each gitlink (mode 160000) of `commit`'s tree."""
    out: dict[str, str] = {}
    for entry in _git(["ls-tree", "-r", "-z", "--full-tree", commit], what, cwd=db).split(b"\0"):
        meta, _, path = entry.partition(b"\t")
        fields = meta.split()
        if len(fields) == 3 and fields[0] == b"160000" and fields[1] == b"commit":
            sha = fields[2].decode()
            if _COMMIT.fullmatch(sha):
                out[path.decode("utf-8", "surrogateescape")] = sha
    return out


def _gitmodules(db: Path, commit: str, what: str) -> dict[str, str]:
    """{path: url} of `commit`'s .gitmodules (read by git itself from the blob: its syntax is git's
    config syntax); {} when it has none."""
    try:
        text = _git(["config", "--null", "--blob", f"{commit}:.gitmodules", "--list"], what, cwd=db)
    except IndexError_:
        return {}
    by_name: dict[str, dict[str, str]] = {}
    for item in text.split(b"\0"):
        key, _, value = item.decode("utf-8", "surrogateescape").partition("\n")
        if key.startswith("submodule.") and key.count(".") >= 2:
            name, _, field = key[len("submodule."):].rpartition(".")
            by_name.setdefault(name, {})[field] = value
    return {m["path"]: m["url"] for m in by_name.values() if m.get("path") and m.get("url")}


def _submodule_url(base: str, url: str) -> str:
    """A .gitmodules URL; `./x` and `../x` are taken from the superproject's URL, as git takes them
    (the superproject's URL as a directory: each `../` removes one of its components)."""
    if not url.startswith(("./", "../")):
        return url
    base = base.rstrip("/")
    while True:
        if url.startswith("./"):
            url = url[2:]
        elif url.startswith("../"):
            url = url[3:]
            base = base.rsplit("/", 1)[0]
        else:
            return f"{base}/{url}"


def _archival(db: Path, commit: str, tree: Path, subdirectory: str | None) -> None:
    """Write `.git_archival.txt` (setuptools-scm's format, also read by hatch-vcs) where the
    repository has none: the checkout has no .git, and a backend that takes its version from the
    history (`dynamic = ["version"]` with setuptools-scm) would otherwise fail to find one. It
    says what `git describe` says of the commit in the fetched repository (tags included), as
    setuptools-scm's recommended archival file would in a `git archive` of a project that ships
    one. Best effort: without a tag, or when git cannot describe it, nothing is written."""
    try:
        describe = _git(["describe", "--tags", "--long", "--match", "*[0-9]*", commit], "describe",
                        cwd=db).decode().strip()
        date = _git(["show", "-s", "--format=%cI", commit], "show", cwd=db).decode().strip()
    except IndexError_:
        return  # no tag to describe it by: a backend that needs one fails with its own message
    text = f"node: {commit}\nnode-date: {date}\ndescribe-name: {describe}\n"
    for d in {tree, tree / subdirectory if subdirectory else tree}:
        target = d / ".git_archival.txt"
        if d.is_dir() and not target.exists() and not target.is_symlink():
            target.write_text(text, encoding="utf-8")


def private_copy(tree: Path, parent: Path) -> Path:
    """A copy of a checkout's `tree` under `parent`, for a build to write into (links kept as
    links: the checkout's were made by tarfile's data filter, none points out of it)."""
    import shutil
    import tempfile

    dest = Path(tempfile.mkdtemp(prefix="git-", dir=parent)) / tree.name
    shutil.copytree(tree, dest, symlinks=True)
    return dest
