"""pypm.index against a real index on 127.0.0.1, file:// indexes and find-links directories."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
import hashlib
import http.server
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pypm import simpleapi
from pypm.errors import IndexError_, IntegrityError
from pypm.resolver import ResolveOptions, RootSpec, resolve
from pypm.index import (
    CoreMetadata,
    DistFile,
    IndexClient,
    PackageNotFound,
    SdistMetadataUnsupported,
    parse_core_metadata,
    parse_filename,
)
from tests.support.dists import DistFactory
from tests.support.fixtures import canary_wheels_dir
from tests.support.index_server import IndexServer, write_static_index

CLOSED_PORT_URL = "http://127.0.0.1:9/simple/"


@pytest.fixture
def client_factory(tmp_path: Path) -> Iterator:
    """`make(index_urls, find_links=(), **kw)` -> IndexClient with a per-test cache; all closed at the end."""
    made: list[IndexClient] = []

    def make(index_urls: list[str], find_links: Sequence[str] = (), **kw: object) -> IndexClient:
        kw.setdefault("cache_dir", tmp_path / "cache")
        c = IndexClient(list(index_urls), list(find_links), **kw)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def _paths(idx: IndexServer, method: str = "GET") -> list[str]:
    return [p for m, p, _h in idx.requests if m == method]


def _file_downloads(idx: IndexServer, filename: str) -> list[dict[str, str]]:
    """Headers of every GET of the file itself (not its .metadata)."""
    return [h for m, p, h in idx.requests if m == "GET" and p == f"/files/{filename}"]


@pytest.fixture
def small_index(dists: DistFactory, index_server) -> IndexServer:
    dists.wheel("alpha", "1.0", requires_dist=["beta>=1", 'gamma; extra == "fast"'], provides_extra=["fast"],
                requires_python=">=3.8")
    dists.wheel("alpha", "2.0", requires_dist=["beta>=2"], requires_python=">=3.12,<4")
    dists.sdist("alpha", "2.0", requires_dist=["beta>=2"])
    dists.wheel("beta", "1.0")
    dists.wheel("beta", "2.0")
    return index_server(yanked={"beta-2.0-py3-none-any.whl": "broken build"},
                        requires_python={"alpha-2.0-py3-none-any.whl": ">=3.12,<4"})


# --------------------------------------------------------------------------- pages


def test_parse_filename_normalises_and_skips_legacy() -> None:
    assert parse_filename("Foo_Bar-1.0.0-py3-none-any.whl") == ("wheel", "foo-bar", "1.0.0")
    assert parse_filename("foo-bar-01.2.tar.gz") == ("sdist", "foo-bar", "1.2")
    assert parse_filename("foo-1.0.zip") == ("sdist", "foo", "1.0")
    for junk in ("foo-1.0-py3.8.egg", "foo-1.0.win32.exe", "foo-1.0.tar.bz2", "README.txt",
                 "foo-notaversion.tar.gz", "foo.whl", "foo-1.0-py3-none.whl"):
        assert parse_filename(junk) is None, junk


def test_parse_filename_agrees_with_packaging_on_wheel_names() -> None:
    # parse_filename hand-parses wheel names (speed); it must accept and normalise exactly as
    # packaging.utils.parse_wheel_filename does, bad names included.
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename
    from packaging.version import InvalidVersion

    names = ["a-1.0-py3-none-any.whl", "A.b_c-01.0-1-py3-none-any.whl", "a-1-1x-cp311-cp311-linux_x86_64.whl",
             "a__b-1-py3-none-any.whl", "a-1-x-py3-none-any.whl", "a-1--py3-none-any.whl",
             "a-bad!-py3-none-any.whl", "a-1-py3-none.whl", "a b-1-py3-none-any.whl",
             "a-1-2-3-py3-none-any.whl", "a-1.0.post1.dev2+local-py2.py3-none-any.whl", "-1-py3-none-any.whl"]
    for name in names * 2:  # twice: the second answer comes from the memo
        try:
            n, v, _b, _t = parse_wheel_filename(name)
            expected: tuple[str, str, str] | None = ("wheel", str(n), str(v))
        except (InvalidWheelFilename, InvalidVersion):
            expected = None
        assert parse_filename(name) == expected, name


def test_parse_filename_agrees_with_packaging_on_sdist_names() -> None:
    from packaging.utils import InvalidSdistFilename, parse_sdist_filename
    from packaging.version import InvalidVersion

    names = ["foo-1.0.tar.gz", "Foo_Bar-01.0.zip", "foo-bar-2.0rc1.tar.gz", "foo.bar-1!2.0.post3.dev4+x.tar.gz",
             "foo-notaversion.tar.gz", "foo.tar.gz", "foo-.zip", "foo--1.0.tar.gz", "foo-1.0-2.tar.gz",
             "A.B-1.0.ZIP", "foo-1.0.tar.gz.asc"]
    for name in names * 2:  # twice: the second answer comes from the memo
        try:
            n, v = parse_sdist_filename(name)
            expected: tuple[str, str, str] | None = ("sdist", str(n), str(v))
        except (InvalidSdistFilename, InvalidVersion):
            expected = None
        assert parse_filename(name) == expected, name


def test_page_urls_resolve_like_urljoin() -> None:
    from urllib.parse import urljoin

    from pypm.simpleapi import _join

    base = "https://example.test/simple/foo/"
    for url in ["https://files.test/a/foo-1.whl", "http://files.test/a/foo-1.whl#sha256=ab",
                "../../packages/foo-1.whl", "/p/foo-1.whl", "https://files.test/a?x=1", "https://f.test/a;p",
                "https://f.test/a b.whl", "https://f.test/a\tb.whl", "//other.test/foo-1.whl", "foo-1.whl"]:
        assert _join(base, url) == urljoin(base, url), url


def _junk_page_files() -> list:
    """A JSON page's files with every oddity the grouping must skip or keep, in a fixed order."""
    sha = "ab" * 32
    return [
        {"filename": "foo-1.0-py3-none-any.whl", "url": "https://f.test/foo-1.0-py3-none-any.whl",
         "hashes": {"sha256": sha}, "requires-python": ">=3.8", "core-metadata": {"sha256": sha}},
        "not an object", ["nor", "this"], {"url": "https://f.test/no-filename.whl"},
        {"filename": "foo-1.0.tar.gz"},  # no url
        {"filename": 7, "url": "https://f.test/x"}, {"filename": "foo-3.0.tar.gz", "url": None},
        {"filename": "foo-2.0-py3-none-any.whl", "url": "../../files/foo-2.0-py3-none-any.whl#sha256=" + sha,
         "yanked": "broken", "size": 10, "upload-time": "2024-01-01T00:00:00Z"},
        {"filename": "other-1.0-py3-none-any.whl", "url": "https://f.test/other-1.0-py3-none-any.whl"},
        {"filename": "foo-1.0.0.tar.gz", "url": "https://f.test/foo-1.0.0.tar.gz", "yanked": True},
        {"filename": "foo-1.0-py3-none-any.whl", "url": "https://f.test/dup.whl"},  # repeated name: first wins
        {"filename": "foo-1.0-py2.7.egg", "url": "https://f.test/foo-1.0-py2.7.egg"},
        {"filename": "foo-bad!-py3-none-any.whl", "url": "https://f.test/bad.whl"},
        {"filename": "foo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl",
         "url": "https://f.test/foo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "dist-info-metadata": True},
    ]


def test_releases_match_the_eager_parse_file_for_file() -> None:
    # Releases groups a page's files by release and builds them later; what it builds must be
    # what parsing every entry up front gave: same files, fields and order, first name winning.
    import json

    from pypm.simpleapi import JSON_TYPE, Releases, _dist_files, _page_entries

    page_url = "https://idx.test/simple/foo/"
    items = _junk_page_files()
    body = json.dumps({"meta": {"api-version": "1.1"}, "name": "foo",
                       "files": [i for i in items if isinstance(i, dict) and isinstance(i.get("url"), str)
                                 and isinstance(i.get("filename"), str)]}).encode()
    eager: list[DistFile] = []
    for f in _dist_files(_page_entries(body, JSON_TYPE, page_url), ("registry", "idx"), "foo"):
        if f.filename not in {e.filename for e in eager}:
            eager.append(f)
    rel = Releases("foo")
    rel.add_json(items, page_url, ("registry", "idx"))
    assert rel.versions() == ["1.0", "2.0", "1.0.0"]
    assert rel.all_files() == eager
    assert [f.url for f in rel.files("1.0")] == ["https://f.test/foo-1.0-py3-none-any.whl",
                                                  "https://f.test/foo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"]
    assert rel.files("2.0")[0].url == "https://idx.test/files/foo-2.0-py3-none-any.whl"
    assert rel.files("9.9") == []
    # Two texts of one version (1.0 and 1.0.0) come back in the order served.
    assert [f.filename for f in rel.files_of(["1.0.0", "1.0"])] == [
        "foo-1.0-py3-none-any.whl", "foo-1.0.0.tar.gz", "foo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"]
    # A later source adds only names not seen yet (find-links after the index).
    local = DistFile(name="foo", version="2.0", filename="foo-2.0.tar.gz", url="file:///w/foo-2.0.tar.gz",
                     kind="sdist", sha256=None, size=1, requires_python=None, yanked=None, metadata_sha256=None,
                     has_metadata=False, upload_time=None, source=("find-links", "/w"))
    rel2 = Releases("foo")
    rel2.add_json(items, page_url, ("registry", "idx"))
    rel2.add_files([rel.files("2.0")[0], local])
    assert rel2.files("2.0") == [rel.files("2.0")[0], local]


def test_releases_build_only_the_release_asked_for(monkeypatch) -> None:
    from pypm.simpleapi import Releases

    built: list[str] = []
    real = simpleapi._json_entry

    def counted(fields, url):
        built.append(fields[0])
        return real(fields, url)

    monkeypatch.setattr(simpleapi, "_json_entry", counted)
    rel = Releases("foo")
    rel.add_json(_junk_page_files(), "https://idx.test/simple/foo/", ("registry", "idx"))
    assert built == []  # grouping makes no entry and no DistFile
    first = rel.files("2.0")
    assert built == ["foo-2.0-py3-none-any.whl"]
    assert rel.files("2.0") is first and len(built) == 1  # built once: the resolver keeps per-file facts by identity


@pytest.mark.parametrize("json_api", [True, False], ids=["pep691-json", "pep503-html"])
def test_project_releases_agree_with_project_files(small_index: IndexServer, client_factory, json_api: bool) -> None:
    small_index.options.json = json_api
    c = client_factory([small_index.url])
    rel = c.project_releases("Alpha")
    assert rel.name == "alpha" and rel.versions() == ["1.0", "2.0"]
    files = c.project_files("alpha")
    assert [f for v in rel.versions() for f in rel.files(v)] == files
    assert {f.filename for f in rel.files("2.0")} == {"alpha-2.0-py3-none-any.whl", "alpha-2.0.tar.gz"}


@pytest.mark.parametrize("json_api", [True, False], ids=["pep691-json", "pep503-html"])
def test_project_files_records_every_field(small_index: IndexServer, client_factory, json_api: bool) -> None:
    small_index.options.json = json_api
    c = client_factory([small_index.url])
    files = {f.filename: f for f in c.project_files("Alpha")}
    assert set(files) == {"alpha-1.0-py3-none-any.whl", "alpha-2.0-py3-none-any.whl", "alpha-2.0.tar.gz"}
    w1 = files["alpha-1.0-py3-none-any.whl"]
    d1 = small_index.dist(w1.filename)
    assert (w1.name, w1.version, w1.kind) == ("alpha", "1.0", "wheel")
    assert w1.url == small_index.file_url(w1.filename)  # no #sha256 fragment
    assert w1.sha256 == d1.sha256
    assert w1.requires_python == ">=3.8"
    assert files["alpha-2.0-py3-none-any.whl"].requires_python == ">=3.12,<4"  # HTML-escaped '<' survives
    assert w1.yanked is None
    assert w1.has_metadata and w1.metadata_sha256 == d1.metadata_sha256
    assert files["alpha-2.0.tar.gz"].kind == "sdist" and not files["alpha-2.0.tar.gz"].has_metadata
    assert w1.source == ("registry", small_index.url)
    if json_api:
        assert w1.size == d1.size and w1.upload_time == d1.upload_time
    else:
        assert w1.size is None
    beta = {f.version: f for f in c.project_files("beta")}
    assert beta["2.0"].yanked == "broken build" and beta["1.0"].yanked is None
    accept = small_index.requests_for("/simple/alpha/")[0][2]["Accept"]
    assert "application/vnd.pypi.simple.v1+json" in accept and "text/html;q=" in accept


def test_yanked_without_reason_is_empty_string(dists: DistFactory, index_server, client_factory) -> None:
    dists.wheel("delta", "1.0")
    for json_api in (True, False):
        idx = index_server(yanked={"delta-1.0-py3-none-any.whl": ""}, json=json_api)
        (f,) = client_factory([idx.url], cache_dir=Path(str(dists.dir) + f"-cache-{json_api}")).project_files("delta")
        assert f.yanked == ""


def test_unknown_project_is_not_found_without_retries(small_index: IndexServer, client_factory, tmp_path) -> None:
    c = client_factory([small_index.url], [str(tmp_path / "links")], warn=lambda m: None)
    (tmp_path / "links").mkdir()
    with pytest.raises(PackageNotFound) as e:
        c.project_files("no-such-thing")
    assert "Package `no-such-thing` was not found in" in str(e.value)
    assert small_index.url in str(e.value) and str(tmp_path / "links") in str(e.value)
    assert e.value.hint
    assert len(small_index.requests_for("/simple/no-such-thing/")) == 1  # a 404 is an answer, not retried


def test_non_normalised_name_follows_redirect(small_index: IndexServer, client_factory) -> None:
    c = client_factory([small_index.url])
    assert {f.name for f in c.project_files("ALPHA")} == {"alpha"}
    assert c.project_files("alpha") == c.project_files("Alpha")


def test_two_indexes_merge_first_wins(dists: DistFactory, index_server, client_factory, tmp_path) -> None:
    shared = dists.wheel("eps", "1.0")
    other = DistFactory(tmp_path / "other")
    other.wheel("eps", "2.0")
    other_shared = other.dir / shared.name
    other_shared.write_bytes(shared.read_bytes())
    first = index_server([shared])
    second = index_server([other.dir])
    files = client_factory([first.url, second.url]).project_files("eps")
    assert [(f.filename, f.source[1]) for f in files] == [
        ("eps-1.0-py3-none-any.whl", first.url), ("eps-2.0-py3-none-any.whl", second.url)]


# --------------------------------------------------------------------------- metadata


def test_pep658_metadata_used_without_wheel_download(small_index: IndexServer, client_factory) -> None:
    c = client_factory([small_index.url])
    w = next(f for f in c.project_files("alpha") if f.filename == "alpha-1.0-py3-none-any.whl")
    meta = c.metadata(w)
    assert meta == CoreMetadata(name="alpha", version="1.0", requires_dist=("beta>=1", 'gamma; extra == "fast"'),
                                requires_python=">=3.8", provides_extra=("fast",))
    assert "/files/alpha-1.0-py3-none-any.whl.metadata" in _paths(small_index)
    assert _file_downloads(small_index, w.filename) == []


def test_metadata_hash_mismatch_is_integrity_error(small_index: IndexServer, client_factory) -> None:
    small_index.corrupt_metadata("alpha-1.0-py3-none-any.whl")
    c = client_factory([small_index.url])
    w = next(f for f in c.project_files("alpha") if f.version == "1.0")
    with pytest.raises(IntegrityError) as e:
        c.metadata(w)
    msg = str(e.value)
    assert "alpha-1.0-py3-none-any.whl" in msg and w.metadata_sha256 in msg
    actual = msg.split("got ")[1].split()[0]
    assert len(actual) == 64 and actual != w.metadata_sha256


def _wheel_with_big_central_directory(dists: DistFactory) -> Path:
    # ~2500 members: the central directory and RECORD alone exceed the 64 KiB tail, so reading
    # METADATA needs more than one range request.
    modules = {f"zeta/sub_module_with_a_rather_long_name_{i:05d}.py": f"X = {i}\n" for i in range(2500)}
    return dists.wheel("zeta", "1.0", requires_dist=["beta"], modules=modules)


def test_range_requests_when_index_has_no_metadata_file(dists: DistFactory, index_server, client_factory) -> None:
    wheel = _wheel_with_big_central_directory(dists)
    assert wheel.stat().st_size > 3 * 64 * 1024
    idx = index_server(pep658=False)
    c = client_factory([idx.url])
    (w,) = c.project_files("zeta")
    assert not w.has_metadata
    meta = c.metadata(w)
    assert meta.requires_dist == ("beta",) and meta.version == "1.0"
    gets = _file_downloads(idx, wheel.name)
    assert len(gets) >= 2, "the tail, then the part of the zip holding METADATA"
    assert all("Range" in h for h in gets), "no request may download the whole wheel"
    assert gets[0]["Range"] == "bytes=-65536"
    assert "/files/zeta-1.0-py3-none-any.whl.metadata" not in _paths(idx)


def test_metadata_file_missing_falls_back_to_wheel(small_index: IndexServer, client_factory) -> None:
    c = client_factory([small_index.url])
    w = next(f for f in c.project_files("beta") if f.version == "1.0")
    small_index.options.pep658 = False  # the page said "has metadata", the file is gone (404)
    assert c.metadata(w).name == "beta"
    assert any("Range" in h for h in _file_downloads(small_index, w.filename))


def _needs_gamma() -> RootSpec:
    return RootSpec(name="proj", requires_python=f">={sys.version_info[0]}.{sys.version_info[1]}",
                    dependencies=["gamma"], optional_dependencies={}, dependency_groups={})


def _host_wheel_tag() -> str:
    py = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    return f"{py}-{py}-manylinux_2_17_{os.uname().machine}"


@pytest.mark.skipif(sys.platform != "linux" or sys.implementation.name != "cpython",
                    reason="the host wheel's tag is written for CPython on Linux")
def test_resolution_reads_metadata_from_the_wheel_this_machine_would_install(
        dists: DistFactory, index_server, client_factory) -> None:
    # No PEP 658 files: the metadata is read from one wheel through Range requests. It is the
    # one a sync here installs (the file a CDN or caching proxy most likely holds), not the
    # first by name (a macOS wheel) nor the smaller pure one.
    py = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    big = {f"gamma/m{i}.py": "X = 1\n" * 50 for i in range(20)}
    foreign = dists.wheel("gamma", "1.0", tag=f"{py}-{py}-macosx_11_0_arm64", modules=big)
    host = dists.wheel("gamma", "1.0", tag=_host_wheel_tag(), modules=big)
    pure = dists.wheel("gamma", "1.0")
    assert pure.stat().st_size < host.stat().st_size
    dists.wheel("beta", "1.0")
    idx = index_server(pep658=False)
    c = client_factory([idx.url])
    res = resolve(c, _needs_gamma(), ResolveOptions())
    assert ("gamma", "1.0") in res.nodes
    assert _file_downloads(idx, host.name), "the host's wheel is read"
    assert all("Range" in h for h in _file_downloads(idx, host.name))
    assert _file_downloads(idx, foreign.name) == [] and _file_downloads(idx, pure.name) == []


def test_resolution_reads_metadata_from_a_pure_wheel_before_another_platforms(
        dists: DistFactory, index_server, client_factory) -> None:
    py = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    foreign = [dists.wheel("gamma", "1.0", tag=f"{py}-{py}-{plat}") for plat in ("macosx_11_0_arm64", "win_amd64")]
    pure = dists.wheel("gamma", "1.0", tag="py3-none-any")
    idx = index_server(pep658=False)
    c = client_factory([idx.url])
    resolve(c, _needs_gamma(), ResolveOptions())
    assert _file_downloads(idx, pure.name)
    assert all(_file_downloads(idx, f.name) == [] for f in foreign)


def test_sdist_uses_wheel_metadata_of_same_version(small_index: IndexServer, client_factory) -> None:
    c = client_factory([small_index.url])
    sd = next(f for f in c.project_files("alpha") if f.kind == "sdist")
    assert c.metadata(sd).requires_dist == ("beta>=2",)
    assert _file_downloads(small_index, "alpha-2.0.tar.gz") == []


def test_sdist_pkg_info_and_dynamic(dists: DistFactory, index_server, client_factory) -> None:
    dists.sdist("eta", "1.0", requires_dist=["beta>=1"])
    dists.sdist("theta", "1.0", extra_files={
        "PKG-INFO": "Metadata-Version: 2.2\nName: theta\nVersion: 1.0\nDynamic: Requires-Dist\n\n"})
    dists.sdist("iota", "1.0", extra_files={
        "PKG-INFO": "Metadata-Version: 2.1\nName: iota\nVersion: 1.0\nRequires-Dist: beta\n\n"})
    idx = index_server()
    c = client_factory([idx.url])
    (eta,) = c.project_files("eta")
    assert c.metadata(eta).requires_dist == ("beta>=1",)
    assert len(_file_downloads(idx, eta.filename)) == 1
    for name, why in (("theta", "Dynamic"), ("iota", "Metadata-Version 2.1")):
        (sd,) = c.project_files(name)
        with pytest.raises(SdistMetadataUnsupported) as e:
            c.metadata(sd)
        assert sd.filename in str(e.value) and why in str(e.value) and e.value.hint


def test_warm_metadata_cache_makes_no_requests(small_index: IndexServer, client_factory, tmp_path) -> None:
    c = client_factory([small_index.url])
    files = c.project_files("alpha") + c.project_files("beta")
    c.prefetch_metadata(files)
    first = [c.metadata(f) for f in files]
    small_index.clear_requests()
    c2 = client_factory([small_index.url])  # same cache dir, fresh process state
    assert [c2.metadata(f) for f in files] == first
    assert small_index.requests == []
    c3 = client_factory([small_index.url], refresh=True)  # --refresh re-fetches metadata
    assert c3.metadata(files[0]) == first[0]
    assert f"/files/{files[0].filename}.metadata" in _paths(small_index)


def test_damaged_cache_entries_are_refetched_not_fatal(small_index: IndexServer, client_factory, tmp_path) -> None:
    c = client_factory([small_index.url])
    files = c.project_files("alpha")
    first = c.metadata(files[0])
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert cached
    for p in cached:  # valid JSON of the wrong shape (and a first line of the wrong shape for pages)
        p.write_text("[1, 2]\n")
    c2 = client_factory([small_index.url])
    assert c2.project_files("alpha") == files and c2.metadata(files[0]) == first


# --------------------------------------------------------------------------- local sources


def test_file_index(dists: DistFactory, client_factory, tmp_path) -> None:
    dists.wheel("kappa", "1.0", requires_dist=["beta"])
    dists.wheel("lam-bda", "2.0", requires_python=">=3.9")
    simple = write_static_index(dists.files(), tmp_path / "static", yanked={"kappa-1.0-py3-none-any.whl": "old"})
    c = client_factory([simple.as_uri()])
    (k,) = c.project_files("kappa")
    assert k.url == (tmp_path / "static" / "files" / k.filename).as_uri()
    assert k.yanked == "old" and k.has_metadata and k.sha256 == hashlib.sha256(Path(k.url[7:]).read_bytes()).hexdigest()
    assert c.metadata(k).requires_dist == ("beta",)
    (lam,) = c.project_files("Lam_Bda")
    assert lam.requires_python == ">=3.9"
    (lam_bda_meta_file,) = (tmp_path / "static" / "files").glob("lam_bda-2.0*.metadata")
    lam_bda_meta_file.unlink()  # falls back to reading the wheel itself
    assert c.metadata(lam).requires_python == ">=3.9"
    with pytest.raises(PackageNotFound):
        c.project_files("nope")


def test_file_index_missing_directory(client_factory, tmp_path) -> None:
    c = client_factory([(tmp_path / "nowhere").as_uri()])
    with pytest.raises(IndexError_) as e:
        c.project_files("x")
    assert "nowhere" in str(e.value)


def test_find_links_dir(dists: DistFactory, client_factory, tmp_path) -> None:
    w = dists.wheel("mu", "1.0", requires_dist=["beta"])
    sd = dists.sdist("mu", "1.0", requires_dist=["beta"])
    for junk in ("mu-0.9-py3.8.egg", "mu-0.8.win32.exe", "notes.txt", "mu-bad version.tar.gz"):
        (dists.dir / junk).write_bytes(b"junk")
    warnings: list[str] = []
    missing = tmp_path / "does-not-exist"
    c = client_factory([], [str(missing), str(dists.dir)], warn=warnings.append)
    files = c.project_files("mu")
    assert sorted(f.filename for f in files) == sorted([sd.name, w.name])
    wf = next(f for f in files if f.kind == "wheel")
    assert wf.sha256 is None and wf.size == w.stat().st_size and wf.source == ("find-links", str(dists.dir))
    assert wf.url == w.resolve().as_uri()
    assert warnings == [f"find-links location {missing} does not exist; ignoring it"]
    assert c.metadata(wf).requires_dist == ("beta",)
    assert c.file_hash(wf) == hashlib.sha256(w.read_bytes()).hexdigest()
    # the hash is cached by url+size+mtime: a second client does not read the file again
    assert list((tmp_path / "cache" / "hashes").rglob("*.sha256"))
    w.write_bytes(w.read_bytes() + b"\0")  # changed file: new size -> new hash
    c2 = client_factory([], [str(dists.dir)])
    wf2 = next(f for f in c2.project_files("mu") if f.kind == "wheel")
    assert c2.file_hash(wf2) == hashlib.sha256(w.read_bytes()).hexdigest()


def test_find_links_over_http_and_index_together(dists: DistFactory, index_server, client_factory, tmp_path) -> None:
    """An http find-links location is a plain page of links (here: a real directory listing)."""
    links = DistFactory(tmp_path / "links")
    lw = links.wheel("nu", "3.0")
    dists.wheel("nu", "1.0")
    idx = index_server()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(links.dir))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        loc = f"http://127.0.0.1:{srv.server_address[1]}/"
        c = client_factory([idx.url], [loc])
        files = {f.version: f for f in c.project_files("nu")}
        assert set(files) == {"1.0", "3.0"}
        assert files["3.0"].source == ("find-links", loc) and files["3.0"].sha256 is None
        assert c.metadata(files["3.0"]).name == "nu"
        assert c.file_hash(files["3.0"]) == hashlib.sha256(lw.read_bytes()).hexdigest()
        assert c.file_hash(files["1.0"]) == files["1.0"].sha256
    finally:
        srv.shutdown()
        srv.server_close()


