"""`pypm verify`: installed files against their wheels' Merkle trees, the lock against its index.

`--venv` compares every file of every installed dist with the tree of the exact wheel the
lock names (never with the dist's RECORD, which anyone who edits a file can edit too) and
reports modified, missing and added files by package. `--lock` asks each locked file's index
what it serves under that name today. Both are specified in docs/lock-format.md §14.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ExitCode, LockError, PypmError, VerifyError
from .lockfile import LOCK_NAME, FileEntry, Lock, LockedPackage, canonical_name, file_sha256

__all__ = ["Finding", "verify_command", "verify_venv", "verify_lock_sources", "verify_signature"]

NO_PACKAGE = "(no package)"
# Files the installer writes itself into a dist-info (a wheel's own copies are never installed).
_INSTALLER_OWNED = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "pypm_source.json", "RECORD.jws",
                    "RECORD.p7s"}
# What pypm.venv puts in bin/: the interpreter links and the activate scripts.
_VENV_OWN_SCRIPT = re.compile(r"^(python|pypy)(\d+(\.\d+)?)?$|^activate(\.\w+)?$|^Activate\.ps1$")
_PYC = re.compile(r"^(?P<stem>[^.]+)\.[^/]+\.pyc$")


@dataclass(frozen=True)
class Finding:
    """One problem: `kind` is modified | missing | added | package | signature | lock."""

    kind: str
    package: str  # "name version", NO_PACKAGE, or "" for the lock as a whole
    path: str = ""  # relative to the project directory
    detail: str = ""

    def line(self) -> str:
        parts = [f"{self.kind:<9}", self.package or "pypm.lock"]
        if self.path:
            parts.append(self.path)
        if self.detail:
            parts.append(f"({self.detail})" if self.path else self.detail)
        return "  ".join(parts)


# --------------------------------------------------------------------------- the command

def verify_command(ctx: Any, project: Any, args: Any) -> int:
    """`pypm verify [--venv] [--lock]` (neither: --venv). Exit 0 when nothing was found, else 1."""
    from .lockfile import read

    do_venv = bool(getattr(args, "venv", False)) or not getattr(args, "lock", False)
    do_lock = bool(getattr(args, "lock", False))
    lock_path = project.root / LOCK_NAME
    if not lock_path.exists():
        raise LockError(f"{lock_path} does not exist: there is nothing to verify against",
                        hint="run `pypm lock` (and `pypm sync`) first")
    lock = read(lock_path)
    t0 = time.monotonic()
    findings: list[Finding] = verify_signature(project, lock_path, info=ctx.info)
    checked = ""
    if do_venv:
        fs, nfiles, npkgs = verify_venv(ctx, project, lock)
        findings += fs
        checked += f"{nfiles} files of {npkgs} packages in .venv"
    if do_lock:
        fs, nfiles = verify_lock_sources(ctx, project, lock)
        findings += fs
        checked += (", " if checked else "") + f"{nfiles} locked files against their index"
    for f in findings:
        print(f.line())
    took = time.monotonic() - t0
    if findings:
        ctx.info(f"verify: {len(findings)} problem(s) in {checked} ({took:.2f}s)")
        if any(f.kind in ("modified", "missing") for f in findings):
            # Plain sync sees missing files and most edits (size, mtime), not all: --reinstall does,
            # and re-checks the cache's copies an edit through a hard link may have reached.
            ctx.info("  hint: `pypm sync --reinstall` restores the packages' files (and the cache's copies)")
        return ExitCode.FAILURE
    ctx.info(f"verified {checked} in {took:.2f}s: everything matches")
    return ExitCode.OK


# --------------------------------------------------------------------------- the signature

def verify_signature(project: Any, lock_path: Path, *, info: Any = None) -> list[Finding]:
    """The lock's [signature] (if any), checked against trusted-keys (when set: then it must exist)."""
    import tomllib

    from .signing import load_trusted_keys, verify_lock_signature

    try:
        doc = tomllib.loads(lock_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LockError(f"{lock_path}: cannot read it: {e}") from None
    keys = project.tool.trusted_keys
    trusted = load_trusted_keys(list(keys), project.root) if keys else None
    if not doc.get("signature") and not keys:
        return []
    st = verify_lock_signature(doc, trusted, where=str(lock_path))
    kid = (st.key_id or "")[:16]
    if not st.signed:
        return [Finding("signature", "", detail="pypm.lock is not signed, and [tool.pypm] trusted-keys requires it")]
    out = []
    if st.trusted is False:
        out.append(Finding("signature", "", detail=f"signed by key {kid}, which is not in [tool.pypm] trusted-keys"))
    if st.valid is False:
        out.append(Finding("signature", "", detail=f"the signature does not verify with key {kid}"))
    if not st.intact:
        out.append(Finding("signature", "", detail=f"pypm.lock was changed after key {kid} signed it"))
    if not out and info is not None:
        info(f"pypm.lock is signed by key {kid} and unchanged since" + (
            ", a trusted key" if st.trusted else " (set [tool.pypm] trusted-keys to check the signature itself)"))
    return out


# --------------------------------------------------------------------------- --venv

@dataclass(frozen=True)
class _Expect:
    how: str  # "sha" (file bytes) | "script" (shebang + body) | "present" | "optional"
    digest: str = ""
    owner: str = ""


def _same_version(a: str, b: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def _check_one(path: str, e: _Expect, shebang: bytes) -> str | None:
    """None when `path` is as expected, else "missing" or "modified"."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None if e.how == "optional" else "missing"
    import stat

    if not stat.S_ISREG(st.st_mode):
        return "modified"  # the installer only ever writes regular files
    if e.how in ("present", "optional"):
        return None
    if e.how == "script":
        with open(path, "rb") as f:
            data = f.read()
        ok = data.startswith(shebang) and hashlib.sha256(data[len(shebang):]).hexdigest() == e.digest
        return None if ok else "modified"
    return None if file_sha256(path) == e.digest else "modified"


class _VenvCheck:
    """The expected state of one venv, built dist by dist, then checked in one parallel pass."""

    def __init__(self, ctx: Any, project: Any, lock: Lock) -> None:
        from .installer import _shebang
        from .venv import VenvLayout

        self.ctx = ctx
        self.project = project
        self.lock = lock
        self.venv = project.root / ".venv"
        if not (self.venv / "pyvenv.cfg").is_file():
            raise VerifyError(f"{self.venv} does not exist: there is no environment to verify",
                              hint="run `pypm sync` first (or verify only the lock: `pypm verify --lock`)")
        self.layout = VenvLayout.from_venv(self.venv)
        self.shebang = _shebang(self.layout.python)
        # Paths are plain strings here: tens of thousands of pathlib objects cost more than the hashing.
        self.expected: dict[str, _Expect] = {}
        self.anchors: dict[str, set[str]] = {}  # top-level entries whose whole content belongs to these dists
        self.findings: list[Finding] = []
        self._cache: Any = None

    def rel(self, p: Path | str) -> str:
        return os.path.relpath(p, self.project.root)

    def note(self, kind: str, package: str, path: Path | str | None = None, detail: str = "") -> None:
        self.findings.append(Finding(kind, package, self.rel(path) if path else "", detail))

    def cache(self) -> Any:
        if self._cache is None:
            from .cache import Cache
            from .config import env_flag

            self._cache = Cache(offline=env_flag("PYPM_OFFLINE"), base_dir=self.project.root)
        return self._cache

    # ---- which tree
    def _locked_file(self, dist: Any) -> tuple[LockedPackage | None, FileEntry | None]:
        for p in self.lock.by_name(dist.name):
            if p.has_no_files:  # the project, a path or git dependency
                return p, None
            if not _same_version(p.version, dist.version):
                continue
            for f in p.files():
                if f.sha256 == dist.source_sha256:
                    return p, f
        return None, None

    def _tree(self, label: str, dist: Any, entry: FileEntry | None, record: dict[str, str]) -> Any:
        """The tree to compare with, or None (a finding says why)."""
        from . import wheeltree

        cache_root = self.cache().root
        recorded = record.get("merkle-root")
        if entry is not None and entry.filename.endswith(".whl"):
            sha = entry.sha256
            tree = wheeltree.load(cache_root, sha)
            if tree is None or (recorded and tree.root != recorded):
                # the authority is the wheel the lock names: fetch it (verified against its sha256)
                try:
                    wheel = self.cache().fetch(entry, package=dist.name)
                except PypmError as e:
                    self.note("package", label, detail=f"cannot get the locked wheel to verify against: {e.message}")
                    return None
                tree = wheeltree.tree_of_wheel(wheel, wheel_sha256=sha)
                wheeltree.store(cache_root, tree)
        else:  # built here from the locked sdist, or the project itself: the wheel pypm built
            sha = record.get("wheel-sha256", "")
            tree = wheeltree.ensure_tree(cache_root, sha) if sha else None
            if tree is None:
                self.note("package", label, detail="the wheel it was built into is no longer in the cache, so its "
                          "files cannot be verified; remove .venv and run `pypm sync` to rebuild it")
                return None
        if recorded and recorded != tree.root:
            self.note("package", label, dist.dist_info / "pypm_source.json",
                      f"its install record names Merkle root {recorded[:16]}…, but the tree of {tree.wheel} is "
                      f"{tree.root[:16]}…")
        return tree

    # ---- expected files of one dist
    def add_dist(self, dist: Any) -> None:
        from .installer import _entry_points, _metadata_name_version, _script_text
        from .wheelfile import find_dist_info
        from .wheeltree import read_install_record

        label = f"{dist.name} {dist.version}"
        if dist.dist_info is None or not dist.complete:
            self.note("package", label, dist.dist_info, "the install was interrupted; run `pypm sync` to repair it")
            if dist.dist_info is None:
                return
        record = read_install_record(dist.dist_info)
        pkg, entry = self._locked_file(dist)
        if dist.installer != "pypm" or pkg is None:
            self.note("package", label, dist.dist_info, "not installed by pypm from pypm.lock"
                      if dist.installer != "pypm" else "pypm.lock does not name this version and file "
                      "(`pypm sync` installs what it names)")
            self._own_foreign(dist, label)
            return
        tree = self._tree(label, dist, entry, record)
        if tree is None:
            self._own_foreign(dist, label)
            return
        info = dist.dist_info
        try:
            info_name = find_dist_info(tree.files, tree.wheel)
        except ValueError:
            info_name = ""
        if info_name != info.name:
            self.note("package", label, info, f"installed as {info.name}, but {tree.wheel} has {info_name or 'none'}")
            self._own_foreign(dist, label)
            return
        data_name = info_name[: -len(".dist-info")] + ".data"
        root_dest = str(info.parent)
        lay = self.layout
        schemes = {"purelib": str(lay.purelib), "platlib": str(lay.platlib), "scripts": str(lay.scripts),
                   "data": str(lay.data), "headers": str(lay.headers / _metadata_name_version(info)[0])}
        for path, digest in tree.files.items():
            top, _, rest = path.partition("/")
            if top == info_name and rest in _INSTALLER_OWNED:
                continue
            if top == data_name:
                scheme, _, sub = rest.partition("/")
                if scheme not in schemes or not sub:
                    continue  # the installer refuses such a wheel; nothing of it was installed
                dst = os.path.join(schemes[scheme], sub)
                if scheme == "scripts":
                    body = tree.script_bodies.get(path)
                    self._expect(dst, _Expect("script", body, label) if body else _Expect("sha", digest, label))
                    continue
                if scheme in ("purelib", "platlib"):
                    self._anchor(schemes[scheme], sub, label)
                self._expect(dst, _Expect("sha", digest, label))
            else:
                self._anchor(root_dest, path, label)
                self._expect(os.path.join(root_dest, path), _Expect("sha", digest, label))
        d = str(info)
        self._expect(os.path.join(d, "RECORD"), _Expect("present", owner=label))
        self._expect(os.path.join(d, "INSTALLER"), _Expect("sha", hashlib.sha256(b"pypm\n").hexdigest(), label))
        for fn in ("REQUESTED", "direct_url.json", "pypm_source.json"):
            self._expect(os.path.join(d, fn), _Expect("optional", owner=label))
        self._anchor(root_dest, info.name, label)
        # entry-point scripts are generated: expect exactly what the installer generates from the
        # dist's entry_points.txt (itself checked against the tree above)
        ep = info / "entry_points.txt"
        if f"{info_name}/entry_points.txt" in tree.files and ep.is_file():
            eps = _entry_points(ep.read_text(encoding="utf-8", errors="replace"))
            for group in ("console_scripts", "gui_scripts"):
                for script, value in eps.get(group, {}).items():
                    try:
                        text = _script_text(lay.python, value)
                    except ValueError:
                        continue
                    self._expect(os.path.join(lay.scripts, script), _Expect("sha", hashlib.sha256(text).hexdigest(),
                                                                            label))

    def _expect(self, path: str, e: _Expect) -> None:
        prev = self.expected.get(path)
        if prev is not None and prev.owner != e.owner and e.how not in ("optional", "present"):
            self.note("package", e.owner, path, f"also installed by {prev.owner}: one overwrote the other")
        self.expected[path] = e

    def _anchor(self, base: str, rel: str, label: str) -> None:
        """`rel` (a path below `base`) makes its first component belong to `label`."""
        first = rel.split("/", 1)[0]
        if first and first not in (".", ".."):
            self.anchors.setdefault(os.path.join(base, first), set()).add(label)

    def _own_foreign(self, dist: Any, label: str) -> None:
        """Files of a dist we cannot verify are still its own (not reported as added, one by one)."""
        from .wheelfile import parse_record

        info = dist.dist_info
        if info is None:
            return
        base = str(info.parent)
        self._anchor(base, info.name, label)
        try:
            rows = parse_record((info / "RECORD").read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            return
        for path, _, _ in rows:
            p = os.path.normpath(os.path.join(base, path))
            self.expected.setdefault(p, _Expect("optional", owner=label))
            rel = os.path.relpath(p, base)
            if not rel.startswith(".."):
                self._anchor(base, rel, label)

    # ---- the walk for added files
    def _pyc_ok(self, p: str) -> bool:
        cache_dir, name = os.path.split(p)
        src_dir, cache_name = os.path.split(cache_dir)
        m = _PYC.match(name) if cache_name == "__pycache__" else None
        return bool(m) and os.path.join(src_dir, f"{m.group('stem')}.py") in self.expected  # type: ignore[union-attr]

    def added(self) -> None:
        seen: set[str] = set()

        def walk(top: str, owner: str) -> None:
            if os.path.islink(top) or not os.path.isdir(top):
                if top not in self.expected and top not in seen and not self._pyc_ok(top):
                    seen.add(top)
                    self.note("added", owner, top)
                return
            for dirpath, dirnames, filenames in os.walk(top):
                for n in filenames + [x for x in dirnames if os.path.islink(os.path.join(dirpath, x))]:
                    p = os.path.join(dirpath, n)
                    if p in self.expected or p in seen or self._pyc_ok(p):
                        continue
                    seen.add(p)
                    self.note("added", owner, p)

        for anchor, owners in sorted(self.anchors.items()):
            walk(anchor, ", ".join(sorted(owners)))
        lay = self.layout
        for base in dict.fromkeys([str(lay.purelib), str(lay.platlib)]):
            try:
                entries = sorted(os.listdir(base))
            except FileNotFoundError:
                continue
            for n in entries:
                if os.path.join(base, n) not in self.anchors:
                    walk(os.path.join(base, n), NO_PACKAGE)
        try:
            scripts = sorted(os.listdir(lay.scripts))
        except FileNotFoundError:
            scripts = []
        for n in scripts:
            p = os.path.join(lay.scripts, n)
            if p not in self.expected and p not in seen and not _VENV_OWN_SCRIPT.match(n):
                seen.add(p)
                self.note("added", NO_PACKAGE, p)

    # ---- the hashing pass
    def check_files(self) -> int:
        items = sorted(self.expected.items())
        workers = min(8, 2 * (os.cpu_count() or 1))
        # Batches, not one future per file: with tens of thousands of small files the executor's
        # own overhead would otherwise cost more than reading them.
        step = max(64, len(items) // (workers * 4) + 1)
        batches = [items[i:i + step] for i in range(0, len(items), step)]

        def run(batch: list[tuple[str, _Expect]]) -> list[str | None]:
            return [_check_one(p, e, self.shebang) for p, e in batch]

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pypm-verify") as ex:
            results = [r for rs in ex.map(run, batches) for r in rs]
        for (path, e), r in zip(items, results):
            if r is not None:
                self.note(r, e.owner, path)
        return len(items)


def verify_venv(ctx: Any, project: Any, lock: Lock) -> tuple[list[Finding], int, int]:
    """(findings, files checked, packages checked) for the project's .venv against pypm.lock."""
    from .installer import installed_distributions

    check = _VenvCheck(ctx, project, lock)
    try:
        dists = installed_distributions(check.layout)
        for name in sorted(dists):
            check.add_dist(dists[name])
        _missing_packages(ctx, project, lock, check, dists)
        n = check.check_files()
        check.added()
    finally:
        if check._cache is not None:
            check._cache.close()
    order = {"package": 0, "modified": 1, "missing": 2, "added": 3}
    check.findings.sort(key=lambda f: (f.package == NO_PACKAGE, f.package, order.get(f.kind, 9), f.path))
    return check.findings, n, len(dists)


def _missing_packages(ctx: Any, project: Any, lock: Lock, check: _VenvCheck, dists: dict[str, Any]) -> None:
    """Locked packages the venv's selection needs that are not installed at all (a whole dist
    removed leaves no file behind to be reported missing). The selection and interpreter are
    the last sync's (state.json), and only when that sync used this pypm.lock."""
    from .interpreter import query_interpreter
    from .selection import Selection, select_packages
    from .venvstate import read_state

    state = read_state(check.venv) or {}
    sel, exe = state.get("selection"), (state.get("interpreter") or {}).get("executable")
    lock_sha = hashlib.sha256((project.root / LOCK_NAME).read_bytes()).hexdigest()
    if not isinstance(sel, dict) or not exe or state.get("lock-sha256") != lock_sha:
        ctx.info("note: .venv was not synced from this pypm.lock (or has no state.json): whole packages missing "
                 "from it are not reported; `pypm sync` brings it in line")
        return
    try:
        selection = Selection(main=bool(sel.get("main", True)), extras=frozenset(sel.get("extras", ())),
                              groups=frozenset(sel.get("groups", ())),
                              include_project=bool(sel.get("include-project", True)),
                              packages=frozenset(sel.get("packages", ())), all_packages=bool(sel.get("all-packages")),
                              no_install=frozenset(sel.get("no-install", ())))
        wanted = select_packages(lock, selection, env=dict(query_interpreter(exe).markers))
    except (PypmError, TypeError) as e:
        ctx.info(f"note: cannot tell which packages .venv should hold ({e}); whole missing packages not reported")
        return
    root = lock.root()
    if root is not None and selection.include_project and not project.is_virtual:
        wanted = [*wanted, root]
    wanted = [p for p in wanted if canonical_name(p.name) not in selection.no_install]  # (--no-install-package)
    for p in wanted:
        if canonical_name(p.name) not in dists and not p.virtual_member:  # (a virtual member is never installed)
            check.note("missing", f"{canonical_name(p.name)} {p.version}",
                       detail="the whole package: pypm.lock selects it for this venv and it is not installed")


# --------------------------------------------------------------------------- --lock

def verify_lock_sources(ctx: Any, project: Any, lock: Lock) -> tuple[list[Finding], int]:
    """Ask each locked file's index (or find-links location) for that file: same name, version,
    URL, size and sha256 (and, for wheels, the core metadata's name and version)?"""
    from .config import cache_dir
    from .index import IndexClient, PackageNotFound

    findings: list[Finding] = []
    by_source: dict[tuple[str, str], list[LockedPackage]] = {}
    for p in lock.sorted_packages():
        if p.is_root:
            continue
        src = p.index_source()
        if src is None:
            ctx.debug(f"verify --lock: {p.name} {p.version} is not from an index ({p.source}); skipped")
            continue
        by_source.setdefault(src, []).append(p)
    _check_inputs(project, lock, findings)
    count = 0
    for (kind, where), pkgs in sorted(by_source.items()):
        client = IndexClient([where] if kind == "registry" else [], [where] if kind == "find-links" else [],
                             cache_dir=cache_dir(), refresh=True, warn=lambda m: ctx.info(f"warning: {m}"))
        with client:
            client.prefetch(sorted({canonical_name(p.name) for p in pkgs}))
            wanted: list[tuple[LockedPackage, FileEntry, Any]] = []
            for p in pkgs:
                label = f"{canonical_name(p.name)} {p.version}"
                try:
                    served = {f.filename: f for f in client.project_files(p.name)}
                except PackageNotFound:
                    findings.append(Finding("lock", label, detail=f"{where} does not know this project"))
                    continue
                for e in p.files():
                    count += 1
                    f = served.get(e.filename)
                    if f is None:
                        findings.append(Finding("lock", label, e.filename, f"{where} does not serve this file"))
                        continue
                    wanted.append((p, e, f))
            client.prefetch_metadata([f for _, e, f in wanted if f.kind == "wheel"])
            for p, e, f in wanted:
                findings += _compare_served(client, p, e, f)
    return findings, count


def _compare_served(client: Any, p: LockedPackage, e: FileEntry, f: Any) -> list[Finding]:
    """What differs between the locked file `e` of `p` and the file `f` its index serves
    (name, version, URL, size, sha256 and, for a wheel, its core metadata's name and version)."""
    label = f"{canonical_name(p.name)} {p.version}"
    out: list[Finding] = []
    if f.name != canonical_name(p.name) or not _same_version(f.version, p.version):
        out.append(Finding("lock", label, e.filename, f"the file is {f.name} {f.version}"))
    if f.url != e.url:
        out.append(Finding("lock", label, e.filename, f"pypm.lock has URL {e.url}, the index serves it at {f.url}"))
    if e.size is not None and f.size is not None and e.size != f.size:
        out.append(Finding("lock", label, e.filename, f"pypm.lock says {e.size} bytes, the index says {f.size}"))
    try:
        served_sha = f.sha256 or client.file_hash(f)
    except PypmError as err:
        return [*out, Finding("lock", label, e.filename, f"cannot hash what the index serves: {err.message}")]
    if served_sha != e.sha256:
        return [*out, Finding("lock", label, e.filename,
                              f"pypm.lock has sha256 {e.sha256}, the index serves {served_sha}")]
    if f.kind == "wheel":
        try:
            md = client.metadata(f)
        except PypmError as err:
            return [*out, Finding("lock", label, e.filename, f"its metadata: {err.message}")]
        if md.name != canonical_name(p.name) or not _same_version(md.version, p.version):
            out.append(Finding("lock", label, e.filename, f"its metadata says {md.name} {md.version}"))
    return out


def _check_inputs(project: Any, lock: Lock, findings: list[Finding]) -> None:
    """Does the lock come from this pyproject.toml? (its content-hash, recomputed)"""
    from .locking import LockOptions, lock_inputs_hash

    try:
        want = lock_inputs_hash(project, LockOptions.from_lock(lock))
    except PypmError as e:
        findings.append(Finding("lock", "", detail=f"cannot recompute the content-hash: {e.message}"))
        return
    if want != lock.content_hash:
        findings.append(Finding("lock", "", detail="content-hash does not match pyproject.toml and the recorded "
                                "options: the lock is stale or was not made from this project (`pypm lock`)"))
