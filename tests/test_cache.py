"""pypm.cache against a real index on 127.0.0.1 and real wheels: verify, resume, refuse, share."""

from __future__ import annotations


import multiprocessing
from collections.abc import Iterator
import hashlib
import os
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from pypm.cache import Cache, FetcherMismatch
from pypm.wheelfile import extract_verified
from pypm.errors import IndexError_, InstallError, IntegrityError
from pypm.lockfile import FileEntry
from tests.support.dists import record_hash, sha256_file
from tests.support.fixtures import local_torch_wheel


def entry_for(path: Path, url: str | None = None) -> FileEntry:
    return FileEntry(path.name, url or path.as_uri(), sha256_file(path), path.stat().st_size)


def big_wheel(dists, name: str = "bigpkg", size: int = 3 << 20) -> Path:
    # random bytes do not compress: the wheel is about `size` bytes, enough to drop half-way
    return dists.wheel(name, "1.0", modules={f"{name}/__init__.py": "", f"{name}/blob.bin": os.urandom(size)})


def file_gets(idx, filename: str) -> list[dict[str, str]]:
    return [h for m, p, h in idx.requests_for(f"/files/{filename}") if m == "GET"]


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    c = Cache(tmp_path / "cache", base_dir=tmp_path)
    c.retry_delay = 0.01
    yield c
    c.close()


# --------------------------------------------------------------------------- downloads

def test_fetch_verifies_and_stores_content_addressed(dists, index_server, cache):
    w = dists.wheel("alpha", "1.0")
    idx = index_server()
    e = entry_for(w, idx.file_url(w.name))
    p = cache.fetch(e, package="alpha")
    assert p == cache.root / "wheels" / e.sha256[:2] / e.sha256 / w.name
    assert p.read_bytes() == w.read_bytes()
    assert not list(p.parent.glob("*.part*"))
    # a second fetch is served from the cache: no request reaches the server
    before = len(file_gets(idx, w.name))
    assert Cache(cache.root).fetch(e) == p
    assert len(file_gets(idx, w.name)) == before == 1


def test_interrupted_download_is_resumed_with_range_by_the_next_run(dists, index_server, cache):
    w = big_wheel(dists)
    idx = index_server()
    e = entry_for(w, idx.file_url(w.name))
    idx.drop_after(w.name, 400_000, times=None)  # every attempt of this run dies after 400 kB
    with pytest.raises(IndexError_) as ei:
        cache.fetch(e, package="bigpkg")
    assert "bigpkg" in str(ei.value) and "partial download is kept" in str(ei.value)
    part = cache.wheel_path(e.sha256, w.name).with_name(w.name + ".part")
    have = part.stat().st_size
    assert 400_000 <= have < e.size
    assert not cache.wheel_path(e.sha256, w.name).exists()  # never mistaken for complete

    idx.reset_faults()
    idx.clear_requests()
    p = Cache(cache.root).fetch(e, package="bigpkg")  # "the next run"
    assert sha256_file(p) == e.sha256
    gets = file_gets(idx, w.name)
    assert len(gets) == 1
    hdrs = {k.lower(): v for k, v in gets[0].items()}
    assert hdrs["range"] == f"bytes={have}-"
    assert hdrs.get("if-range")  # the validator saved from the first response
    assert not part.exists()


@pytest.mark.parametrize("saved", ['["x"]', '{"validator": 5}', "{broken"])
def test_a_damaged_resume_record_does_not_break_the_next_fetch(dists, index_server, cache, saved):
    w = dists.wheel("smallpkg", "1.0", modules={"smallpkg/__init__.py": "X = 1\n" * 1000})
    idx = index_server()
    e = entry_for(w, idx.file_url(w.name))
    final = cache.wheel_path(e.sha256, w.name)
    final.parent.mkdir(parents=True, exist_ok=True)
    final.with_name(w.name + ".part").write_bytes(w.read_bytes()[:100])
    final.with_name(w.name + ".part.json").write_text(saved)
    assert sha256_file(cache.fetch(e, package="smallpkg")) == e.sha256


def test_a_dropped_connection_is_resumed_within_the_same_run(dists, index_server, cache):
    w = big_wheel(dists, "midpkg", 2 << 20)
    idx = index_server()
    e = entry_for(w, idx.file_url(w.name))
    idx.drop_after(w.name, 1 << 20, times=1)
    p = cache.fetch(e, package="midpkg")
    assert sha256_file(p) == e.sha256
    gets = file_gets(idx, w.name)
    assert len(gets) == 2 and "range" not in {k.lower() for k in gets[0]}
    assert {k.lower(): v for k, v in gets[1].items()}["range"] == f"bytes={1 << 20}-"
    assert any("resumed" in ev for ev in cache.events)