# --------------------------------------------------------------------------- cache and offline


def test_http_cache_revalidates_with_304(small_index: IndexServer, client_factory, dists: DistFactory) -> None:
    c1 = client_factory([small_index.url])
    before = c1.project_files("beta")
    small_index.clear_requests()
    c2 = client_factory([small_index.url])
    statuses: list[int] = []
    c2._client().event_hooks["response"].append(lambda r: statuses.append(r.status_code))
    assert c2.project_files("beta") == before
    (req,) = small_index.requests_for("/simple/beta/")
    assert req[2].get("If-None-Match") and req[2].get("If-Modified-Since")
    assert statuses == [304]
    # The page changes: the next client's conditional request gets the new page.
    small_index.add(dists.wheel("beta", "3.0"))
    c3 = client_factory([small_index.url])
    assert {f.version for f in c3.project_files("beta")} == {"1.0", "2.0", "3.0"}


def test_offline_hit_and_miss(small_index: IndexServer, client_factory) -> None:
    online = client_factory([small_index.url])
    files = online.project_files("alpha")
    metas = [online.metadata(f) for f in files]
    url = small_index.url
    small_index.stop()
    offline = client_factory([url], offline=True)
    assert offline.project_files("alpha") == files
    assert [offline.metadata(f) for f in files] == metas
    with pytest.raises(IndexError_) as e:
        offline.project_files("beta")
    assert "not in the cache; run without --offline" in str(e.value)
    assert "/simple/beta/" in str(e.value)


