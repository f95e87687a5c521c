"""The test support itself: real wheels/sdists and an index server that speaks PEP 503/691/658."""

from __future__ import annotations

import base64
import csv
import hashlib
import http.client
import io
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest
from packaging.metadata import Metadata

from tests.support.dists import DistFactory, build_sdist, build_wheel, sdist_metadata, wheel_metadata
from tests.support.fixtures import canary_wheels_dir
from tests.support.index_server import JSON_TYPE, IndexServer, write_static_index

# --- dists -----------------------------------------------------------------------------------


def test_wheel_is_deterministic_and_valid(tmp_path: Path) -> None:
    kw = dict(requires_dist=["b>=1", 'c; extra == "fast"'], requires_python=">=3.9", entry_points={"console_scripts": {"hi": "a_pkg:main"}})
    w1 = build_wheel(tmp_path / "1", "A.Pkg", "1.0", **kw)  # type: ignore[arg-type]
    w2 = build_wheel(tmp_path / "2", "A.Pkg", "1.0", **kw)  # type: ignore[arg-type]
    assert w1.name == "a_pkg-1.0-py3-none-any.whl"
    assert w1.read_bytes() == w2.read_bytes()

    meta = Metadata.from_email(wheel_metadata(w1), validate=True)  # packaging validates the fields
    assert str(meta.requires_python) == ">=3.9"
    assert [str(r) for r in meta.requires_dist or []] == ["b>=1", 'c; extra == "fast"']
    assert meta.provides_extra == ["fast"]

    with zipfile.ZipFile(w1) as zf:
        rows = list(csv.reader(io.StringIO(zf.read("a_pkg-1.0.dist-info/RECORD").decode())))
        for path, h, size in rows:
            if path.endswith("RECORD"):
                assert (h, size) == ("", "")
                continue
            data = zf.read(path)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert (h, int(size)) == (f"sha256={digest}", len(data))
        assert "[console_scripts]\nhi = a_pkg:main" in zf.read("a_pkg-1.0.dist-info/entry_points.txt").decode()


def test_wheel_installs_with_pip_and_runs_its_script(tmp_path: Path) -> None:
    """An implementation nobody here wrote (pip) accepts the wheel, data scheme and scripts included."""
    w = build_wheel(
        tmp_path,
        "hello",
        "2.0",
        modules={"hello/__init__.py": "def main():\n    print('hello from wheel')\n"},
        entry_points={"console_scripts": {"hello": "hello:main"}},
        data={"data/share/hello/x.txt": b"x\n", "scripts/raw.sh": b"#!/bin/sh\necho raw\n"},
    )
    target = tmp_path / "t"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--prefix", str(target), str(w)],
        check=True,
        env={"PIP_CONFIG_FILE": "/dev/null", "PATH": "/usr/bin:/bin"},
    )
    assert (target / "bin" / "hello").is_file()
    assert (target / "bin" / "raw.sh").read_text().endswith("echo raw\n")
    assert (target / "share" / "hello" / "x.txt").read_bytes() == b"x\n"


def test_wheel_fault_options(tmp_path: Path) -> None:
    w = build_wheel(tmp_path, "evil", "1.0", unsafe={"../escape.txt": b"boo"}, bad_record_hash_for="evil/__init__.py")
    with zipfile.ZipFile(w) as zf:
        assert "../escape.txt" in zf.namelist()
        record = zf.read("evil-1.0.dist-info/RECORD").decode()
        init = zf.read("evil/__init__.py")
    good = base64.urlsafe_b64encode(hashlib.sha256(init).digest()).rstrip(b"=").decode()
    assert "evil/__init__.py,sha256=" in record and good not in record
    w2 = build_wheel(tmp_path / "o", "evil", "1.0", record_override="nonsense\n")
    with zipfile.ZipFile(w2) as zf:
        assert zf.read("evil-1.0.dist-info/RECORD") == b"nonsense\n"