def test_altered_bytes_are_refused_naming_package_file_and_both_hashes(dists, index_server, cache):
    w = dists.wheel("beta", "2.0")
    idx = index_server()
    e = entry_for(w, idx.file_url(w.name))
    idx.corrupt(w.name)
    with pytest.raises(IntegrityError) as ei:
        cache.fetch(e, package="beta")
    msg = str(ei.value)
    assert "beta" in msg and w.name in msg and e.sha256 in msg
    actual = msg.split("actual")[1].split()[0]
    assert len(actual) == 64 and actual != e.sha256
    d = cache.wheel_path(e.sha256, w.name).parent
    assert not any(d.iterdir())  # neither the file nor a .part that a resume would trust


def test_a_stale_part_that_does_not_verify_is_downloaded_again_from_zero(dists, index_server, cache):
    w = big_wheel(dists, "stale", 1 << 20)
    idx = index_server()
    e = entry_for(w, idx.file_url(w.name))
    part = cache.wheel_path(e.sha256, w.name).with_name(w.name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 1000)  # wrong prefix, no validator: the server honours the bare Range
    p = cache.fetch(e, package="stale")
    assert sha256_file(p) == e.sha256
    gets = file_gets(idx, w.name)
    assert len(gets) == 2 and "range" not in {k.lower() for k in gets[1]}


def test_corrupt_cached_file_is_discarded_and_fetched_again(dists, index_server, cache):
    w = dists.wheel("gamma", "1.0")
    idx = index_server()
    e = entry_for(w, idx.file_url(w.name))
    p = cache.fetch(e)
    os.chmod(p, 0o644)
    assert e.size is not None
    p.write_bytes(b"x" * e.size)  # same size, different bytes
    fresh = Cache(cache.root)
    assert fresh.fetch(e) == p and sha256_file(p) == e.sha256
    assert len(file_gets(idx, w.name)) == 2
    assert any("discarded corrupt" in ev for ev in fresh.events)


def test_a_file_where_a_wheel_entry_directory_goes_is_removed_and_the_wheel_fetched(dists, index_server, cache):
    # wheels/<fan>/<sha> is always a directory of pypm's making: a file there is damage, which
    # used to end the fetch in an internal FileExistsError
    w = dists.wheel("gamma", "1.0")
    idx = index_server()
    e = entry_for(w, idx.file_url(w.name))
    stray = cache.root / "wheels" / e.sha256[:2] / e.sha256
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"not a directory")
    p = cache.fetch(e, package="gamma")
    assert p == stray / w.name and sha256_file(p) == e.sha256
    assert any("a file where the cache keeps a directory" in ev for ev in cache.events)


@pytest.mark.parametrize("bad", ["", "TODO", "sha256:TODO", "0" * 63])
def test_missing_or_placeholder_hash_is_refused(cache, bad):
    e = FileEntry("x-1.0-py3-none-any.whl", "http://127.0.0.1:9/x.whl", bad, 10)
    with pytest.raises(IntegrityError) as ei:
        cache.fetch_many([("x", e)])
    assert "x" in str(ei.value) and "pypm lock --refresh" in str(ei.value)


@pytest.mark.parametrize("name", ["../../escape.whl", "a/b.whl", "..", ""])
def test_a_lock_filename_that_is_not_a_plain_name_is_refused(cache, name):
    from pypm.errors import LockError

    e = FileEntry(name, "http://127.0.0.1:9/x.whl", "a" * 64, 1)
    with pytest.raises(LockError, match="not a plain file name"):
        cache.fetch(e, package="sneaky")
    assert not (cache.root / "wheels").exists() or not any((cache.root / "wheels").rglob("*.whl"))


def test_http_404_is_an_index_error_naming_the_url(index_server, cache):
    idx = index_server([])
    e = FileEntry("nope-1.0-py3-none-any.whl", idx.file_url("nope-1.0-py3-none-any.whl"), "a" * 64, 3)
    with pytest.raises(IndexError_) as ei:
        cache.fetch(e, package="nope")
    assert "404" in str(ei.value) and "nope" in str(ei.value)


