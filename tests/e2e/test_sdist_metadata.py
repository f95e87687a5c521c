"""An sdist whose PKG-INFO cannot be trusted (Metadata-Version older than 2.2, as most older
sdists on an index): its metadata comes from its build backend, run in the sandbox at lock time,
as pip and uv do. A real index on 127.0.0.1, real sdists built by an in-tree backend."""

from __future__ import annotations

import pytest

from tests.e2e.test_path_deps import lock_of, run_py, write_app, write_lib
from tests.e2e.test_sync import installed
from tests.e2e.test_url_deps import _sdist_of


def test_an_sdist_with_old_metadata_is_locked_from_its_backend_and_cached(pypm, dists, index_server, tmp_path):
    dists.wheel("alpha", "1.0")
    lib = write_lib(tmp_path / "src-old", "oldlib", "1.5", deps=["alpha>=1"], value="built from an old sdist")
    # a backend that warns (as setuptools does about old sdists): for the package's authors, kept in
    # the build's log, not printed on pypm's stderr
    (lib / "_backend.py").write_text((lib / "_backend.py").read_text().replace(
        "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n",
        "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n"
        "    import warnings; warnings.warn('deprecated: noise for the authors')\n"))
    # PKG-INFO 2.1, and it does not even list the dependency: only the backend's metadata does
    _sdist_of(lib, "oldlib", "1.5", [], dists.dir, metadata_version="2.1")
    index = index_server()
    app = write_app(tmp_path / "app", index.url, ["oldlib"])
    r = pypm("sync", cwd=app)
    assert r.returncode == 0, r.stderr
    assert "Reading the metadata of oldlib==1.5 (oldlib-1.5.tar.gz) from its build backend" in r.stderr
    assert "noise for the authors" not in r.stderr, r.stderr
    entry = lock_of(app)["oldlib"]
    assert entry.sdist is not None and [d.name for d in entry.dependencies] == ["alpha"]
    assert installed(app / ".venv") == {"oldlib": "1.5", "alpha": "1.0"}
    r = run_py(pypm, app, "import oldlib; print(oldlib.VALUE)")
    assert (r.returncode, r.stdout) == (0, "built from an old sdist\n"), r.stderr
    # locked again from scratch: the metadata is in the cache, the backend is not asked again
    (app / "pypm.lock").unlink()
    r = pypm("lock", cwd=app)
    assert r.returncode == 0 and "Reading the metadata" not in r.stderr, r.stderr
    assert [d.name for d in lock_of(app)["oldlib"].dependencies] == ["alpha"]
    # --no-build: nothing is built, so the sdist cannot be locked (the error says why)
    (app / "pypm.lock").unlink()
    r = pypm("lock", "--no-build", "--refresh", cwd=app)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr


def test_a_backend_that_fails_to_give_metadata_is_a_clear_error(pypm, dists, index_server, tmp_path):
    dists.wheel("alpha", "1.0")
    lib = write_lib(tmp_path / "src-bad", "badlib", "2.0", deps=["alpha"])
    (lib / "_backend.py").write_text((lib / "_backend.py").read_text()
                                     + "\n\ndef prepare_metadata_for_build_wheel(d, config_settings=None):\n"
                                       "    raise SystemExit('no metadata for you')\n")
    _sdist_of(lib, "badlib", "2.0", [], dists.dir, metadata_version="1.2")
    index = index_server()
    app = write_app(tmp_path / "app", index.url, ["badlib"])
    r = pypm("lock", cwd=app)
    assert r.returncode != 0 and "Traceback" not in r.stderr.split("its output ends with")[0], r.stderr
    assert "building the metadata of badlib==2.0 (badlib-2.0.tar.gz) failed in the sandbox" in r.stderr, r.stderr
    assert "no metadata for you" in r.stderr and not (app / "pypm.lock").exists()


@pytest.mark.live
def test_live_an_old_sdist_only_release_is_locked_built_and_run(pypm, tmp_path):
    # docopt 0.6.2 exists only as an sdist whose PKG-INFO predates Metadata 2.2: its dependencies
    # (none) come from setuptools, run in the sandbox, with setuptools from the default index.
    import shutil

    app = tmp_path / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text('[project]\nname = "app"\nversion = "1"\nrequires-python = ">=3.11"\n'
                                        'dependencies = ["docopt==0.6.2"]\n')
    r = pypm("sync", cwd=app, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "Reading the metadata of docopt==0.6.2 (docopt-0.6.2.tar.gz) from its build backend" in r.stderr
    assert "BuildBackendWarning" not in r.stderr
    entry = lock_of(app)["docopt"]
    assert entry.sdist is not None and not entry.wheels and not entry.dependencies
    assert [d.name for d in entry.build_dependencies] == ["setuptools"]
    r = run_py(pypm, app, "import docopt; print(docopt.__version__)")
    assert (r.returncode, r.stdout) == (0, "0.6.2\n"), r.stderr
    shutil.rmtree(app)  # a lock against the default index never outlives the test