def test_sdist_is_deterministic_and_builds_a_c_extension(tmp_path: Path) -> None:
    s1 = build_sdist(tmp_path / "1", "fast-thing", "0.3", requires_dist=["idna>=3"], c_extension=True)
    s2 = build_sdist(tmp_path / "2", "fast-thing", "0.3", requires_dist=["idna>=3"], c_extension=True)
    assert s1.name == "fast_thing-0.3.tar.gz" and s1.read_bytes() == s2.read_bytes()
    meta = Metadata.from_email(sdist_metadata(s1), validate=True)
    assert meta.metadata_version == "2.2" and [str(r) for r in meta.requires_dist or []] == ["idna>=3"]
    with tarfile.open(s1) as tf:
        tf.extractall(tmp_path / "src", filter="data")
    # A real isolated PEP 517 build; its build backend (setuptools>=68) comes from the fetched
    # canary wheels, so the build stays offline.
    wheels = canary_wheels_dir()
    if wheels is None:
        pytest.skip("canary wheels not fetched (they supply setuptools>=68): run python3 scripts/fetch_fixtures.py")
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index", "--find-links", str(wheels), "-w", str(out), str(tmp_path / "src" / "fast_thing-0.3")],
        check=True,
        capture_output=True,
        env={"PIP_CONFIG_FILE": "/dev/null", "PATH": "/usr/bin:/bin"},
    )
    (whl,) = out.glob("fast_thing-0.3-cp*.whl")
    with zipfile.ZipFile(whl) as zf:
        assert any(re.match(r"fast_thing/_speedups\..*\.so$", n) for n in zf.namelist())
        assert "Requires-Dist: idna>=3" in zf.read("fast_thing-0.3.dist-info/METADATA").decode()


# --- index server ------------------------------------------------------------------------------


@pytest.fixture
def two_versions(dists: DistFactory) -> DistFactory:
    dists.wheel("Foo_Bar", "1.0", requires_python=">=3.8")
    dists.wheel("foo-bar", "2.0", requires_python=">=3.10,<4")
    dists.sdist("foo-bar", "2.0")
    dists.wheel("other", "0.1")
    return dists


def test_json_and_html_pages(index_server, two_versions: DistFactory) -> None:
    idx = index_server(yanked={"foo_bar-1.0-py3-none-any.whl": "broken"}, upload_time={"foo_bar-2.0.tar.gz": "2024-01-02T03:04:05Z"})
    r = httpx.get(idx.url + "foo-bar/", headers={"Accept": f"{JSON_TYPE}, text/html;q=0.1"})
    assert r.headers["content-type"] == JSON_TYPE
    page = r.json()
    files = {f["filename"]: f for f in page["files"]}
    assert set(files) == {"foo_bar-1.0-py3-none-any.whl", "foo_bar-2.0-py3-none-any.whl", "foo_bar-2.0.tar.gz"}
    w1 = files["foo_bar-1.0-py3-none-any.whl"]
    assert w1["yanked"] == "broken" and w1["requires-python"] == ">=3.8"
    assert files["foo_bar-2.0-py3-none-any.whl"]["yanked"] is False
    assert "core-metadata" not in files["foo_bar-2.0.tar.gz"]
    assert files["foo_bar-2.0.tar.gz"]["upload-time"] == "2024-01-02T03:04:05Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", w1["upload-time"])
    # The advertised hashes are those of the bytes served.
    body = httpx.get(w1["url"]).content
    assert hashlib.sha256(body).hexdigest() == w1["hashes"]["sha256"] and len(body) == w1["size"]
    meta = httpx.get(w1["url"] + ".metadata").content
    assert hashlib.sha256(meta).hexdigest() == w1["core-metadata"]["sha256"] == w1["dist-info-metadata"]["sha256"]
    assert b"Name: Foo_Bar" in meta

    html = httpx.get(idx.url + "foo-bar/").text
    assert 'data-requires-python="&gt;=3.10,&lt;4"' in html
    assert 'data-yanked="broken"' in html
    assert re.search(r'href="[^"]+/files/foo_bar-2\.0\.tar\.gz#sha256=[0-9a-f]{64}"', html)
    assert html.count("data-core-metadata=") == 2

    root = httpx.get(idx.url).text
    assert 'href="foo-bar/"' in root and 'href="other/"' in root
    assert httpx.get(idx.url + "Foo.Bar/").status_code == 301
    assert httpx.get(idx.url + "nope/").status_code == 404


def test_json_off_and_pep658_off(index_server, two_versions: DistFactory) -> None:
    idx = index_server(json=False, pep658=False)
    r = httpx.get(idx.url + "other/", headers={"Accept": JSON_TYPE})
    assert r.headers["content-type"].startswith("text/html") and "data-core-metadata" not in r.text
    assert httpx.get(idx.file_url("other-0.1-py3-none-any.whl") + ".metadata").status_code == 404


def test_etag_and_last_modified_give_304(index_server, two_versions: DistFactory) -> None:
    idx = index_server()
    r = httpx.get(idx.url + "other/")
    etag, lm = r.headers["etag"], r.headers["last-modified"]
    assert httpx.get(idx.url + "other/", headers={"If-None-Match": etag}).status_code == 304
    assert httpx.get(idx.url + "other/", headers={"If-Modified-Since": lm}).status_code == 304
    two_versions.wheel("other", "0.2")
    idx.add(two_versions.dir)
    r2 = httpx.get(idx.url + "other/", headers={"If-None-Match": etag})
    assert r2.status_code == 200 and "other-0.2" in r2.text
    assert httpx.get(idx.url + "other/", headers={"If-Modified-Since": lm}).status_code == 200