def test_offline_refuses_to_download(dists, index_server, tmp_path):
    w = dists.wheel("delta", "1.0")
    idx = index_server()
    with pytest.raises(IndexError_) as ei:
        Cache(tmp_path / "c", offline=True).fetch(entry_for(w, idx.file_url(w.name)), package="delta")
    assert "--offline" in str(ei.value)
    assert not idx.requests_for("/files/")


def test_local_files_are_copied_and_verified(dists, cache, tmp_path):
    w = dists.wheel("local", "1.0")
    by_uri = cache.fetch(entry_for(w))
    assert by_uri.read_bytes() == w.read_bytes() and by_uri.stat().st_ino != w.stat().st_ino
    rel = os.path.relpath(w, tmp_path)  # relative to the cache's base_dir
    assert Cache(tmp_path / "c2", base_dir=tmp_path).fetch(entry_for(w, rel)).read_bytes() == w.read_bytes()
    bad = FileEntry(w.name, w.as_uri(), "b" * 64, w.stat().st_size)
    with pytest.raises(IntegrityError) as ei:
        Cache(tmp_path / "c3").fetch(bad, package="local")
    assert "b" * 64 in str(ei.value) and sha256_file(w) in str(ei.value)
    short = FileEntry(w.name, w.as_uri(), sha256_file(w), w.stat().st_size + 1)
    with pytest.raises(IntegrityError) as ei:
        Cache(tmp_path / "c4").fetch(short, package="local")
    assert "size mismatch" in str(ei.value) and f"actual   {w.stat().st_size} bytes" in str(ei.value)
    missing = FileEntry("gone-1.0-py3-none-any.whl", str(tmp_path / "gone.whl"), "c" * 64, 1)
    with pytest.raises(InstallError, match="does not exist"):
        cache.fetch(missing, package="gone")


def test_fetchers_are_tried_first_and_their_output_is_verified(dists, index_server, cache):
    good = dists.wheel("viaplugin", "1.0")
    other = dists.wheel("liar", "1.0")
    idx = index_server()
    calls: list[tuple[str, str]] = []

    def fetcher(sha: str, filename: str, dest: Path) -> bool:
        calls.append((sha, filename))
        if filename == good.name:
            dest.write_bytes(good.read_bytes())
            return True
        dest.write_bytes(b"not the wheel")  # a lying cache: must be discarded and reported
        return True

    mism: list[FetcherMismatch] = []
    e1, e2 = entry_for(good, idx.file_url(good.name)), entry_for(other, idx.file_url(other.name))
    got = cache.fetch_many([("viaplugin", e1), ("liar", e2)], fetchers=[fetcher], on_mismatch=mism.append)
    assert {sha256_file(p) for p in got.values()} == {e1.sha256, e2.sha256}
    assert not file_gets(idx, good.name)  # served by the fetcher
    assert len(file_gets(idx, other.name)) == 1  # fetcher lied: fetched from the index
    assert len(mism) == 1 and mism[0].package == "liar" and mism[0].expected == e2.sha256
    assert mism[0].actual != e2.sha256 and len(calls) == 2


def test_fetch_many_downloads_in_parallel_and_fails_on_first_error(dists, index_server, cache):
    ws = [dists.wheel(f"p{i}", "1.0") for i in range(6)]
    idx = index_server()
    items = [(f"p{i}", entry_for(w, idx.file_url(w.name))) for i, w in enumerate(ws)]
    out = cache.fetch_many(items, progress=False)
    assert set(out) == {e.sha256 for _, e in items}
    assert all(sha256_file(out[e.sha256]) == e.sha256 for _, e in items)
    idx.corrupt(ws[0].name)
    fresh = [(f"q{i}", entry_for(dists.wheel(f"q{i}", "1.0"), None)) for i in range(2)]
    bad = ("p0", FileEntry(ws[0].name, idx.file_url(ws[0].name), "d" * 64, ws[0].stat().st_size))
    with pytest.raises(IntegrityError, match="p0"):
        Cache(cache.root.parent / "other").fetch_many([bad, *fresh], progress=False)