def test_offline_remembers_not_found(small_index: IndexServer, client_factory) -> None:
    with pytest.raises(PackageNotFound):
        client_factory([small_index.url]).project_files("ghost")
    with pytest.raises(PackageNotFound):
        client_factory([small_index.url], offline=True).project_files("ghost")


def test_refresh_ignores_fresh_cache_entries(small_index: IndexServer, client_factory) -> None:
    client_factory([small_index.url]).project_files("beta")
    small_index.clear_requests()
    client_factory([small_index.url], refresh=True).project_files("beta")
    (req,) = small_index.requests_for("/simple/beta/")
    assert req[2].get("Cache-Control") == "max-age=0"


# --------------------------------------------------------------------------- failures


def test_retries_on_503_then_success(small_index: IndexServer, client_factory) -> None:
    small_index.fail("/simple/beta/", 503, times=2)
    files = client_factory([small_index.url]).project_files("beta")
    assert {f.version for f in files} == {"1.0", "2.0"}
    assert len(small_index.requests_for("/simple/beta/")) == 3


def test_non_retryable_status_is_index_error(small_index: IndexServer, client_factory) -> None:
    small_index.fail("/simple/beta/", 403, times=None)
    with pytest.raises(IndexError_) as e:
        client_factory([small_index.url]).project_files("beta")
    assert "HTTP 403" in str(e.value) and "/simple/beta/" in str(e.value)
    assert len(small_index.requests_for("/simple/beta/")) == 1