def test_range_requests(dists: DistFactory, index_server) -> None:
    w = dists.wheel("big", "1.0", modules={"big/blob.bin": bytes(range(256)) * 400})
    idx = index_server()
    data = w.read_bytes()
    r = httpx.get(idx.file_url(w.name), headers={"Range": "bytes=100-"})
    assert r.status_code == 206 and r.content == data[100:]
    assert r.headers["content-range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    assert httpx.get(idx.file_url(w.name), headers={"Range": "bytes=0-9"}).content == data[:10]
    assert httpx.get(idx.file_url(w.name), headers={"Range": "bytes=-5"}).content == data[-5:]
    assert httpx.get(idx.file_url(w.name), headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    # If-Range with a stale validator: the whole file, 200.
    r = httpx.get(idx.file_url(w.name), headers={"Range": "bytes=100-", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == data
    ranges = [h.get("Range") for m, p, h in idx.requests_for("/files/")]
    assert ranges[0] == "bytes=100-"


def test_drop_after_then_resume(dists: DistFactory, index_server) -> None:
    w = dists.wheel("big", "1.0", modules={"big/blob.bin": bytes(range(256)) * 400})
    data = w.read_bytes()
    idx = index_server()
    idx.drop_after(w.name, 1000)
    conn = http.client.HTTPConnection("127.0.0.1", idx.port, timeout=10)
    conn.request("GET", f"/files/{w.name}")
    resp = conn.getresponse()
    assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(data)
    with pytest.raises(http.client.IncompleteRead) as exc:
        resp.read()
    got = exc.value.partial
    assert got == data[:1000]
    conn.close()
    # Only once: the resumed request gets the rest.
    r = httpx.get(idx.file_url(w.name), headers={"Range": f"bytes={len(got)}-"})
    assert r.status_code == 206 and got + r.content == data
    assert [h.get("Range") for _, _, h in idx.requests_for("/files/")] == [None, "bytes=1000-"]


def test_corrupt_and_fail(dists: DistFactory, index_server) -> None:
    w = dists.wheel("x", "1.0")
    idx = index_server()
    d = idx.dist(w.name)
    idx.corrupt(w.name)
    idx.corrupt_metadata(w.name)
    bad = httpx.get(idx.file_url(w.name)).content
    assert len(bad) == d.size and hashlib.sha256(bad).hexdigest() != d.sha256
    assert hashlib.sha256(httpx.get(idx.file_url(w.name) + ".metadata").content).hexdigest() != d.metadata_sha256
    assert d.sha256 in httpx.get(idx.url + "x/").text  # still advertising the original hash
    idx.reset_faults()
    assert hashlib.sha256(httpx.get(idx.file_url(w.name)).content).hexdigest() == d.sha256

    idx.fail("/simple/", 503, times=2)
    assert [httpx.get(idx.url + "x/").status_code for _ in range(3)] == [503, 503, 200]


def test_static_index_is_usable_by_pip(dists: DistFactory, tmp_path: Path) -> None:
    dists.wheel("lonely", "1.0", modules={"lonely/__init__.py": "VALUE = 41\n"})
    dists.wheel("lonely", "1.1", modules={"lonely/__init__.py": "VALUE = 42\n"})
    simple = write_static_index(dists.files(), tmp_path / "static", yanked={"lonely-1.1-py3-none-any.whl": "no"})
    assert (simple / "lonely" / "index.html").is_file()
    target = tmp_path / "t"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--index-url", simple.as_uri() + "/", "--target", str(target), "lonely"],
        check=True,
        env={"PIP_CONFIG_FILE": "/dev/null", "PATH": "/usr/bin:/bin"},
    )
    # pip skips the yanked 1.1.
    assert (target / "lonely" / "__init__.py").read_text() == "VALUE = 41\n"


def test_pip_installs_from_the_http_index(dists: DistFactory, index_server, tmp_path: Path) -> None:
    dists.wheel("app", "1.0", requires_dist=["dep>=2"])
    dists.wheel("dep", "1.0")
    dists.wheel("dep", "2.0", requires_python=">=3.0")
    idx = index_server()
    target = tmp_path / "t"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--index-url", idx.url, "--target", str(target), "app"],
        check=True,
        env={"PIP_CONFIG_FILE": "/dev/null", "PATH": "/usr/bin:/bin"},
    )
    assert (target / "dep-2.0.dist-info").is_dir()
    # pip asked for the PEP 658 metadata instead of downloading the wheel for resolution.
    assert any(p.endswith(".metadata") for _, p, _ in idx.requests)


def test_pypm_runner_is_isolated(pypm, tmp_path: Path) -> None:
    env = pypm.env
    assert env["PIP_CONFIG_FILE"] == "/dev/null" and env["PYPM_CACHE_DIR"].startswith(str(tmp_path))
    assert env["PYPM_INDEX_URL"].startswith("http://127.0.0.1:9/")
    assert not any(k.startswith("PIP_") and k != "PIP_CONFIG_FILE" for k in env)
    r = pypm("--version")
    assert r.returncode == 0, r.stderr
    assert "0.1" in r.stdout + r.stderr


def test_canary_index_and_project(canary_index: IndexServer, canary_project: Path) -> None:
    """The fetched canary set is served, and the project copy points at it (find-links kept)."""
    import tomllib

    page = httpx.get(canary_index.url + "requests/", headers={"Accept": JSON_TYPE}).json()
    assert [f["filename"] for f in page["files"]] == ["requests-2.32.3-py3-none-any.whl"]
    for name in ("urllib3", "idna", "certifi", "charset-normalizer", "tomli", "black", "pytest", "mypy", "setuptools", "sympy", "colorama"):
        assert httpx.get(canary_index.url + f"{name}/").status_code == 200, name
    tool = tomllib.loads((canary_project / "pyproject.toml").read_text())["tool"]["pypm"]
    assert tool["index-url"] == canary_index.url and tool["find-links"] == ["/opt/wheels"]
    assert not (canary_project / "pypm.lock").exists() and (canary_project / "src" / "my_lib" / "demo.py").is_file()


def test_live_probe(index_server) -> None:
    from tests.conftest import NO_INDEX_URL, probe_index

    assert probe_index(index_server().url) is None
    reason = probe_index(NO_INDEX_URL, timeout=2)
    assert reason is not None and "refused" in reason.lower()


def test_pypm_runner_defaults_to_tmp_cwd(pypm, tmp_path: Path) -> None:
    r = pypm("init", "--name", "here")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "pyproject.toml").is_file()


def test_large_file_is_streamed_with_faults(dists: DistFactory, index_server) -> None:
    import os

    w = dists.wheel("huge", "1.0", modules={"huge/blob.bin": os.urandom(3 << 20)})  # > one 1 MiB chunk
    data = w.read_bytes()
    idx = index_server()
    assert httpx.get(idx.file_url(w.name)).content == data
    idx.corrupt(w.name, times=1)
    bad = httpx.get(idx.file_url(w.name)).content
    assert len(bad) == len(data) and [i for i in range(len(data)) if bad[i] != data[i]] == [len(data) // 2]
    # A drop in the middle of a ranged request: the client gets exactly nbytes from the offset.
    idx.drop_after(w.name, 1500)
    with httpx.Client() as c, pytest.raises(httpx.RemoteProtocolError):
        with c.stream("GET", idx.file_url(w.name), headers={"Range": "bytes=2000000-"}) as r:
            got = b""
            try:
                for chunk in r.iter_raw():
                    got += chunk
            finally:
                assert r.status_code == 206 and got == data[2000000:2001500]


def test_canary_set_is_complete_for_a_universal_resolution(canary_index: IndexServer, canary_project: Path, tmp_path: Path) -> None:
    """uv (an implementation nobody here wrote) resolves the canary universally from the local index alone."""
    import shutil

    from tests.support.fixtures import LOCAL_WHEELS

    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (pip install -e '.[test]'): cannot cross-check the canary set")
    args = [uv, "pip", "compile", "--no-config", "--universal", "--python-version", "3.9", "--no-header",
            "--no-annotate", "--index-url", canary_index.url, "--cache-dir", str(tmp_path / "uv-cache"),
            str(canary_project / "pyproject.toml"), "--group", "dev"]
    if LOCAL_WHEELS.is_dir():
        args += ["--extra", "heavy", "--find-links", str(LOCAL_WHEELS)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "UV_PYTHON_DOWNLOADS": "never", "PIP_CONFIG_FILE": "/dev/null"}
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, cwd=canary_project)
    assert r.returncode == 0, r.stderr
    assert "requests==2.32.3" in r.stdout and "tomli==" in r.stdout and "mypy==1.10.0" in r.stdout
    assert all(p.startswith("/simple/") or p.startswith("/files/") for _, p, _ in canary_index.requests)