def test_fetch_many_reports_each_verified_wheel_as_it_lands(dists, index_server, cache):
    # sync unpacks each wheel from on_fetched while the others still download
    ws = [dists.wheel(f"r{i}", "1.0") for i in range(4)]
    idx = index_server()
    items = [(f"r{i}", entry_for(w, idx.file_url(w.name))) for i, w in enumerate(ws)]
    cache.fetch_many(items[:1], progress=False)  # one already in the cache: reported too
    seen: list[tuple[str, Path]] = []
    out = cache.fetch_many(items, progress=False, on_fetched=lambda sha, p: seen.append((sha, p)))
    assert sorted(seen) == sorted(out.items())
    assert all(sha256_file(p) == sha for sha, p in seen)  # only verified bytes are reported
    idx.corrupt(ws[1].name)
    bad = ("r1", FileEntry(ws[1].name, idx.file_url(ws[1].name), "e" * 64, ws[1].stat().st_size))
    late: list[str] = []
    with pytest.raises(IntegrityError, match="r1"):
        Cache(cache.root.parent / "other2").fetch_many([bad], progress=False, on_fetched=lambda s, p: late.append(s))
    assert late == []  # a download that does not verify is never handed on


def test_progress_bars_go_to_stderr_and_do_not_break_fetching(dists, index_server, cache, capsys):
    w = big_wheel(dists, "shown", 1 << 20)
    idx = index_server()
    e = entry_for(w, idx.file_url(w.name))
    assert sha256_file(cache.fetch_many([("shown", e)], progress=True)[e.sha256]) == e.sha256
    assert capsys.readouterr().out == ""  # stdout belongs to the command being run


def _fetch_in_child(root: str, e: FileEntry) -> tuple[str, str, str]:
    c = Cache(Path(root))
    p = c.fetch(e, package="shared")
    u = c.unpack(e, package="shared")
    return str(p), sha256_file(p), str(u)


def test_eight_processes_fetching_one_wheel_yield_one_good_file(dists, index_server, tmp_path):
    w = big_wheel(dists, "shared", 2 << 20)
    idx = index_server()
    e = entry_for(w, idx.file_url(w.name))
    root = tmp_path / "shared-cache"
    with multiprocessing.get_context("fork").Pool(8) as pool:
        results = pool.starmap(_fetch_in_child, [(str(root), e)] * 8)
    assert len({r[0] for r in results}) == 1 and {r[1] for r in results} == {e.sha256}
    assert len({r[2] for r in results}) == 1
    assert len(file_gets(idx, w.name)) == 1  # the entry lock let one process download it
    entry_dir = Path(results[0][0]).parent
    assert sorted(p.name for p in entry_dir.iterdir()) == sorted([w.name, "merkle.json"])  # + its Merkle tree
    assert not [p for p in (root / "unpacked").rglob(".tmp-*")]