def test_unreachable_index_names_url_and_cause(client_factory) -> None:
    with pytest.raises(IndexError_) as e:
        client_factory([CLOSED_PORT_URL]).project_files("anything")
    assert not isinstance(e.value, PackageNotFound)
    assert "http://127.0.0.1:9/simple/anything/" in str(e.value) and "connect" in str(e.value)


def test_downloaded_file_hash_mismatch(dists: DistFactory, index_server, client_factory) -> None:
    dists.sdist("omicron", "1.0", requires_dist=["beta"])
    idx = index_server()
    idx.corrupt("omicron-1.0.tar.gz")
    c = client_factory([idx.url])
    (sd,) = c.project_files("omicron")
    with pytest.raises(IntegrityError) as e:
        c.metadata(sd)
    assert sd.filename in str(e.value) and sd.sha256 in str(e.value)


# --------------------------------------------------------------------------- concurrency


def test_prefetch_many_projects(dists: DistFactory, index_server, client_factory) -> None:
    names = [f"pkg{i:02d}" for i in range(20)]
    for i, n in enumerate(names):
        dists.wheel(n, "1.0", requires_dist=[f"dep{i}"])
        dists.wheel(n, "1.1", requires_dist=[f"dep{i}>=1"])
    idx = index_server()
    c = client_factory([idx.url], max_workers=8)
    c.prefetch(names + ["not-there"])
    c.prefetch_metadata(f for n in names for f in c.project_files(n))
    n_requests = len(idx.requests)
    assert n_requests == 21 + 40  # every page once, every metadata file once
    for i, n in enumerate(names):
        files = c.project_files(n)
        assert sorted(f.version for f in files) == ["1.0", "1.1"]
        assert {c.metadata(f).requires_dist for f in files} == {(f"dep{i}",), (f"dep{i}>=1",)}
    with pytest.raises(PackageNotFound):
        c.project_files("not-there")
    assert len(idx.requests) == n_requests  # everything afterwards came from memory


