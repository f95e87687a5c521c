"""Per-wheel Merkle tree files in the cache: computed when a wheel enters the unpacked store.

Layout: `<cache>/wheels/<sha[:2]>/<sha>/merkle.json`, beside the wheel whose sha256 is `<sha>`
(format: `pypm.merkle.FileTree.to_json`). The tree is computed from bytes that were just
verified — the wheel against the lock's sha256, each extracted file against the wheel's
RECORD — and never from the unpacked store later: installed files are hard links into that
store, so an edit in a venv edits the store too, and a tree taken from it would bless the edit.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

TYPE_CHECKING = False  # the install path reads manifests only: merkle/lockfile (dataclasses) load on demand
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Iterator

    from .merkle import FileTree


def file_sha256(path: Path) -> str:
    from .lockfile import file_sha256 as f

    return f(path)


def _file_tree() -> type[FileTree]:
    from .merkle import FileTree

    return FileTree

__all__ = ["TREE_NAME", "tree_path", "tree_of_extracted", "tree_of_wheel", "store", "load", "ensure_tree",
           "install_record", "read_install_record", "store_differences", "manifest_path", "read_manifest",
           "write_manifest"]

TREE_NAME = "merkle.json"
CHUNK = 1 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def tree_path(cache_root: Path, sha256: str) -> Path:
    return Path(cache_root) / "wheels" / sha256[:2] / sha256 / TREE_NAME


def _is_script(path: str) -> bool:
    top, _, rest = path.partition("/")
    return top.endswith(".data") and rest.startswith("scripts/")


def _body_digest(f: Any, whole: Any = None) -> str | None:
    """sha256 of what follows a `#!python` first line (what the installer keeps), else None; read
    from the binary file `f` in chunks: a "script" may be a 25 MB executable (ruff's is), and
    reading it whole was the biggest allocation of a cold sync. `whole`: a hash object that is
    also given every byte of the file (the file's own digest, in the same pass); without it a
    file that is not a `#!python` script is read no further than its first 8 bytes."""
    head = f.read(8)
    if whole is not None:
        whole.update(head)
    if head != b"#!python":
        while whole is not None and (chunk := f.read(CHUNK)):
            whole.update(chunk)
        return None
    import hashlib

    h = hashlib.sha256()  # of b"" when the file is its first line alone
    first_line = True
    while chunk := f.read(CHUNK):
        if whole is not None:
            whole.update(chunk)
        if first_line:
            nl = chunk.find(b"\n")
            if nl < 0:
                continue
            first_line = False
            chunk = chunk[nl + 1:]
        h.update(chunk)
    return h.hexdigest()


def _record_sha256(directory: Path) -> dict[str, str]:
    """sha256 hex digests RECORD gives (only those: other algorithms are hashed again)."""
    import base64

    from .wheelfile import find_dist_info, parse_record

    names = [p.name for p in directory.iterdir()]
    try:
        info = find_dist_info(names)
        rows = parse_record((directory / info / "RECORD").read_text(encoding="utf-8"))
    except (ValueError, OSError, UnicodeDecodeError):
        return {}
    out = {}
    for path, h, _ in rows:
        algo, _, b64 = h.partition("=")
        if algo == "sha256" and b64:
            try:
                out[path] = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()
            except ValueError:
                continue
    return {k: v for k, v in out.items() if len(v) == 64}


def _walk(directory: Path) -> Iterator[tuple[str, Path]]:
    for dirpath, _, filenames in os.walk(directory):
        for fn in filenames:
            p = Path(dirpath) / fn
            yield p.relative_to(directory).as_posix(), p


def _sha256_hex(record_hash: str) -> str | None:
    import base64

    algo, _, b64 = record_hash.partition("=")
    if algo != "sha256" or not b64:
        return None
    try:
        h = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()
    except ValueError:
        return None
    return h if len(h) == 64 else None


def tree_of_extracted(directory: Path, *, wheel_filename: str, wheel_sha256: str,
                      manifest: dict[str, Any] | None = None) -> FileTree:
    """The tree of a wheel just extracted (and verified) into `directory` by `extract_verified`.

    RECORD's sha256 digests are used as they are: extraction has just checked every file
    against them; files RECORD lists with another algorithm or none (RECORD itself) are hashed.
    `manifest`: what `extract_verified` returned, so the tree is not walked and RECORD not
    parsed a second time.
    """
    files: dict[str, str] = {}
    bodies: dict[str, str] = {}
    if manifest is not None:
        listing = [(rel, _sha256_hex(h)) for rel, h, _ in manifest["files"]]
    else:
        known = _record_sha256(directory)
        listing = [(rel, known.get(rel)) for rel, _ in _walk(directory)]
    base = str(directory)
    for rel, digest in listing:
        p = f"{base}/{rel}"
        files[rel] = digest or file_sha256(Path(p))
        if _is_script(rel):
            with open(p, "rb") as f:
                body = _body_digest(f)
            if body:
                bodies[rel] = body
    return _file_tree()(wheel_filename, wheel_sha256, files, bodies)


def tree_of_wheel(wheel: Path, *, wheel_sha256: str) -> FileTree:
    """The tree of a wheel archive, hashing every member (for caches filled before trees existed,
    and for `pypm verify` when a tree file is missing or does not match the venv's record)."""
    import hashlib
    import zipfile

    files: dict[str, str] = {}
    bodies: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            h = hashlib.sha256()
            with zf.open(info) as f:
                if _is_script(info.filename):  # one pass: the member's digest and its body's
                    body = _body_digest(f, whole=h)
                    if body:
                        bodies[info.filename] = body
                else:
                    while chunk := f.read(CHUNK):
                        h.update(chunk)
            files[info.filename] = h.hexdigest()
    return _file_tree()(wheel.name, wheel_sha256, files, bodies)


def store(cache_root: Path, tree: FileTree) -> Path:
    """Write the tree file atomically (readers see no file or a whole one)."""
    dest = tree_path(cache_root, tree.wheel_sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    from .fastpath import replace_file

    replace_file(str(dest), tree.to_json())
    return dest


def load(cache_root: Path, sha256: str) -> FileTree | None:
    """The stored tree of wheel `sha256`, or None when absent, malformed or for another wheel."""
    try:
        data = tree_path(cache_root, sha256).read_bytes()
    except OSError:
        return None
    try:
        tree = _file_tree().from_json(data)
    except ValueError:
        return None
    return tree if tree.wheel_sha256 == sha256 else None


def _cached_wheel(cache_root: Path, sha256: str) -> Path | None:
    d = Path(cache_root) / "wheels" / sha256[:2] / sha256
    try:
        found = sorted(p for p in d.iterdir() if p.name.endswith(".whl") and p.is_file())
    except OSError:
        return None
    for p in found:
        if file_sha256(p) == sha256:
            return p
    return None


def ensure_tree(cache_root: Path, sha256: str) -> FileTree | None:
    """The stored tree, else one computed from the cached wheel (checked against `sha256`) and
    stored; None when neither the tree nor the wheel is in the cache."""
    tree = load(cache_root, sha256)
    if tree is not None:
        return tree
    wheel = _cached_wheel(cache_root, sha256)
    if wheel is None:
        return None
    tree = tree_of_wheel(wheel, wheel_sha256=sha256)
    store(cache_root, tree)
    return tree


def store_differences(directory: Path, tree: FileTree) -> list[str]:
    """The paths where the unpacked store entry `directory` differs from `tree` (missing, extra
    or with other bytes), hashing every file: installs are hard links into the store, so an edit
    made in a venv lands here too and must not be linked into the next install."""
    seen: set[str] = set()
    out: list[str] = []
    for rel, p in _walk(directory):
        seen.add(rel)
        want = tree.files.get(rel)
        if want is None or file_sha256(p) != want:
            out.append(rel)
    out += [rel for rel in tree.files if rel not in seen]
    return sorted(out)


def install_record(unpacked: Path) -> dict[str, str]:
    """What the installer records in `pypm_source.json` about the tree of the wheel whose unpacked
    store is `unpacked` (`<cache>/unpacked/<sha[:2]>/<sha>`): `{"merkle-root", "wheel-sha256"}`,
    or `{}` when `unpacked` is not a cache entry or no tree can be had."""
    unpacked = Path(unpacked)
    sha = unpacked.name
    if not _HEX64.match(sha) or unpacked.parent.parent.name != "unpacked":
        return {}
    tree = ensure_tree(unpacked.parent.parent.parent, sha)
    if tree is None:
        return {}
    return {"merkle-root": tree.root, "wheel-sha256": sha}


def read_install_record(dist_info: Path) -> dict[str, str]:
    """`pypm_source.json` of an installed dist ({} when absent or unreadable)."""
    try:
        data = json.loads((Path(dist_info) / "pypm_source.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(data, dict) \
        else {}


# --------------------------------------------------------------------------- the install manifest

def manifest_path(unpacked: str | Path) -> Path | None:
    """Where the install manifest (`pypm.wheelfile`'s) of the store entry `unpacked`
    (`<cache>/unpacked/<sha[:2]>/<sha>`) lives: `<sha>.install.json` beside it, outside the tree
    so the tree holds exactly the wheel's files. None when `unpacked` is not a store entry."""
    unpacked = Path(unpacked)
    if not _HEX64.match(unpacked.name) or unpacked.parent.parent.name != "unpacked":
        return None
    return unpacked.with_name(unpacked.name + ".install.json")


_manifests: dict[tuple[str, int, int], dict[str, Any]] = {}  # parsed once per process (cache.unpack, then install)


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest at `path`, or None when it is absent, unreadable or not of this format (the
    caller then derives it from the tree again). Its paths are checked where they are used."""
    from .wheelfile import MANIFEST_FORMAT

    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            key = (str(path), st.st_mtime_ns, st.st_size)
            if key in _manifests:
                return _manifests[key]
            m = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not (isinstance(m, dict) and m.get("format") == MANIFEST_FORMAT and isinstance(m.get("dist-info"), str)
            and isinstance(m.get("files"), list) and isinstance(m.get("dirs"), list)):
        return None
    files = m["files"]
    if not (all(type(r) is list and len(r) == 3 for r in files)
            and all(type(a) is str and type(b) is str and type(c) is str for a, b, c in files)
            and all(type(d) is str for d in m["dirs"])):
        return None
    if len(_manifests) > 256:
        _manifests.clear()
    _manifests[key] = m
    return m


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Atomically (readers see no file or a whole one)."""
    from .fastpath import replace_file

    replace_file(str(path), json.dumps(manifest, separators=(",", ":")).encode("utf-8"))


def store_written_since(cache_root: Path | str, sha256: str, entry: Path | str,
                        manifest: dict[str, Any] | None) -> bool:
    """A file of the store entry `entry` has an mtime later than the wheel's tree file, which
    `Cache.unpack` writes after extracting: something wrote it since (an edit in a venv, through
    its hard link), or it is gone. One stat per file, no hashing; an edit that restored the old
    mtime is left to `pypm sync --reinstall`. No tree file: no verdict (False). The files are the
    manifest's when there is one (no walk), else the entry's own."""
    try:
        ref = os.stat(tree_path(Path(cache_root), sha256)).st_mtime_ns
    except OSError:
        return False
    if manifest is not None:
        base = f"{entry}/"
        paths = [base + row[0] for row in manifest["files"]]
    else:
        paths = [os.path.join(d, fn) for d, _, fns in os.walk(entry) for fn in fns]
    stat = os.stat
    for p in paths:
        try:
            if stat(p).st_mtime_ns > ref:
                return True
        except OSError:
            return True  # vanished: the entry is not whole
    return False