_CTRL_C_CHILD = """
import sys, json
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from pypm.cache import Cache
from pypm.lockfile import FileEntry
items = [(n, FileEntry(**e)) for n, e in json.loads(sys.argv[3])]
print("started", flush=True)
try:
    Cache(Path(sys.argv[2])).fetch_many(items, progress=False)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


def test_ctrl_c_stops_fetch_many_even_while_waiting_for_another_process(dists, index_server, tmp_path):
    import json as _json

    a, b = dists.wheel("free", "1.0"), dists.wheel("busy", "1.0")
    idx = index_server()
    ea, eb = entry_for(a, idx.file_url(a.name)), entry_for(b, idx.file_url(b.name))
    root = tmp_path / "c"
    lockfile = root / "locks" / eb.sha256[:2] / f"{eb.sha256}.lock"
    lockfile.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, filelock; l = filelock.FileLock(sys.argv[1]); "
                               "l.acquire(); print('held', flush=True); time.sleep(60)", str(lockfile)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "held"
        items = [[n, {"filename": e.filename, "url": e.url, "sha256": e.sha256, "size": e.size}]
                 for n, e in (("free", ea), ("busy", eb))]
        child = subprocess.Popen([sys.executable, "-c", _CTRL_C_CHILD, str(Path(__file__).resolve().parents[1]),
                                  str(root), _json.dumps(items)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 20
        while not Cache(root).wheel_path(ea.sha256, a.name).exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # the free wheel arrives; the busy one waits on the other process's lock
        time.sleep(0.3)
        child.send_signal(2)
        out, err = child.communicate(timeout=10)  # returns promptly although the lock is still held
        assert child.returncode == 130 and "interrupted" in out, err
        assert not Cache(root).wheel_path(eb.sha256, b.name).exists()
    finally:
        holder.kill()
        holder.wait()


def _sync_like_child(root: str, items: list[tuple[str, FileEntry]]) -> dict[str, str]:
    c = Cache(Path(root))
    got = c.fetch_many(items, progress=False)
    trees = c.unpack_many(items, got)
    return {sha: str(t) for sha, t in trees.items()}


def test_eight_processes_with_overlapping_sets_share_one_cache_without_corruption(dists, index_server, tmp_path):
    ws = [big_wheel(dists, f"ov{i}", 300_000) for i in range(4)]
    idx = index_server()
    es = [(f"ov{i}", entry_for(w, idx.file_url(w.name))) for i, w in enumerate(ws)]
    sets = [[es[j % 4] for j in range(k, k + 3)] for k in range(8)]  # every process wants 3 of the 4
    root = tmp_path / "shared"
    with multiprocessing.get_context("fork").Pool(8) as pool:
        results = pool.starmap(_sync_like_child, [(str(root), s) for s in sets])
    for (name, e), w in zip(es, ws):
        trees = {r[e.sha256] for r in results if e.sha256 in r}
        assert len(trees) == 1
        with zipfile.ZipFile(w) as zf:
            for n in zf.namelist():
                assert (Path(next(iter(trees))) / n).read_bytes() == zf.read(n)
        assert len(file_gets(idx, w.name)) == 1, name
    assert not list(root.rglob("*.part")) and not list(root.rglob(".tmp-*"))


# --------------------------------------------------------------------------- unpacking

def test_unpack_extracts_a_verified_tree(dists, cache):
    w = dists.wheel("tree", "1.0", modules={"tree/__init__.py": "x = 1\n", "tree/sub/m.py": "y = 2\n"},
                    data={"scripts/run": b"#!python\nprint(1)\n"})
    e = entry_for(w)
    u = cache.unpack(e, package="tree")
    assert u == cache.unpacked_path(e.sha256)
    assert (u / "tree" / "sub" / "m.py").read_text() == "y = 2\n"
    assert (u / "tree-1.0.data" / "scripts" / "run").stat().st_mode & stat.S_IXUSR
    assert (u / "tree-1.0.dist-info" / "RECORD").is_file()
    assert cache.unpack(e) == u  # complete entries are reused


def test_a_file_where_a_store_entry_goes_is_removed_and_the_wheel_unpacked(dists, cache):
    # unpacked/<fan>/<sha> likewise: the rename into place used to fail with NotADirectoryError
    w = dists.wheel("delta", "1.0", modules={"delta/__init__.py": "x = 1\n"})
    e = entry_for(w)
    stray = cache.unpacked_path(e.sha256)
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"not a directory")
    tree = cache.unpack(e, package="delta")
    assert tree == stray and (tree / "delta" / "__init__.py").read_text() == "x = 1\n"
    assert any("a file where the cache keeps a directory" in ev for ev in cache.events)


def test_parallel_unpack_matches_the_archive(dists, cache, monkeypatch):
    import pypm.wheelfile as pc

    monkeypatch.setattr(pc, "PARALLEL_MIN_BYTES", 1)  # force several threads on a small wheel
    mods = {f"many/m{i}.py": f"v = {i}\n" * (i + 1) for i in range(200)}
    w = dists.wheel("many", "1.0", modules=mods)
    u = cache.unpack(entry_for(w), package="many")
    with zipfile.ZipFile(w) as zf:
        for name in zf.namelist():
            assert (u / name).read_bytes() == zf.read(name)


def _zip(path: Path, members: dict[str, bytes], record: str | None = None, symlink: str | None = None) -> Path:
    """A hand-made wheel for cases the well-behaved builder cannot produce (symlinks)."""
    with zipfile.ZipFile(path, "w") as zf:
        rows = []
        for n, data in members.items():
            zf.writestr(n, data)
            rows.append(f"{n},{record_hash(data)},{len(data)}")
        if symlink:
            zi = zipfile.ZipInfo(symlink)
            zi.external_attr = (stat.S_IFLNK | 0o777) << 16
            zi.create_system = 3
            zf.writestr(zi, "/etc/passwd")
            rows.append(f"{symlink},{record_hash(b'/etc/passwd')},11")
        rows.append("evil-1.0.dist-info/RECORD,,")
        zf.writestr("evil-1.0.dist-info/RECORD", record if record is not None else "\n".join(rows) + "\n")
    return path


BASIC = {"evil/__init__.py": b"", "evil-1.0.dist-info/METADATA": b"Name: evil\nVersion: 1.0\n",
         "evil-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"}


def _unsafe_cases(dists, tmp: Path) -> dict[str, tuple[Path, type, str]]:
    return {
        "traversal": (dists.wheel("evil", "1.0", unsafe={"../../escaped.py": b"owned = 1\n"}), InstallError, "unsafe path"),
        "deep-traversal": (dists.wheel("evil", "1.1", unsafe={"evil/../../../escaped.py": b"1"}), InstallError,
                           "unsafe path"),
        "absolute": (dists.wheel("evil", "1.2", unsafe={"/tmp/escaped-abs.py": b"1"}), InstallError, "unsafe path"),
        "symlink": (_zip(tmp / "evil-1.3-py3-none-any.whl", BASIC, symlink="evil/link"), InstallError, "symlink"),
        "bad-hash": (dists.wheel("evil", "1.4", bad_record_hash_for="evil/__init__.py"), IntegrityError,
                     "does not match its RECORD hash"),
        "not-in-record": (_zip(tmp / "evil-1.5-py3-none-any.whl", BASIC,
                               record="evil/__init__.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\n"),
                          IntegrityError, "not listed in"),
        "record-lists-missing": (_zip(tmp / "evil-1.6-py3-none-any.whl", BASIC,
                                      record="".join(f"{n},{record_hash(d)},{len(d)}\n" for n, d in BASIC.items())
                                      + "evil/ghost.py,sha256=AAAA,1\nevil-1.0.dist-info/RECORD,,\n"),
                                 IntegrityError, "does not contain"),
        "no-hash": (_zip(tmp / "evil-1.7-py3-none-any.whl", BASIC,
                         record="".join(f"{n},,\n" for n in BASIC) + "evil-1.0.dist-info/RECORD,,\n"),
                    IntegrityError, "no acceptable hash"),
    }


@pytest.mark.parametrize("case", ["traversal", "deep-traversal", "absolute", "symlink", "bad-hash", "not-in-record",
                                  "record-lists-missing", "no-hash"])
def test_unsafe_wheels_are_refused_with_nothing_written_outside(case, dists, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    w, exc, words = _unsafe_cases(dists, work)[case]
    root = tmp_path / "deep" / "a" / "b" / "cache"
    root.mkdir(parents=True)  # `..` from inside the store would land in deep/a/b
    cache = Cache(root)
    e = entry_for(w)
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(exc) as ei:
        cache.unpack(e, package="evil")
    assert words in str(ei.value) and w.name in str(ei.value) and "evil" in str(ei.value)
    after = {p for p in tmp_path.rglob("*")}
    new = {p for p in after - before if root not in p.parents and p != root}
    assert not new, f"written outside the cache: {new}"
    assert not Path("/tmp/escaped-abs.py").exists()
    assert not cache.unpacked_path(e.sha256).exists()
    assert not list((root / "unpacked").rglob(".tmp-*"))  # the half-extracted tree was removed


def test_not_a_zip_is_an_integrity_error(tmp_path):
    bad = tmp_path / "junk-1.0-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(IntegrityError, match="not a valid wheel"):
        extract_verified(bad, tmp_path / "out", label="junk")


@pytest.mark.slow
def test_torch_wheel_unpacks_with_threads_in_seconds(tmp_path):
    torch = local_torch_wheel()
    if torch is None:
        pytest.skip("no CPU torch wheel on this machine (the find-links directory has none)")
    cache = Cache(tmp_path / "cache")
    # sha256 of a 190 MB file is itself part of what a first sync pays; keep it out of the timing
    e = FileEntry(torch.name, torch.as_uri(), sha256_file(torch), torch.stat().st_size)
    t0 = time.monotonic()
    u = cache.unpack(e, package="torch")
    took = time.monotonic() - t0
    try:
        with zipfile.ZipFile(torch) as zf:
            n = sum(1 for i in zf.infolist() if not i.is_dir())
        assert sum(1 for p in u.rglob("*") if p.is_file()) == n
        assert took < 60, f"unpacking torch took {took:.1f}s"
        print(f"torch: copy+verify+unpack {took:.1f}s")
    finally:
        import shutil

        shutil.rmtree(tmp_path / "cache", ignore_errors=True)


# --------------------------------------------------------------------------- maintenance

def test_prune_removes_partials_tmp_dirs_and_unused_entries(dists, cache):
    old_w, new_w = dists.wheel("old", "1.0"), dists.wheel("new", "1.0")
    eo, en = entry_for(old_w), entry_for(new_w)
    po, pn = cache.unpack(eo), cache.unpack(en)
    wo = cache.wheel_path(eo.sha256, old_w.name)
    part = cache.wheel_path("e" * 64, "x.whl").with_name("x.whl.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"partial")
    tmpdir = cache.root / "unpacked" / "ff" / (".tmp-" + "f" * 64 + "-1-2")
    tmpdir.mkdir(parents=True)
    long_ago = time.time() - 40 * 86400
    os.utime(po, (long_ago, long_ago))
    os.utime(wo.parent, (long_ago, long_ago))
    removed = cache.prune(max_age_days=30)
    assert not po.exists() and not wo.exists() and not part.exists() and not tmpdir.exists()
    assert pn.exists() and cache.wheel_path(en.sha256, new_w.name).exists()
    assert part in removed and tmpdir in removed
    # an extraction under way (its entry lock held by another process) is left alone
    busy = cache.root / "unpacked" / "ab" / (".tmp-" + "ab" * 32 + "-9-9")
    busy.mkdir(parents=True)
    (cache.root / "locks" / "ab").mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, filelock; l = filelock.FileLock(sys.argv[1]); "
                               "l.acquire(); print('held', flush=True); time.sleep(30)",
                               str(cache.root / "locks" / "ab" / ("ab" * 32 + ".lock"))],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "held"
        cache.prune(max_age_days=0)
        assert busy.exists()
    finally:
        holder.kill()
        holder.wait()
    cache.prune(max_age_days=30)
    assert not busy.exists()


def test_cache_command_dir_clean_prune(tmp_path):
    env = {**os.environ, "PYPM_CACHE_DIR": str(tmp_path / "c")}
    (tmp_path / "c" / "wheels").mkdir(parents=True)
    run = lambda *a: subprocess.run([sys.executable, "-m", "pypm", "cache", *a], env=env,  # noqa: E731
                                    capture_output=True, text=True)
    r = run("dir")
    assert r.returncode == 0 and r.stdout.strip() == str(tmp_path / "c")
    r = run("prune", "--days", "1")
    assert r.returncode == 0 and "pruned 0 entries" in r.stderr
    for bad in ("-1", "nan", "inf"):  # would prune everything (or nothing) without saying why
        r = run("prune", "--days", bad)
        assert r.returncode == 2 and f"--days {bad}: must be a number of days" in r.stderr, r.stderr
    r = run("clean")
    assert r.returncode == 0 and not any((tmp_path / "c").iterdir())


def test_a_cache_directory_that_cannot_be_made_is_named(tmp_path):
    """PYPM_CACHE_DIR naming a file, or a file where a cache directory goes: an InstallError naming
    the path (was an internal NotADirectoryError/FileExistsError), and `cache clean` refuses to
    touch a file."""
    (tmp_path / "afile").write_text("x")
    entry = FileEntry("a-1.0-py3-none-any.whl", "http://127.0.0.1:9/a.whl", "ab" * 32, 1)
    for root in (tmp_path / "afile", tmp_path / "c"):
        if root.name == "c":
            (root / "locks").mkdir(parents=True)
            (root / "locks" / "ab").write_text("")  # a file where the entry's lock directory goes
        c = Cache(root)
        with pytest.raises(InstallError, match="cannot make the cache directory") as e:
            c.fetch(entry)
        assert "PYPM_CACHE_DIR" in (e.value.hint or "")
        c.close()
    env = {**os.environ, "PYPM_CACHE_DIR": str(tmp_path / "afile")}
    r = subprocess.run([sys.executable, "-m", "pypm", "cache", "clean"], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "is not a directory" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (tmp_path / "afile").read_text() == "x"


def test_record_parse_rejects_malformed_rows():
    from pypm.wheelfile import parse_record

    assert parse_record("a,sha256=x,1\nb,,\n") == [("a", "sha256=x", "1"), ("b", "", "")]
    with pytest.raises(ValueError):
        parse_record("a,b\n")





def test_prune_removes_old_install_manifests_and_sync_recipes_with_their_entries(dists, cache):
    """An entry's install manifest goes with it; a sync recipe unused for the age goes too."""
    from pypm.syncrecipe import recipe_path, write_recipe

    w = dists.wheel("gone", "1.0")
    e = entry_for(w)
    p = cache.unpack(e)
    manifest = p.with_name(p.name + ".install.json")
    assert manifest.is_file()
    write_recipe(cache.root, cache.root / "old-project", {"version": 1}, [("gone", "1.0", e.sha256, w.name)])
    write_recipe(cache.root, cache.root / "new-project", {"version": 1}, [("gone", "1.0", e.sha256, w.name)])
    old_recipe = Path(recipe_path(cache.root, cache.root / "old-project"))
    long_ago = time.time() - 40 * 86400
    os.utime(p, (long_ago, long_ago))
    os.utime(old_recipe, (long_ago, long_ago))
    removed = cache.prune(max_age_days=30)
    assert not p.exists() and not manifest.exists() and p in removed
    assert old_recipe in removed and not old_recipe.exists()
    assert Path(recipe_path(cache.root, cache.root / "new-project")).is_file()