def test_distfile_is_hashable_value() -> None:
    f = DistFile(name="a", version="1", filename="a-1-py3-none-any.whl", url="file:///a", kind="wheel",
                 sha256=None, size=None, requires_python=None, yanked=None, metadata_sha256=None,
                 has_metadata=False, upload_time=None, source=("find-links", "/x"))
    assert {f: 1}[f] == 1


def test_hand_written_html_page_quirks(dists: DistFactory, client_factory, tmp_path) -> None:
    """Bare data-* attributes, <base href>, entity-escaped values, odd links: as pip reads them."""
    w = dists.wheel("rho", "1.0", requires_dist=["beta"])
    sd = dists.sdist("rho", "0.9")
    files = tmp_path / "elsewhere" / "files"
    files.mkdir(parents=True)
    for p in (w, sd):
        (files / p.name).write_bytes(p.read_bytes())
    (files / (w.name + ".metadata")).write_bytes(zipfile.ZipFile(w).read("rho-1.0.dist-info/METADATA"))
    page = tmp_path / "simple" / "rho" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text(
        '<html><head><base href="../../elsewhere/files/"></head><body>\n'
        f'<a href="{w.name}#md5=abc" data-core-metadata data-requires-python="&gt;=3.7,&lt;4">{w.name}</a>\n'
        f'<a href="{sd.name}#sha256={"0" * 64}" data-yanked>{sd.name}</a>\n'
        '<a href="rho-0.1-py2.5.egg">egg</a><a href="../">up</a><a>no href</a>\n'
        '</body></html>\n')
    c = client_factory([(tmp_path / "simple").as_uri()])
    got = {f.filename: f for f in c.project_files("rho")}
    assert set(got) == {w.name, sd.name}
    fw, fs = got[w.name], got[sd.name]
    assert fw.url == (files / w.name).as_uri() and fw.sha256 is None  # md5 is not a hash pypm uses
    assert fw.has_metadata and fw.metadata_sha256 is None and fw.requires_python == ">=3.7,<4"
    assert fs.yanked == "" and fs.sha256 == "0" * 64 and fw.yanked is None
    assert c.metadata(fw).requires_dist == ("beta",)


def test_broken_wheel_is_integrity_error(client_factory, tmp_path) -> None:
    links = tmp_path / "links"
    links.mkdir()
    (links / "sigma-1.0-py3-none-any.whl").write_bytes(b"this is not a zip file")
    c = client_factory([], [str(links)])
    (f,) = c.project_files("sigma")
    with pytest.raises(IntegrityError) as e:
        c.metadata(f)
    assert "sigma-1.0-py3-none-any.whl" in str(e.value) and "not a readable wheel" in str(e.value)


@pytest.mark.live
def test_live_default_index(tmp_path) -> None:
    """The default index (from configuration, never written here) through the JSON API."""
    from pypm.config import default_index_url

    with IndexClient([default_index_url()], [], cache_dir=tmp_path / "cache") as c:
        files = [f for f in c.project_files("idna") if f.version == "3.7"]
        wheel = next(f for f in files if f.kind == "wheel")
        assert any(f.kind == "sdist" for f in files)
        assert wheel.sha256 and len(wheel.sha256) == 64 and wheel.size and wheel.upload_time
        meta = c.metadata(wheel)
        assert (meta.name, meta.version) == ("idna", "3.7") and meta.requires_python
        with pytest.raises(PackageNotFound):
            c.project_files("this-project-does-not-exist-pypm-test-0b6f1c")


def test_open_dist_local_and_remote(dists: DistFactory, index_server, client_factory) -> None:
    sd = dists.sdist("tau", "1.0")
    idx = index_server()
    c = client_factory([idx.url], [str(dists.dir)])
    (remote,) = c.project_files("tau")  # the same filename in both sources: the first one wins
    (local,) = client_factory([], [str(dists.dir)]).project_files("tau")
    assert remote.source[0] == "registry" and local.source[0] == "find-links"
    for f in (remote, local):
        with c.open_dist(f) as fh:
            assert fh.read() == sd.read_bytes()
    idx.corrupt(sd.name)
    with pytest.raises(IntegrityError):
        with c.open_dist(remote):
            pass


# Real published files of the canary set (scripts/fetch_fixtures.py): patterns, not versions.
REAL_PATTERNS = ("sympy-*-py3-none-any.whl", "mypy-*-py3-none-any.whl", "requests-*-py3-none-any.whl",
                 "idna-*-py3-none-any.whl", "idna-*.tar.gz", "tomli-*.tar.gz")


@pytest.fixture(scope="module")
def real_files() -> dict[str, str]:
    """pattern -> the filename of one real file matching it (skips when the fixtures are not fetched)."""
    d = canary_wheels_dir()
    found = {p: sorted(d.glob(p)) if d is not None else [] for p in REAL_PATTERNS}
    if d is None or not all(found.values()):
        pytest.skip("the real canary wheels are not fetched: run `python3 scripts/fetch_fixtures.py` once")
    return {p: files[-1].name for p, files in found.items()}


@pytest.fixture(scope="module")
def real_index(real_files: dict[str, str]) -> Iterator[IndexServer]:
    """The real files served without PEP 658 files, so metadata comes from the wheels themselves."""
    d = canary_wheels_dir()
    assert d is not None
    with IndexServer([d / n for n in real_files.values()], pep658=False) as server:
        yield server


