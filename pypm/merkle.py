"""Merkle trees over (path, sha256) leaves: a wheel's file tree and the lock root (pure).

The construction is specified in docs/lock-format.md §14 so that a third party can
re-implement it; keep the two in step. In short:

    leaf  = sha256(0x00 || utf8(path) || 0x00 || digest)        digest: 32 raw bytes
    inner = sha256(0x01 || left || right)
    leaves sorted by the UTF-8 bytes of their path; paths unique; on each level the
    nodes are paired left to right and an odd last node is promoted unchanged (not
    duplicated: duplication would give two different leaf lists the same root);
    the root of no leaves is sha256(b"").

No IO here: callers hand in digests (computed from files by `pypm.wheeltree`) or the
parsed lock document.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = [
    "leaf_hash",
    "node_hash",
    "merkle_root",
    "FileTree",
    "TREE_FORMAT",
    "canonical_json",
    "lock_leaves",
    "lock_root",
]

TREE_FORMAT = 1  # version of the tree file written beside a wheel in the cache
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def leaf_hash(path: str, digest: bytes) -> bytes:
    """The leaf of `path` whose content hashes to `digest` (32 raw bytes)."""
    if len(digest) != 32:
        raise ValueError(f"a leaf digest is 32 bytes, not {len(digest)} ({path!r})")
    p = path.encode("utf-8")
    if b"\x00" in p:
        raise ValueError(f"a leaf path cannot contain NUL: {path!r}")
    return hashlib.sha256(b"\x00" + p + b"\x00" + digest).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(leaves: Iterable[tuple[str, bytes]]) -> bytes:
    """The root over (path, digest) pairs, in any order; duplicate paths raise ValueError."""
    items = sorted(leaves, key=lambda x: x[0].encode("utf-8"))
    for a, b in zip(items, items[1:]):
        if a[0] == b[0]:
            raise ValueError(f"duplicate leaf path {a[0]!r}")
    level = [leaf_hash(p, d) for p, d in items]
    if not level:
        return hashlib.sha256(b"").digest()
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])  # odd node promoted
        level = nxt
    return level[0]


# --------------------------------------------------------------------------- a wheel's tree

@dataclass(frozen=True)
class FileTree:
    """The Merkle tree of one wheel: every file of the archive with the sha256 of its bytes.

    `script_bodies` maps each `<name>.data/scripts/` file that starts with `#!python` to the
    sha256 of its bytes after the first line: the installer rewrites that line to the venv's
    interpreter, so an installed script is checked as "expected shebang + this body". It is
    derived from the same wheel bytes as `files` (not part of the root).
    """

    wheel: str  # file name
    wheel_sha256: str  # hex: the archive the tree was computed from
    files: Mapping[str, str]  # path in the wheel -> sha256 hex of the file's bytes
    script_bodies: Mapping[str, str] = field(default_factory=dict)

    @functools.cached_property  # computed once: to_json and from_json both need it (torch: 12k leaves, ~70 ms)
    def root(self) -> str:
        return merkle_root((p, bytes.fromhex(h)) for p, h in self.files.items()).hex()

    def to_json(self) -> bytes:
        doc = {"format": TREE_FORMAT, "wheel": self.wheel, "wheel-sha256": self.wheel_sha256,
               "root": self.root, "files": dict(sorted(self.files.items(), key=lambda kv: kv[0].encode())),
               "script-bodies": dict(sorted(self.script_bodies.items()))}
        return json.dumps(doc, indent=0, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> "FileTree":
        """Parse and check a tree file; ValueError when it is malformed or its root does not
        match its leaves (a tree file is never trusted for its stated root alone)."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"not JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != TREE_FORMAT:
            raise ValueError("not a version-1 tree file")
        files, bodies = doc.get("files"), doc.get("script-bodies", {})
        if not isinstance(files, dict) or not isinstance(bodies, dict):
            raise ValueError("`files` and `script-bodies` must be objects")
        for k, v in (*files.items(), *bodies.items()):
            if not isinstance(k, str) or not isinstance(v, str) or not _HEX64.match(v):
                raise ValueError(f"bad entry {k!r}: {v!r}")
        wheel, sha = doc.get("wheel"), doc.get("wheel-sha256")
        if not isinstance(wheel, str) or not isinstance(sha, str) or not _HEX64.match(sha):
            raise ValueError("bad `wheel` or `wheel-sha256`")
        tree = cls(wheel, sha, files, bodies)
        if doc.get("root") != tree.root:
            raise ValueError("its stated root does not match its leaves")
        return tree


# --------------------------------------------------------------------------- the lock root

def _toml_value(v: Any) -> Any:
    # TOML dates/times (pypm never writes them) have no JSON form: use their RFC 3339 text.
    if isinstance(v, (_dt.datetime, _dt.date, _dt.time)):
        return v.isoformat()
    raise TypeError(f"cannot canonicalise a {type(v).__name__}")


def canonical_json(value: Any) -> bytes:
    """UTF-8 JSON with sorted keys, no whitespace, non-ASCII as itself (see lock-format §14)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=_toml_value).encode("utf-8")


def lock_leaves(doc: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """The leaves of the lock root, from the parsed TOML document of a pypm.lock.

    `lock`: everything but `package` and `signature`; `package/<name>/<version>`: each
    `[[package]]` table whole (edges, markers, sources, files with URLs, sizes and hashes).
    ValueError when a package has no string name/version or two have the same pair.
    """
    head = {k: v for k, v in doc.items() if k not in ("package", "signature")}
    leaves = [("lock", hashlib.sha256(canonical_json(head)).digest())]
    packages = doc.get("package", [])
    if not isinstance(packages, list):
        raise ValueError("`package` must be an array of tables")
    seen: set[str] = set()
    for i, p in enumerate(packages):
        if not isinstance(p, Mapping) or not isinstance(p.get("name"), str) or not isinstance(p.get("version"), str):
            raise ValueError(f"package[{i}] has no string `name` and `version`")
        path = f"package/{p['name']}/{p['version']}"
        if path in seen:
            raise ValueError(f"two [[package]] entries for {p['name']} {p['version']}")
        seen.add(path)
        leaves.append((path, hashlib.sha256(canonical_json(p)).digest()))
    return leaves


def lock_root(doc: Mapping[str, Any]) -> str:
    """The hex root over `lock_leaves(doc)`: what `pypm lock --sign` signs."""
    return merkle_root(lock_leaves(doc)).hex()