@pytest.mark.parametrize("where", ["edits", "script-meta/ab"])
def test_prune_removes_old_edit_records_and_script_blocks(cache, where):
    """A killed add's record (pypm.editjournal) whose project was never used again, and a script's
    block as read (pypm.script.META_DIR), go when older than the age; a newer one stays."""
    d = cache.root / where
    d.mkdir(parents=True)
    old, new = d / ("ab" + "0" * 62 + ".json"), d / ("ab" + "1" * 62 + ".json")
    for f in (old, new):
        f.write_text('{"meta": null}')
    long_ago = time.time() - 40 * 86400
    os.utime(old, (long_ago, long_ago))
    removed = cache.prune(max_age_days=30)
    assert old in removed and not old.exists() and new.is_file()


def test_entry_lock_excludes_filelock_holders_and_refuses_a_planted_symlink(tmp_path):
    """pypm's own flock (cache._EntryLock) and filelock's lock on the same file exclude each other,
    across processes and within one; a symlink planted at the lock's path is not followed."""
    import errno

    import filelock

    from pypm.cache import _EntryLock

    path = tmp_path / "e.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, filelock; l = filelock.FileLock(sys.argv[1]); "
                               "l.acquire(); print('held', flush=True); sys.stdin.readline()", str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "held"
        ours = _EntryLock(str(path))
        t0 = time.monotonic()
        assert ours.acquire(timeout=0) is False and ours.acquire(timeout=0.2) is False
        assert time.monotonic() - t0 >= 0.2
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(10)
        assert ours.acquire(timeout=5) is True
        other = filelock.FileLock(str(path))
        with pytest.raises(filelock.Timeout):
            other.acquire(timeout=0)
        assert _EntryLock(str(path)).acquire(timeout=0) is False  # a second descriptor in this process
        ours.release()
        other.acquire(timeout=0)
        other.release()
    finally:
        holder.kill()
    target = tmp_path / "victim"
    target.write_bytes(b"keep")
    (tmp_path / "planted.lock").symlink_to(target)
    with pytest.raises(OSError) as e:
        _EntryLock(str(tmp_path / "planted.lock")).acquire(timeout=0)
    assert e.value.errno == errno.ELOOP and target.read_bytes() == b"keep"