def _range_length(header: str, size: int) -> int:
    first, _, last = header.removeprefix("bytes=").partition("-")
    return int(last) if first == "" else min(size, int(last) + 1) - int(first)


@pytest.mark.parametrize("pattern", REAL_PATTERNS[:4])
def test_real_wheels_metadata_through_ranges(real_index: IndexServer, real_files, client_factory, pattern) -> None:
    filename = real_files[pattern]
    real_index.clear_requests()
    c = client_factory([real_index.url])
    dist = real_index.dist(filename)
    (f,) = [x for x in c.project_files(dist.project) if x.filename == filename]
    assert dist.metadata is not None
    assert c.metadata(f) == parse_core_metadata(dist.metadata, filename)[0]
    gets = _file_downloads(real_index, filename)
    assert gets and all("Range" in h for h in gets), "never the whole wheel"
    assert len(gets) <= 3  # the tail, the rest of a big central directory, METADATA
    fetched = sum(_range_length(h["Range"], dist.size) for h in gets)
    if dist.size > 1024 * 1024:  # sympy, mypy: a small part of a multi-MB file
        assert fetched < dist.size / 10, (fetched, dist.size)


def test_real_sdists(real_index: IndexServer, real_files, client_factory) -> None:
    c = client_factory([real_index.url])
    idna_sdist = next(f for f in c.project_files("idna") if f.kind == "sdist")
    assert c.metadata(idna_sdist).name == "idna"  # from the wheel of the same version
    assert _file_downloads(real_index, idna_sdist.filename) == []
    (tomli_sdist,) = c.project_files("tomli")  # no wheel here: read its PKG-INFO (static, >= 2.2)
    meta = c.metadata(tomli_sdist)
    assert (meta.name, meta.version) == ("tomli", tomli_sdist.version) and meta.requires_python
    assert len(_file_downloads(real_index, tomli_sdist.filename)) == 1


def test_unwritable_cache_warns_and_continues(small_index: IndexServer, client_factory, tmp_path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    warnings: list[str] = []
    c = client_factory([small_index.url], cache_dir=blocker / "cache", warn=warnings.append)
    files = c.project_files("alpha")
    assert c.metadata(files[0]).name == "alpha"
    assert len(warnings) == 1 and "cannot write the cache" in warnings[0]


class _BareJSONIndex(http.server.BaseHTTPRequestHandler):
    """Project pages with no ETag, Last-Modified or Cache-Control (as the default index sends them)."""

    pages: dict[str, bytes] = {}

    def do_GET(self) -> None:
        body = self.pages.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve_bare(pages: dict) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A _BareJSONIndex serving `pages` on 127.0.0.1: (server to shut down, its /simple/ URL)."""
    _BareJSONIndex.pages = pages
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BareJSONIndex)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/simple/"


def test_unchanged_page_without_validators_is_not_rewritten(client_factory, tmp_path) -> None:
    import json

    def page(*versions: str) -> bytes:
        return json.dumps({"meta": {"api-version": "1.1"}, "name": "omega", "files": [
            {"filename": f"omega-{v}-py3-none-any.whl", "url": f"https://f.test/omega-{v}-py3-none-any.whl",
             "hashes": {"sha256": "ab" * 32}} for v in versions]}).encode()

    srv, url = _serve_bare({"/simple/omega/": page("1.0")})
    try:
        assert client_factory([url]).project_releases("omega").versions() == ["1.0"]
        (entry,) = (tmp_path / "cache" / "http").glob("*/*")
        first = entry.stat()
        assert client_factory([url]).project_releases("omega").versions() == ["1.0"]  # fetched again
        again = entry.stat()
        assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
        _BareJSONIndex.pages = {"/simple/omega/": page("1.0", "2.0")}  # a new release: written
        assert client_factory([url]).project_releases("omega").versions() == ["1.0", "2.0"]
        assert entry.stat().st_ino != first.st_ino
    finally:
        srv.shutdown()
        srv.server_close()
    assert client_factory([url], offline=True).project_releases("omega").versions() == ["1.0", "2.0"]


def test_warm_page_reuses_its_parsed_files_from_the_cache(client_factory, tmp_path, monkeypatch) -> None:
    # The page is fetched again each time (no validators), but when its body is the cached one
    # its parsed files come from the cache entry instead of parsing the JSON again.
    import json

    from pypm import index

    parses: list[int] = []
    real = simpleapi.json_page_files  # what pypm.index calls by that name

    def counted(files, name):
        parses.append(1)
        return real(files, name)

    monkeypatch.setattr(index, "json_page_files", counted)

    def page(*versions: str) -> bytes:
        return json.dumps({"meta": {"api-version": "1.1"}, "name": "omega", "files": [
            {"filename": f"omega-{v}-py3-none-any.whl", "url": f"https://f.test/omega-{v}-py3-none-any.whl",
             "hashes": {"sha256": "ab" * 32}, "core-metadata": {"sha256": "cd" * 32}} for v in versions]}).encode()

    srv, url = _serve_bare({"/simple/omega/": page("1.0", "2.0")})
    try:
        first = client_factory([url]).project_files("omega")
        assert len(parses) == 1
        assert client_factory([url]).project_files("omega") == first and len(parses) == 1
        (entry,) = (tmp_path / "cache" / "http").glob("*/*")
        data = entry.read_bytes()
        entry.write_bytes(data[:-20] + b"\x00" * 20)  # the parsed part damaged: parsed again, not fatal
        assert client_factory([url]).project_files("omega") == first and len(parses) == 2
        assert client_factory([url]).project_files("omega") == first and len(parses) == 2  # and stored again
        _BareJSONIndex.pages = {"/simple/omega/": page("1.0", "2.0", "3.0")}  # a new body: parsed
        assert [f.version for f in client_factory([url]).project_files("omega")] == ["1.0", "2.0", "3.0"]
        assert len(parses) == 3
    finally:
        srv.shutdown()
        srv.server_close()
    assert client_factory([url], offline=True).project_files("omega")[2].version == "3.0"


# --------------------------------------------------------------------------- METADATA without zipfile


def _zip(path: Path, members: list[tuple[str, bytes]], *, comment: bytes = b"",
         member_comment: dict[str, bytes] | None = None, method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0))
            info.compress_type = method
            info.comment = (member_comment or {}).get(name, b"")
            zf.writestr(info, data)
        zf.comment = comment
    return path


def _quick(path: Path, name: str = "omega") -> bytes | None:
    from pypm.index import _pread, _quick_zip_metadata

    f = DistFile(name, "1.0", path.name, path.as_uri(), "wheel", None, None, None, None, None, False, None,
                 ("find-links", str(path.parent)))
    with open(path, "rb") as fh:
        return _quick_zip_metadata(_pread(fh.fileno()), path.stat().st_size, f)


META = b"Metadata-Version: 2.1\nName: omega\nVersion: 1.0\nRequires-Dist: beta\n"


def test_quick_metadata_reader_agrees_with_zipfile(dists: DistFactory, tmp_path) -> None:
    """The hand-written reader returns exactly what zipfile reads, for real and generated wheels."""
    from pypm.simpleapi import parse_filename
    from tests.support.dists import wheel_metadata

    w = _wheel_with_big_central_directory(dists)
    assert _quick(w, "zeta") == wheel_metadata(w)
    for method in (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED):
        p = _zip(tmp_path / f"omega-1.0-py3-none-any-{method}.whl",
                 [("omega/__init__.py", b"x = 1\n"), ("omega-1.0.dist-info/METADATA", META),
                  ("omega-1.0.dist-info/RECORD", b"")], method=method)
        assert _quick(p) == META
    # two dist-info dirs: the project's own is chosen, as with zipfile
    p = _zip(tmp_path / "two.whl", [("other-2.0.dist-info/METADATA", b"Name: other\n"),
                                   ("omega-1.0.dist-info/METADATA", META)])
    assert _quick(p) == META
    real = canary_wheels_dir()
    for wheel in sorted(real.glob("*.whl"))[:12] if real is not None else []:
        parsed = parse_filename(wheel.name)
        assert parsed is not None
        assert _quick(wheel, parsed[1]) == wheel_metadata(wheel), wheel.name


def test_quick_metadata_reader_leaves_unusual_archives_to_zipfile(tmp_path, client_factory) -> None:
    """None (zipfile decides) for anything but the plain case; zipfile's errors still reach the user."""
    plain = [("omega-1.0.dist-info/METADATA", META)]
    assert _quick(_zip(tmp_path / "c.whl", plain, comment=b"an archive comment")) is None
    # the suffix inside a member's comment: not a name, so the quick reader steps aside
    assert _quick(_zip(tmp_path / "m.whl", [("a.py", b""), *plain],
                       member_comment={"a.py": b"see omega-1.0.dist-info/METADATA"})) is None
    # two candidates and none of them the project's own: zipfile's reading reports it
    p = _zip(tmp_path / "omega-1.0-py3-none-any.whl", [("x-1.dist-info/METADATA", META), ("y-1.dist-info/METADATA", META)])
    assert _quick(p) is None
    c = client_factory([], [str(tmp_path)])
    (f,) = [f for f in c.project_files("omega")]
    with pytest.raises(IntegrityError, match="several .dist-info/METADATA"):
        c.metadata(f)
    # METADATA's bytes damaged after it was written: the CRC check fails, and so does zipfile
    (tmp_path / "d").mkdir()
    good = _zip(tmp_path / "d" / "omega-1.0-py3-none-any.whl", plain, method=zipfile.ZIP_STORED)
    data = bytearray(good.read_bytes())
    at = bytes(data).index(b"Requires-Dist: beta")
    data[at] ^= 0x20
    good.write_bytes(bytes(data))
    assert _quick(good) is None
    c = client_factory([], [str(good.parent)])
    (f,) = c.project_files("omega")
    with pytest.raises(IntegrityError, match="not a readable wheel"):
        c.metadata(f)


def test_find_links_wheel_is_hashed_ahead_of_the_lock(dists: DistFactory, client_factory, tmp_path) -> None:
    """Listing a project's local hash-less wheels starts hashing the newest release in the background
    (a cold lock of torch no longer ends with 0.1 s of sha256): the cache's record appears without
    any call to file_hash, and file_hash then agrees with the file."""
    old = dists.wheel("mu", "1.0")
    new = dists.wheel("mu", "2.0", modules={"mu/blob.bin": bytes(200_000)})
    records = tmp_path / "cache" / "hashes"
    plain = client_factory([], [str(dists.dir)])  # (only a lock's client hashes ahead)
    plain.metadata(next(f for f in plain.project_files("mu") if f.version == "2.0"))
    plain.close()
    assert not records.exists()
    c = client_factory([], [str(dists.dir)], hash_ahead=True)
    files = {f.version: f for f in c.project_files("mu")}
    for _ in range(500):
        if list(records.rglob("*.sha256")):
            break
        threading.Event().wait(0.01)
    assert len(list(records.rglob("*.sha256"))) == 1, "only the newest release is hashed ahead"
    assert c.file_hash(files["2.0"]) == hashlib.sha256(new.read_bytes()).hexdigest()
    assert c.file_hash(files["1.0"]) == hashlib.sha256(old.read_bytes()).hexdigest()


def test_hash_record_notices_a_replaced_file_with_the_same_size_and_mtime(dists: DistFactory, client_factory) -> None:
    import os

    w = dists.wheel("mu", "1.0", modules={"mu/a.py": "A = 1\n"})
    first = client_factory([], [str(dists.dir)])
    (f,) = first.project_files("mu")
    before = first.file_hash(f)
    st = w.stat()
    data = bytearray(w.read_bytes())
    data[-30] ^= 0x01  # same size, other bytes (in the central directory's tail: still a file)
    tmp = w.with_name("tmp")
    tmp.write_bytes(bytes(data))
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, w)  # a new inode, the old size and mtime
    second = client_factory([], [str(dists.dir)])
    (f2,) = second.project_files("mu")
    assert second.file_hash(f2) == hashlib.sha256(bytes(data)).hexdigest() != before


