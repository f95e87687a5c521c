"""Remote direct references: `NAME @ https://host/NAME-1.0-py3-none-any.whl` (or an sdist) and
`[tool.pypm.sources] NAME = { url = "..." }`, served by a real HTTP server on 127.0.0.1 that is not
the index the rest comes from; real downloads, hashes, sandboxed builds, venvs and runs."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tomllib
from pathlib import Path

from tests.e2e.test_path_deps import lock_of, run_py, write_app, write_lib
from tests.e2e.test_sync import installed


def _sdist_of(lib: Path, name: str, version: str, deps: list[str], dest: Path, metadata_version: str = "2.2") -> Path:
    """A real sdist of a write_lib() project: its tree under NAME-VERSION/ and a PKG-INFO
    (Metadata-Version 2.2 by default: static), built by the in-tree backend (no build dependency
    from an index)."""
    top = f"{name}-{version}"
    pkg_info = (f"Metadata-Version: {metadata_version}\nName: {name}\nVersion: {version}\nRequires-Python: >=3.9\n"
                + "".join(f"Requires-Dist: {d}\n" for d in deps)).encode()
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{top}.tar.gz"
    with tarfile.open(out, "w:gz") as tf:
        for p in sorted(lib.rglob("*")):
            if p.is_file():
                tf.add(p, f"{top}/{p.relative_to(lib).as_posix()}")
        info = tarfile.TarInfo(f"{top}/PKG-INFO")
        info.size = len(pkg_info)
        tf.addfile(info, io.BytesIO(pkg_info))
    return out


def _direct_url(venv: Path, name: str) -> dict:
    r = subprocess.run([str(venv / "bin" / "python"), "-c",
                        f"import importlib.metadata as m; print(m.distribution({name!r}).read_text('direct_url.json'))"],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def test_a_wheel_by_url_is_locked_with_its_hash_installed_and_exported(pypm, dists, index_server, tmp_path):
    dists.wheel("alpha", "1.0")
    index = index_server()
    # The file host: another server, serving only gamma (the index has no gamma at all).
    wheel = dists.wheel("gamma", "4.0", requires_dist=["alpha>=1"])
    files = tmp_path / "files"
    files.mkdir()
    (files / wheel.name).write_bytes(wheel.read_bytes())
    wheel.unlink()
    host = index_server([files])
    url = host.file_url(wheel.name)
    sha = hashlib.sha256((files / wheel.name).read_bytes()).hexdigest()
    app = write_app(tmp_path / "app", index.url, [f"gamma @ {url}"])
    r = pypm("sync", cwd=app)
    assert r.returncode == 0, r.stderr
    gamma = lock_of(app)["gamma"]
    assert gamma.source == {"url": url} and gamma.version == "4.0"
    assert [(w.url, w.sha256) for w in gamma.wheels] == [(url, sha)]
    assert [d.name for d in gamma.dependencies] == ["alpha"]
    assert not index.requests_for("/simple/gamma")  # a direct reference: the index is not asked
    assert installed(app / ".venv") == {"gamma": "4.0", "alpha": "1.0"}
    assert _direct_url(app / ".venv", "gamma") == {"url": url, "archive_info": {"hashes": {"sha256": sha}}}
    for _ in range(2):  # a fresh venv again, from the cache (the second time by the recorded recipe)
        shutil.rmtree(app / ".venv")
        r = pypm("sync", cwd=app)
        assert r.returncode == 0, r.stderr
        assert _direct_url(app / ".venv", "gamma") == {"url": url, "archive_info": {"hashes": {"sha256": sha}}}
    r = run_py(pypm, app, "import gamma; print(gamma.__name__)")
    assert (r.returncode, r.stdout) == (0, "gamma\n"), r.stderr
    assert pypm("lock", "--check", cwd=app).returncode == 0
    # pip gets the file by its URL, not `gamma==4.0` from the index
    r = pypm("export", "--format", "requirements.txt", cwd=app)
    assert r.returncode == 0, r.stderr
    assert f"gamma @ {url} \\\n    --hash=sha256:{sha}\n" in r.stdout
    data = tomllib.loads(pypm("export", "--format", "pylock.toml", cwd=app).stdout)
    (entry,) = [p for p in data["packages"] if p["name"] == "gamma"]
    assert entry["wheels"][0]["url"] == url and entry["wheels"][0]["hashes"] == {"sha256": sha}
    # another URL is another input: the lock is stale until locked again
    (app / "pyproject.toml").write_text((app / "pyproject.toml").read_text().replace(url, url + f"#sha256={sha}"))
    assert pypm("lock", "--check", cwd=app).returncode != 0
    assert pypm("lock", cwd=app).returncode == 0
    assert lock_of(app)["gamma"].source == {"url": url}  # (the fragment is not part of the URL)


def test_an_sdist_by_url_is_built_in_the_sandbox_and_a_wrong_hash_installs_nothing(pypm, dists, index_server,
                                                                                    tmp_path):
    dists.wheel("alpha", "1.0")
    index = index_server()
    lib = write_lib(tmp_path / "src-lib", "lib", "0.5", deps=["alpha"], value="from the sdist")
    sdist = _sdist_of(lib, "lib", "0.5", ["alpha"], tmp_path / "files")
    host = index_server([tmp_path / "files"])
    url = host.file_url(sdist.name)
    app = write_app(tmp_path / "app", index.url, ["lib"], f'\n[tool.pypm.sources]\nlib = {{ url = "{url}" }}\n')
    r = pypm("sync", cwd=app)
    assert r.returncode == 0, r.stderr
    entry = lock_of(app)["lib"]
    assert entry.source == {"url": url} and entry.sdist is not None
    assert entry.sdist.sha256 == hashlib.sha256(sdist.read_bytes()).hexdigest()
    assert installed(app / ".venv") == {"lib": "0.5", "alpha": "1.0"}
    r = run_py(pypm, app, "import lib; print(lib.VALUE)")
    assert (r.returncode, r.stdout) == (0, "from the sdist\n"), r.stderr

    # A `#sha256=` that does not match what the server sends: the sdist is downloaded to read its
    # PKG-INFO, and refused against the hash; no lock is written, nothing is installed.
    bad = "0" * 64
    other = write_app(tmp_path / "other", index.url, [f"lib @ {url}#sha256={bad}"])
    r = pypm("sync", cwd=other)
    assert r.returncode != 0
    assert bad in r.stderr and sdist.name in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "lib (" in r.stderr and "pyproject.toml: `project.dependencies`" in r.stderr, r.stderr
    assert not (other / "pypm.lock").exists() and not (other / ".venv").exists()


def test_a_url_that_is_not_there_is_a_clear_error_and_add_by_url_writes_the_requirement(pypm, dists, index_server,
                                                                                       tmp_path):
    dists.wheel("alpha", "1.0")
    index = index_server()
    missing = index.file_url("ghost-1.0-py3-none-any.whl")
    app = write_app(tmp_path / "app", index.url, [f"ghost @ {missing}"])
    r = pypm("lock", cwd=app)
    assert r.returncode != 0 and "404" in r.stderr and "ghost-1.0-py3-none-any.whl" in r.stderr, r.stderr
    assert "ghost (" in r.stderr and "pyproject.toml: `project.dependencies`" in r.stderr, r.stderr  # who named it
    assert "Traceback" not in r.stderr and not (app / "pypm.lock").exists()

    wheel = dists.wheel("delta", "2.0")
    index.add(wheel)
    url = index.file_url(wheel.name)
    app2 = write_app(tmp_path / "app2", index.url, [])
    r = pypm("add", f"delta @ {url}", cwd=app2)
    assert r.returncode == 0, r.stderr
    assert tomllib.loads((app2 / "pyproject.toml").read_text())["project"]["dependencies"] == [f"delta @ {url}"]
    assert lock_of(app2)["delta"].source == {"url": url}
    assert installed(app2 / ".venv") == {"delta": "2.0"}
    r = pypm("remove", "delta", cwd=app2)
    assert r.returncode == 0, r.stderr
    assert "delta" not in lock_of(app2) and installed(app2 / ".venv") == {}
    # the URL alone (as uv takes it): named by its file name
    r = pypm("add", url, cwd=app2)
    assert r.returncode == 0, r.stderr
    assert tomllib.loads((app2 / "pyproject.toml").read_text())["project"]["dependencies"] == [f"delta @ {url}"]
    assert installed(app2 / ".venv") == {"delta": "2.0"}
    r = pypm("add", index.url, cwd=app2)  # a URL that names no file
    assert r.returncode == 2 and "a URL needs a name (`NAME @ URL`)" in r.stderr and "Traceback" not in r.stderr