def test_a_local_copy_is_hashed_as_written_across_chunks(tmp_path):
    from pypm.cache import _copy_hashing

    src = tmp_path / "big.bin"
    data = os.urandom((9 << 20) + 123)  # three chunks of the copy, the last one short
    src.write_bytes(data)
    digest, size = _copy_hashing(src, tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == data
    assert (digest, size) == (hashlib.sha256(data).hexdigest(), len(data))
    with pytest.raises(FileNotFoundError):
        _copy_hashing(tmp_path / "nope.bin", tmp_path / "x.bin")


def test_downloads_start_biggest_and_smallest_in_turn() -> None:
    from pypm.cache import download_order

    def item(size: int | None) -> tuple[str, FileEntry]:
        return f"p{size}", FileEntry(f"p{size}-1.0-py3-none-any.whl", "http://127.0.0.1:9/x.whl", "a" * 64, size)

    order = [e.size for _, e in download_order([item(s) for s in (5, 100, 1, 40, 7, 60, None)])]
    assert order == [100, None, 60, 1, 40, 5, 7]  # (an unknown size counts as the smallest)
    assert [e.size for _, e in download_order([item(3), item(9)])] == [9, 3]
    assert download_order([]) == [] and [e.size for _, e in download_order([item(4)])] == [4]