# --------------------------------------------------------------------------- pages found, not parsed


def _registry_page(files: list, api: str = "1.1") -> bytes:
    """A PEP 691 page laid out as the default index serves it (files first, filename first)."""
    import json

    return json.dumps({"files": files, "meta": {"_last-serial": "1", "api-version": api}, "name": "foo",
                       "versions": ["1.0", "2.0"]}).encode()


def _good_files() -> list:
    """_junk_page_files without the junk a well-formed page cannot hold, keys in the index's order."""
    keep = [i for i in _junk_page_files() if isinstance(i, dict) and isinstance(i.get("url"), str)
            and isinstance(i.get("filename"), str)]
    return [{"filename": i["filename"], **{k: v for k, v in i.items() if k != "filename"}} for i in keep]


def test_spans_give_the_same_releases_as_parsing_the_page() -> None:
    from pypm.simpleapi import Releases, json_page_spans

    page_url = "https://idx.test/simple/foo/"
    body = _registry_page(_good_files())
    spans = json_page_spans(body, "foo")
    assert spans is not None and spans[0] == [  # foo's files, the repeated one too (Releases keeps the first)
        "foo-1.0-py3-none-any.whl", "foo-2.0-py3-none-any.whl", "foo-1.0.0.tar.gz", "foo-1.0-py3-none-any.whl",
        "foo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"]
    lazy, eager = Releases("foo"), Releases("foo")
    lazy.add_spans(spans, body, page_url, ("registry", "idx"))
    eager.add_json(_good_files(), page_url, ("registry", "idx"))
    assert lazy.versions() == eager.versions() == ["1.0", "2.0", "1.0.0"]
    assert lazy.all_files() == eager.all_files()
    assert lazy.files("2.0")[0].url == "https://idx.test/files/foo-2.0-py3-none-any.whl"


