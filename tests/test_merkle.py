"""pypm.merkle (pure) and pypm.wheeltree (tree files in the cache): the constructions of lock-format §14."""

from __future__ import annotations

import hashlib
import json
import tomllib
import zipfile
from pathlib import Path

import pytest

from pypm import wheeltree
from pypm.lockfile import Dependency, FileEntry, Lock, LockedPackage, dumps
from pypm.merkle import FileTree, canonical_json, leaf_hash, lock_leaves, lock_root, merkle_root, node_hash
from pypm.wheelfile import extract_verified
from tests.support.dists import build_wheel


def H(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


# --------------------------------------------------------------------------- the construction, spelled out

def test_leaf_and_node_are_the_documented_byte_strings():
    d = H(b"content")
    assert leaf_hash("a/b.py", d) == H(b"\x00a/b.py\x00" + d)
    assert node_hash(b"L" * 32, b"R" * 32) == H(b"\x01" + b"L" * 32 + b"R" * 32)


def test_root_of_three_leaves_promotes_the_odd_one():
    leaves = [("c", H(b"3")), ("a", H(b"1")), ("b", H(b"2"))]
    la, lb, lc = (leaf_hash(p, d) for p, d in sorted(leaves))
    assert merkle_root(leaves) == node_hash(node_hash(la, lb), lc)


def test_root_of_five_leaves():
    leaves = [(f"f{i}", H(bytes([i]))) for i in range(5)]
    l0, l1, l2, l3, l4 = (leaf_hash(p, d) for p, d in leaves)
    assert merkle_root(leaves) == node_hash(node_hash(node_hash(l0, l1), node_hash(l2, l3)), l4)


def test_root_of_one_and_of_none():
    assert merkle_root([("x", H(b""))]) == leaf_hash("x", H(b""))
    assert merkle_root([]) == H(b"")


def test_order_is_by_utf8_bytes_and_input_order_does_not_matter():
    leaves = [("é", H(b"1")), ("z", H(b"2")), ("Z", H(b"3")), ("a/b", H(b"4")), ("a.b", H(b"5"))]
    expected_order = sorted(leaves, key=lambda x: x[0].encode())
    assert [p for p, _ in expected_order] == ["Z", "a.b", "a/b", "z", "é"]
    assert merkle_root(leaves) == merkle_root(list(reversed(leaves)))
    a, b, c, d, e = (leaf_hash(p, dg) for p, dg in expected_order)
    assert merkle_root(leaves) == node_hash(node_hash(node_hash(a, b), node_hash(c, d)), e)


def test_every_change_changes_the_root():
    base = [(f"pkg/m{i}.py", H(str(i).encode())) for i in range(7)]
    r = merkle_root(base)
    edited = list(base)
    edited[3] = (edited[3][0], H(b"edited"))
    renamed = list(base)
    renamed[5] = ("pkg/other.py", renamed[5][1])
    assert len({r, merkle_root(edited), merkle_root(renamed), merkle_root(base[:-1]),
                merkle_root(base + [("pkg/new.py", H(b"n"))])}) == 5
    # promotion, not duplication: [a, b, c] and [a, b, c, c] cannot collide (paths are unique anyway)
    with pytest.raises(ValueError, match="duplicate"):
        merkle_root(base + [base[0]])


def test_bad_leaves_are_refused():
    with pytest.raises(ValueError, match="32 bytes"):
        leaf_hash("a", b"short")
    with pytest.raises(ValueError, match="NUL"):
        leaf_hash("a\x00b", H(b""))


# --------------------------------------------------------------------------- tree files

def test_tree_json_round_trip_and_tampering_is_refused():
    t = FileTree("a-1-py3-none-any.whl", "ab" * 32, {"a/__init__.py": H(b"x").hex(), "b": H(b"y").hex()},
                 {"a-1.data/scripts/s": H(b"body").hex()})
    back = FileTree.from_json(t.to_json())
    assert back == t and back.root == t.root
    doc = json.loads(t.to_json())
    doc["files"]["a/__init__.py"] = H(b"evil").hex()
    with pytest.raises(ValueError, match="root does not match"):
        FileTree.from_json(json.dumps(doc).encode())
    doc = json.loads(t.to_json())
    doc["format"] = 2
    with pytest.raises(ValueError, match="version-1"):
        FileTree.from_json(json.dumps(doc).encode())


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_tree_of_extracted_wheel_equals_tree_of_archive(tmp_path):
    w = build_wheel(tmp_path, "alpha", "1.0", modules={"alpha/__init__.py": "A = 1\n", "alpha/x/y.py": "Y = 2\n"},
                    entry_points={"console_scripts": {"al": "alpha:main"}},
                    data={"scripts/tool": b"#!python\nprint('tool')\n", "scripts/plain.sh": b"#!/bin/sh\necho\n",
                          "data/share/alpha.txt": b"data\n"})
    extract_verified(w, tmp_path / "x")
    a = wheeltree.tree_of_extracted(tmp_path / "x", wheel_filename=w.name, wheel_sha256=_sha(w))
    b = wheeltree.tree_of_wheel(w, wheel_sha256=_sha(w))
    assert a == b
    with zipfile.ZipFile(w) as zf:
        names = {i.filename for i in zf.infolist() if not i.is_dir()}
        assert set(a.files) == names  # every file, RECORD included
        assert a.files["alpha/x/y.py"] == hashlib.sha256(zf.read("alpha/x/y.py")).hexdigest()
        record = "alpha-1.0.dist-info/RECORD"
        assert a.files[record] == hashlib.sha256(zf.read(record)).hexdigest()
    assert a.script_bodies == {"alpha-1.0.data/scripts/tool": hashlib.sha256(b"print('tool')\n").hexdigest()}


@pytest.mark.parametrize("chunk", [3, 7, 1 << 20])
def test_script_body_digest_is_read_in_chunks(tmp_path, monkeypatch, chunk):
    """The body digest streams the file (a "script" can be a 25 MB executable): whatever the chunk
    size, it is the sha256 of what follows the first line, of b"" for a first line alone, and None
    for anything not starting with #!python (an ELF binary included)."""
    import io

    monkeypatch.setattr(wheeltree, "CHUNK", chunk)
    cases = {b"#!python\nprint(1)\n": b"print(1)\n", b"#!python": b"", b"#!python3 -E": b"",
             b"#!pythonw -x\n\nA\n": b"\nA\n", b"#!python" + b"x" * 50 + b"\n" + b"y" * 100: b"y" * 100}
    for data, body in cases.items():
        assert wheeltree._body_digest(io.BytesIO(data)) == hashlib.sha256(body).hexdigest(), data[:20]
    for data in (b"", b"#!pytho", b"#!/usr/bin/env python\nx", b"\x7fELF" + bytes(64)):
        assert wheeltree._body_digest(io.BytesIO(data)) is None
    # and in a wheel, extracted or not: the same digests
    w = build_wheel(tmp_path, "delta", "1.0", data={"scripts/d": b"#!python\n" + b"z" * 5000,
                                                    "scripts/bin": b"\x7fELF" + bytes(5000)})
    extract_verified(w, tmp_path / "x")
    a = wheeltree.tree_of_extracted(tmp_path / "x", wheel_filename=w.name, wheel_sha256=_sha(w))
    assert a == wheeltree.tree_of_wheel(w, wheel_sha256=_sha(w))
    assert a.script_bodies == {"delta-1.0.data/scripts/d": hashlib.sha256(b"z" * 5000).hexdigest()}


def test_store_load_ensure_and_install_record(tmp_path):
    cache = tmp_path / "cache"
    w = build_wheel(tmp_path, "beta", "2.0")
    sha = _sha(w)
    assert wheeltree.load(cache, sha) is None and wheeltree.ensure_tree(cache, sha) is None
    # a wheel in the cache (as Cache.fetch leaves it) without a tree: computed from the archive and stored
    d = cache / "wheels" / sha[:2] / sha
    d.mkdir(parents=True)
    (d / w.name).write_bytes(w.read_bytes())
    t = wheeltree.ensure_tree(cache, sha)
    assert t is not None and wheeltree.tree_path(cache, sha).is_file()
    assert wheeltree.load(cache, sha) == t
    unpacked = cache / "unpacked" / sha[:2] / sha
    unpacked.mkdir(parents=True)
    assert wheeltree.install_record(unpacked) == {"merkle-root": t.root, "wheel-sha256": sha}
    assert wheeltree.install_record(tmp_path / "not-a-cache-entry") == {}
    # a tree file edited in place is not loaded (its root no longer matches its leaves) ...
    p = wheeltree.tree_path(cache, sha)
    p.write_bytes(p.read_bytes().replace(t.files["beta/__init__.py"].encode(), b"0" * 64))
    assert wheeltree.load(cache, sha) is None
    # ... and a tree for another wheel is not taken for this one
    other = FileTree("x.whl", "cd" * 32, {"a": H(b"a").hex()})
    p.write_bytes(other.to_json())
    assert wheeltree.load(cache, sha) is None
    # a cached wheel whose bytes no longer match its sha256 gives no tree
    p.unlink()
    (d / w.name).write_bytes(w.read_bytes() + b"junk")
    assert wheeltree.ensure_tree(cache, sha) is None


# --------------------------------------------------------------------------- the lock root

def _lock() -> Lock:
    f = FileEntry("idna-3.7-py3-none-any.whl", "http://127.0.0.1:1/files/idna-3.7-py3-none-any.whl", "1" * 64, 66)
    return Lock(requires_python=">=3.9", content_hash="sha256:" + "0" * 64, packages=[
        LockedPackage("idna", "3.7", {"registry": "http://127.0.0.1:1/simple/"}, wheels=[f]),
        LockedPackage("app", "0.1.0", {"virtual": "."}, dependencies=[Dependency("idna", "3.7")]),
    ])


def _doc(lock: Lock) -> dict:
    return tomllib.loads(dumps(lock))


def test_lock_leaves_are_header_plus_one_per_package():
    doc = _doc(_lock())
    leaves = dict(lock_leaves(doc))
    assert set(leaves) == {"lock", "package/app/0.1.0", "package/idna/3.7"}
    head = {k: v for k, v in doc.items() if k != "package"}
    assert leaves["lock"] == H(canonical_json(head))
    idna = [p for p in doc["package"] if p["name"] == "idna"][0]
    assert leaves["package/idna/3.7"] == H(json.dumps(idna, sort_keys=True, separators=(",", ":")).encode())
    assert lock_root(doc) == merkle_root(lock_leaves(doc)).hex()


def test_lock_root_ignores_order_and_signature_but_sees_every_edit():
    doc = _doc(_lock())
    r = lock_root(doc)
    assert lock_root({**doc, "package": list(reversed(doc["package"]))}) == r
    assert lock_root({**doc, "signature": {"root": "x"}}) == r

    def edited(fn) -> str:
        d = _doc(_lock())
        fn(d)
        return lock_root(d)

    idna = lambda d: [p for p in d["package"] if p["name"] == "idna"][0]  # noqa: E731
    roots = {
        edited(lambda d: idna(d).update(version="3.8")),
        edited(lambda d: idna(d)["wheels"][0].update(url="http://127.0.0.1:2/evil.whl")),
        edited(lambda d: idna(d)["wheels"][0].update(sha256="2" * 64)),
        edited(lambda d: idna(d)["wheels"][0].update(size=67)),
        edited(lambda d: idna(d).update(marker='sys_platform == "linux"')),
        edited(lambda d: d["package"].append({"name": "evil", "version": "1"})),
        edited(lambda d: d["package"][0]["dependencies"][0].update(version="3.6")),
        edited(lambda d: d.update({"requires-python": ">=3.8"})),
    }
    assert r not in roots and len(roots) == 8


def test_lock_leaves_refuse_duplicates_and_nameless_packages():
    doc = _doc(_lock())
    with pytest.raises(ValueError, match="two"):
        lock_leaves({**doc, "package": doc["package"] + [doc["package"][1]]})
    with pytest.raises(ValueError, match="name"):
        lock_leaves({**doc, "package": [{"version": "1"}]})


def test_the_cache_stores_the_tree_when_a_wheel_enters_the_unpacked_store(tmp_path):
    from pypm.cache import Cache

    w = build_wheel(tmp_path, "gamma", "3.0", data={"scripts/g": b"#!python\nprint(1)\n"})
    entry = FileEntry(w.name, w.as_uri(), _sha(w), w.stat().st_size)
    with Cache(tmp_path / "cache") as cache:
        unpacked = cache.unpack(entry, package="gamma")
        stored = wheeltree.load(cache.root, entry.sha256)
        assert stored == wheeltree.tree_of_wheel(w, wheel_sha256=entry.sha256)
        assert wheeltree.tree_path(cache.root, entry.sha256).parent == cache.wheel_path(entry.sha256, w.name).parent
        # an edit of the unpacked store later (e.g. through a hard link in a venv) does not reach the tree
        (unpacked / "gamma" / "__init__.py").write_text("evil = 1\n")
        assert wheeltree.install_record(unpacked)["merkle-root"] == stored.root