def test_spans_refuse_every_other_layout() -> None:
    """None -- parse the page whole, which also reports what is wrong -- unless the layout is the index's."""
    import json

    from pypm.simpleapi import json_page_spans

    files = _good_files()
    assert json_page_spans(_registry_page(files), "foo") is not None
    others = {
        "indented": json.dumps({"files": files, "meta": {"api-version": "1.0"}}, indent=1).encode(),
        "sorted keys": json.dumps({"files": files, "meta": {"api-version": "1.0"}}, sort_keys=True).encode(),
        "meta first": json.dumps({"meta": {"api-version": "1.0"}, "files": files}).encode(),
        "a non-file element": _registry_page([files[0], "junk", *files[1:]]),
        "a file without its name first": _registry_page([{"url": "https://f.test/foo-3.0.tar.gz",
                                                          "filename": "foo-3.0.tar.gz"}, *files]),
        "an escaped name": _registry_page([{"filename": "foo-1.0-py3-none-any.wh\u006c", **files[0]}])
        .replace(b"any.whl", b"any.wh\\u006c", 1),
        "truncated": _registry_page(files)[:-40],
        # PEP 691 lets a file carry keys clients do not know; objects in a list under one, each
        # starting with "filename", are not files of the page (grouping them made phantom files,
        # and the object holding them undecodable)
        "objects nested in a file": _registry_page([{**files[0], "x-mirror": [
            {"region": "eu"}, {"filename": "foo-9.9.tar.gz", "url": "https://f.test/a"},
            {"filename": "foo-9.8.tar.gz", "url": "https://f.test/b"}]}, *files[1:]]),
        "api 2": _registry_page(files, api="2.0"),
        "empty": b"",
    }
    for what, body in others.items():
        assert json_page_spans(body, "foo") is None, what


def test_a_file_object_that_is_not_what_it_was_grouped_as_is_reported(client_factory) -> None:
    from pypm.simpleapi import Releases, json_page_spans

    body = _registry_page([{"filename": "foo-1.0.tar.gz", "url": None}, *_good_files()])
    spans = json_page_spans(body, "foo")
    assert spans is not None
    rel = Releases("foo")
    rel.add_spans(spans, body, "https://idx.test/simple/foo/", ("registry", "idx"))
    assert rel.files("2.0")  # other releases are unaffected
    with pytest.raises(IndexError_, match="malformed PEP 691 JSON page.*byte 11"):
        rel.files("1.0")


def test_registry_layout_pages_cold_warm_and_damaged(client_factory, tmp_path, monkeypatch) -> None:
    """Through the client: found by spans on a cold cache, the spans reused when the same body comes
    back, found again when the cached columns are damaged; same files as parsing the page."""
    from pypm import index

    scans: list[int] = []
    real = simpleapi.json_page_spans  # what pypm.index calls by that name

    def counted(body, name):
        scans.append(1)
        return real(body, name)

    monkeypatch.setattr(index, "json_page_spans", counted)
    files = [{"filename": f"omega-{v}-py3-none-any.whl", "hashes": {"sha256": "ab" * 32},
              "url": f"https://f.test/omega-{v}-py3-none-any.whl", "yanked": False} for v in ("1.0", "2.0")]
    srv, url = _serve_bare({"/simple/omega/": _registry_page(files)})
    try:
        first = client_factory([url]).project_files("omega")
        assert [f.version for f in first] == ["1.0", "2.0"] and first[1].sha256 == "ab" * 32 and scans == [1]
        assert client_factory([url]).project_files("omega") == first and scans == [1]
        (entry,) = (tmp_path / "cache" / "http").glob("*/*")
        data = entry.read_bytes()
        entry.write_bytes(data[:-8] + b"\xff" * 8)  # the columns damaged: found again, not fatal
        assert client_factory([url]).project_files("omega") == first and scans == [1, 1]
        assert client_factory([url]).project_files("omega") == first and scans == [1, 1]  # and stored again
    finally:
        srv.shutdown()
        srv.server_close()
    assert client_factory([url], offline=True).project_files("omega") == first


def test_write_behind_cache_is_complete_when_the_client_closes(small_index: IndexServer, client_factory) -> None:
    """A lock's client writes its cache entries from a thread of its own; close() waits for all of
    them, so an offline client right after finds every page and metadata file."""
    c = client_factory([small_index.url], write_behind=True)
    files = c.project_files("alpha")
    metas = {f.filename: c.metadata(f) for f in files if f.kind == "wheel"}
    c.close()
    assert not [p for p in (c.cache_dir / "http").rglob("*") if p.is_file() and ".tmp" in p.name]
    offline = client_factory([small_index.url], offline=True)
    assert offline.project_files("alpha") == files
    assert {f.filename: offline.metadata(f) for f in files if f.kind == "wheel"} == metas


def test_warm_up_makes_the_http_client_without_a_request(small_index: IndexServer, client_factory) -> None:
    small_index.clear_requests()
    c = client_factory([small_index.url])
    c.warm_up()
    for _ in range(500):
        if c._client_obj is not None:
            break
        threading.Event().wait(0.01)
    assert c._client_obj is not None and small_index.requests == []
    assert [f.version for f in c.project_files("beta")] == ["1.0", "2.0"]
    offline = client_factory([small_index.url], offline=True)
    offline.warm_up()  # nothing to make: offline never uses the network
    assert offline._client_obj is None
    c.close()
    c.close()  # twice is fine (a lock closes it on its way out whatever happened)


def test_a_small_wheel_takes_one_range_request(dists: DistFactory, index_server, client_factory) -> None:
    """A wheel whose METADATA lies outside the last 64 KiB but which is under 192 KiB is asked for
    whole, as one range: one request instead of two."""
    w = dists.wheel("kappa", "1.0", requires_dist=["beta"],
                    modules={f"kappa/module_{i:04d}.py": f"X = {i}\n" for i in range(900)})
    size = w.stat().st_size
    with zipfile.ZipFile(w) as zf:  # RECORD and the central directory push METADATA out of the last 64 KiB
        assert size - zf.getinfo("kappa-1.0.dist-info/METADATA").header_offset > 64 * 1024
    assert 64 * 1024 < size <= 3 * 64 * 1024
    idx = index_server(pep658=False)
    c = client_factory([idx.url])
    (f,) = c.project_files("kappa")
    assert c.metadata(f).requires_dist == ("beta",)
    gets = _file_downloads(idx, w.name)
    assert [h["Range"] for h in gets] == [f"bytes=-{size}"]


def test_span_columns_damaged_in_range_are_found_again(client_factory, tmp_path, monkeypatch) -> None:
    """A cached start moved by damage but still inside the body must not be decoded as a file:
    the columns carry a CRC, so the page is searched again instead of reported as malformed."""
    import marshal


    files = [{"filename": f"omega-{v}-py3-none-any.whl", "url": f"https://f.test/omega-{v}-py3-none-any.whl"}
             for v in ("1.0", "2.0")]
    srv, url = _serve_bare({"/simple/omega/": _registry_page(files)})
    try:
        first = client_factory([url]).project_files("omega")
        (entry,) = (tmp_path / "cache" / "http").glob("*/*")
        data = bytearray(entry.read_bytes())
        at = data.index(b"\x00spans") + len(b"\x00spans") + 4  # the marshalled columns end the entry
        cols = marshal.loads(bytes(data[at:]))
        assert cols == simpleapi.json_page_spans(_registry_page(files), "omega")
        data[-4] ^= 0x01  # the last start (a marshalled int ends the entry), one byte off: in range
        moved = marshal.loads(bytes(data[at:]))
        assert moved[3][-1] == cols[3][-1] ^ 1 and simpleapi.valid_span_columns(moved, len(_registry_page(files)))
        entry.write_bytes(bytes(data))
        assert client_factory([url]).project_files("omega") == first
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_cached_page_compares_with_a_new_one_by_its_bytes() -> None:
    from pypm.index import _same_bytes

    body = b'{"files": []}' * 1000
    cached = memoryview(b"head\n" + body)[5:]  # a view into the cache entry, as _Page.load makes it
    assert _same_bytes(body, cached) and _same_bytes(cached, bytes(body))
    assert not _same_bytes(body[:-1] + b"]", cached)
    assert not _same_bytes(body + b" ", cached)
