"""Path dependencies end to end: `[tool.pypm.sources]` and `NAME @ file://` requirements, against a
real index on 127.0.0.1 for everything else, real builds in the sandbox, real venvs and runs.

The libraries are built by a small in-tree PEP 517/660 backend that reads its own
pyproject.toml, so no build dependency has to come from the index."""

from __future__ import annotations

import json
import os
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from pypm.lockfile import LockedPackage, loads
from tests.e2e.test_sync import installed

BACKEND = '''\
"""In-tree PEP 517/660 backend: a wheel of src/<module> with the metadata of pyproject.toml."""
import base64, hashlib, os, tomllib, zipfile


def _project():
    with open("pyproject.toml", "rb") as f:
        p = tomllib.load(f)["project"]
    if "version" in p.get("dynamic", []):  # computed by the backend: from the VERSION file
        with open("VERSION") as f:
            p["version"] = f.read().strip()
    return p


def _h(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _wheel(directory, files):
    p = _project()
    name, version = p["name"].replace("-", "_"), p["version"]
    di = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\\nName: {p['name']}\\nVersion: {version}\\n"
    meta += "".join(f"Requires-Dist: {d}\\n" for d in p.get("dependencies", []))
    files = dict(files)
    files[f"{di}/METADATA"] = meta.encode()
    if p.get("scripts"):  # [project.scripts]: console scripts
        files[f"{di}/entry_points.txt"] = ("[console_scripts]\\n" + "".join(
            f"{k} = {v}\\n" for k, v in p["scripts"].items())).encode()
    files[f"{di}/WHEEL"] = b"Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    record = "".join(f"{k},{_h(v)},{len(v)}\\n" for k, v in files.items()) + f"{di}/RECORD,,\\n"
    out = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(directory, out), "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
        z.writestr(f"{di}/RECORD", record)
    return out


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = {}
    for base, _, names in os.walk("src"):
        for n in names:
            path = os.path.join(base, n)
            with open(path, "rb") as f:
                files[os.path.relpath(path, "src")] = f.read()
    return _wheel(wheel_directory, files)


def _editable_requires():
    with open("pyproject.toml", "rb") as f:
        return tomllib.load(f).get("tool", {}).get("backend", {}).get("editable-requires", [])


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    for r in _editable_requires():  # as hatchling needs `editables`: an import, which fails without it
        __import__(r.replace("-", "_"))
    module = _project()["name"].replace("-", "_")
    return _wheel(wheel_directory, {f"_{module}_editable.pth": (os.path.abspath("src") + "\\n").encode()})


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return _editable_requires()
'''


def write_lib(root: Path, name: str, version: str = "0.3.0", deps: list[str] | None = None, *,
              value: str = "one", tool: str = "", dynamic: str = "", build: bool = True,
              scripts: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    module = name.replace("-", "_")
    (root / "_backend.py").write_text(BACKEND)
    (root / "src" / module).mkdir(parents=True, exist_ok=True)
    (root / "src" / module / "__init__.py").write_text(f"VALUE = {value!r}\n")
    head = '[build-system]\nrequires = []\nbuild-backend = "_backend"\nbackend-path = ["."]\n\n' if build else ""
    ver = f'version = "{version}"\n' if not dynamic else f"dynamic = [{dynamic}]\n"
    if "version" in dynamic:  # the in-tree backend reads it from here
        (root / "VERSION").write_text(version + "\n")
    text = (head + f'[project]\nname = "{name}"\n{ver}requires-python = ">=3.9"\n'
            f"dependencies = {json.dumps(deps or [])}\n"
            + ("[project.scripts]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in scripts.items()) if scripts else "")
            + tool)
    (root / "pyproject.toml").write_text(text)
    return root


def write_app(root: Path, url: str, deps: list[str], tool: str = "", python: str = ">=3.9") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "app"\nversion = "1.0"\nrequires-python = "{python}"\ndependencies = {json.dumps(deps)}\n\n'
        f'[tool.pypm]\nindex-url = "{url}"\n' + tool)
    return root


@pytest.fixture
def world(dists, index_server, tmp_path):
    for name, version in [("alpha", "1.0"), ("beta", "2.0")]:
        dists.wheel(name, version)
    return index_server(), tmp_path


def lock_of(project: Path) -> dict[str, LockedPackage]:
    return {p.name: p for p in loads((project / "pypm.lock").read_text()).packages}


def run_py(pypm, project: Path, code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return pypm("run", *flags, "--", "python", "-c", code, cwd=project)


def test_editable_source_is_locked_from_its_pyproject_installed_and_live_in_the_sandbox(pypm, world):
    server, tmp = world
    write_lib(tmp / "lib", "lib", deps=["alpha>=1"])
    app = write_app(tmp / "app", server.url, ["lib"], '\n[tool.pypm.sources]\nlib = { path = "../lib", editable = true }\n')
    r = pypm("sync", cwd=app)
    assert r.returncode == 0, r.stderr
    lock = lock_of(app)
    lib = lock["lib"]
    assert lib.source == {"editable": "../lib"} and lib.version == "0.3.0"  # relative, as written
    assert not lib.files() and [d.name for d in lib.dependencies] == ["alpha"]
    assert installed(app / ".venv") == {"lib": "0.3.0", "alpha": "1.0"}
    # sandboxed (the default): ../lib is outside the project, and still importable, read-only
    r = run_py(pypm, app, "import lib; print(lib.VALUE)")
    assert (r.returncode, r.stdout) == (0, "one\n"), r.stderr
    (tmp / "lib" / "src" / "lib" / "__init__.py").write_text("VALUE = 'two'\n")  # editable: seen at once
    r = run_py(pypm, app, "import lib; print(lib.VALUE)")
    assert (r.returncode, r.stdout) == (0, "two\n"), r.stderr
    r = run_py(pypm, app, "open(__import__('lib').__file__, 'a')")
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    # PEP 610: where it lives
    du = subprocess.run([str(app / ".venv" / "bin" / "python"), "-c",
                         "import importlib.metadata as m; print(m.distribution('lib').read_text('direct_url.json'))"],
                        capture_output=True, text=True, check=True)
    assert json.loads(du.stdout) == {"url": (tmp / "lib").resolve().as_uri(), "dir_info": {"editable": True}}
    assert pypm("lock", "--check", cwd=app).returncode == 0


def test_file_url_requirement_is_built_and_a_change_to_its_dependencies_relocks_on_run(pypm, world):
    server, tmp = world
    lib = write_lib(tmp / "lib", "lib", deps=["alpha"])
    app = write_app(tmp / "app", server.url, [f"lib @ {lib.as_uri()}"])
    r = pypm("sync", cwd=app)
    assert r.returncode == 0, r.stderr
    entry = lock_of(app)["lib"]
    assert entry.source == {"directory": str(lib)}  # absolute, as the URL gave it
    assert installed(app / ".venv") == {"lib": "0.3.0", "alpha": "1.0"}
    (lib / "src" / "lib" / "__init__.py").write_text("VALUE = 'two'\n")  # built, not editable: a copy
    r = run_py(pypm, app, "import lib; print(lib.VALUE)")
    assert (r.returncode, r.stdout) == (0, "one\n"), r.stderr
    # its dependencies change: the lock is stale, and `pypm run` relocks, rebuilds and installs
    write_lib(lib, "lib", deps=["alpha", "beta"], value="three")
    assert pypm("lock", "--check", cwd=app).returncode != 0
    r = run_py(pypm, app, "import lib, beta; print(lib.VALUE)")
    assert (r.returncode, r.stdout) == (0, "three\n"), r.stderr
    assert installed(app / ".venv") == {"lib": "0.3.0", "alpha": "1.0", "beta": "2.0"}
    assert [d.name for d in lock_of(app)["lib"].dependencies] == ["alpha", "beta"]
    # then a no-op: nothing relocked or rebuilt
    r = pypm("sync", cwd=app)
    assert r.returncode == 0 and "nothing to do" in r.stderr, r.stderr


def test_a_source_made_editable_or_built_again_is_installed_the_other_way(pypm, world):
    """The same directory, the same build inputs, another kind: the venv's copy is replaced (it was
    kept as it was: a built lib stayed a copy after `editable = true`)."""
    server, tmp = world
    write_lib(tmp / "lib", "lib")
    app = write_app(tmp / "app", server.url, ["lib"], '\n[tool.pypm.sources]\nlib = { path = "../lib" }\n')
    assert pypm("sync", cwd=app).returncode == 0
    (tmp / "lib" / "src" / "lib" / "__init__.py").write_text("VALUE = 'two'\n")
    assert run_py(pypm, app, "import lib; print(lib.VALUE)").stdout == "one\n"  # a copy
    pyproject = app / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"../lib" }', '"../lib", editable = true }'))
    r = run_py(pypm, app, "import lib; print(lib.VALUE)")
    assert (r.returncode, r.stdout) == (0, "two\n"), r.stderr  # the sources themselves now
    pyproject.write_text(pyproject.read_text().replace(", editable = true", ""))
    (tmp / "lib" / "src" / "lib" / "__init__.py").write_text("VALUE = 'three'\n")
    r = run_py(pypm, app, "import lib; print(lib.VALUE)")
    assert (r.returncode, r.stdout) == (0, "three\n"), r.stderr  # built again
    (tmp / "lib" / "src" / "lib" / "__init__.py").write_text("VALUE = 'four'\n")
    assert run_py(pypm, app, "import lib; print(lib.VALUE)").stdout == "three\n"  # a copy again


def test_what_a_backend_asks_for_an_editable_build_is_locked_for_the_project_and_its_path_dependencies(
        pypm, world, dists):
    """hatchling's editable build asks for `editables` (get_requires_for_build_editable), which
    no [build-system] requires names: the lock asks the backend (in the sandbox) and locks it as a
    build dependency, of the project and of an editable path dependency; the answer is kept in
    the cache until the directory's build inputs change. Without it the sync's build stopped:
    "also needs edhelper, which the lock's build dependencies do not provide"."""
    server, tmp = world
    server.add(dists.wheel("edhelper", "1.0", modules={"edhelper.py": ""}))
    asks = '\n[tool.backend]\neditable-requires = ["edhelper"]\n'
    write_lib(tmp / "lib", "lib", tool=asks)
    app = write_lib(tmp / "app", "app", deps=["lib"], tool=asks + f'\n[tool.pypm]\nindex-url = "{server.url}"\n'
                    '\n[tool.pypm.sources]\nlib = { path = "../lib", editable = true }\n')
    r = pypm("sync", "--verbose", cwd=app)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("what its editable build needs") == 2, r.stderr  # the project's, lib's
    lock = lock_of(app)
    assert [d.name for d in lock["app"].build_dependencies] == ["edhelper"]
    assert [d.name for d in lock["lib"].build_dependencies] == ["edhelper"]
    assert installed(app / ".venv") == {"app": "0.3.0", "lib": "0.3.0"}
    r = run_py(pypm, app, "import lib; print(lib.VALUE)")
    assert (r.returncode, r.stdout) == (0, "one\n"), r.stderr
    # locked again with the same inputs: the backends are not asked again
    (app / "pypm.lock").unlink()
    r = pypm("lock", "--verbose", cwd=app)
    assert r.returncode == 0 and "what its editable build needs" not in r.stderr, r.stderr
    assert [d.name for d in lock_of(app)["app"].build_dependencies] == ["edhelper"]
    # a dependency added (what `pypm add` changes): not asked again either
    pyproject = app / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('dependencies = ["lib"]', 'dependencies = ["lib", "alpha"]'))
    r = pypm("lock", "--verbose", cwd=app)
    assert r.returncode == 0 and "what its editable build needs" not in r.stderr, r.stderr
    # lib's build configuration changes: its backend is asked again, the project's is not
    write_lib(tmp / "lib", "lib", tool=asks.replace('"edhelper"', ""))
    r = pypm("lock", "--verbose", cwd=app)
    assert r.returncode == 0 and r.stderr.count("what its editable build needs") == 1, r.stderr
    assert lock_of(app)["lib"].build_dependencies == []
    # --refresh asks every backend again
    r = pypm("lock", "--refresh", "--verbose", cwd=app)
    assert r.returncode == 0 and r.stderr.count("what its editable build needs") == 2, r.stderr


def test_sources_are_followed_into_path_dependencies_and_a_local_wheel_is_hashed(pypm, world, dists):
    server, tmp = world
    wheel = dists.wheel("gamma", "4.0")
    (tmp / "wheels").mkdir()
    local = tmp / "wheels" / wheel.name
    local.write_bytes(wheel.read_bytes())
    write_lib(tmp / "core", "core", deps=["gamma"], tool='\n[tool.pypm.sources]\ngamma = { path = "../wheels/'
              + wheel.name + '" }\n')
    write_lib(tmp / "lib", "lib", deps=["core"], tool='\n[tool.pypm.sources]\ncore = { path = "../core" }\n')
    app = write_app(tmp / "app", server.url, ["lib"], '\n[tool.pypm.sources]\nlib = { path = "../lib" }\n')
    r = pypm("sync", cwd=app)
    assert r.returncode == 0, r.stderr
    lock = lock_of(app)
    assert lock["lib"].source == {"directory": "../lib"}
    assert lock["core"].source == {"directory": "../core"}  # relative to the app, as the lock writes it
    assert lock["gamma"].source == {"path": f"../wheels/{wheel.name}"}
    import hashlib

    assert [w.sha256 for w in lock["gamma"].wheels] == [hashlib.sha256(local.read_bytes()).hexdigest()]
    assert installed(app / ".venv") == {"lib": "0.3.0", "core": "0.3.0", "gamma": "4.0"}
    # the export names the directories (PEP 751) relative to where it is written
    r = pypm("export", "--format", "pylock.toml", cwd=app)
    assert r.returncode == 0, r.stderr
    data = tomllib.loads(r.stdout)
    dirs = {p["name"]: p.get("directory") for p in data["packages"]}
    assert dirs["lib"] == {"path": "../lib", "editable": False} and dirs["core"] == {"path": "../core", "editable": False}


@pytest.mark.parametrize("case, lib_kwargs, deps, tool, expect", [
    ("missing", None, ["lib"], '[tool.pypm.sources]\nlib = { path = "../nowhere" }\n', "nowhere does not exist"),
    ("no build-system", {"build": False}, ["lib"], '[tool.pypm.sources]\nlib = { path = "../lib" }\n',
     "has no [build-system], so lib cannot be built and installed"),
    ("misnamed", {}, ["other"], '[tool.pypm.sources]\nother = { path = "../lib" }\n',
     "holds the project 'lib', not 'other'"),
    ("vcs", {}, ["lib @ hg+https://example.invalid/lib"], "", "is a VCS URL pypm cannot lock"),
    ("twice", {}, ["lib @ file:../lib"], '[tool.pypm.sources]\nlib = { path = "../lib", editable = true }\n',
     "lib has two sources"),
    ("bad key", {}, ["lib"], '[tool.pypm.sources]\nlib = { mirror = "x" }\n', "has unknown key(s) mirror"),
    ("bad index", {}, ["lib"], '[tool.pypm.sources]\nlib = { index = "x" }\n', "it must be the URL of a simple index"),
    ("index and more", {}, ["lib"], '[tool.pypm.sources]\nlib = { index = "https://h/simple/", editable = true }\n',
     "gives an `index` and `editable`"),
    ("bad git", {}, ["lib"], '[tool.pypm.sources]\nlib = { git = "x" }\n',
     "pypm fetches git repositories over https, http, ssh or file URLs"),
])
def test_bad_sources_are_refused_naming_the_file_and_the_fix(pypm, world, case, lib_kwargs, deps, tool, expect):
    server, tmp = world
    if lib_kwargs is not None:
        write_lib(tmp / "lib", "lib", **lib_kwargs)
    app = write_app(tmp / "app", server.url, deps, "\n" + tool)
    r = pypm("lock", cwd=app)
    assert r.returncode == 3, (case, r.returncode, r.stderr)
    assert expect in r.stderr and "Traceback" not in r.stderr, (case, r.stderr)
    assert "hint:" in r.stderr, r.stderr
    assert not (app / "pypm.lock").exists()


def test_a_path_dependency_missing_at_sync_time_is_a_clear_error(pypm, world):
    server, tmp = world
    write_lib(tmp / "lib", "lib")
    app = write_app(tmp / "app", server.url, ["lib"], '\n[tool.pypm.sources]\nlib = { path = "../lib" }\n')
    assert pypm("lock", cwd=app).returncode == 0
    os.rename(tmp / "lib", tmp / "gone")
    r = pypm("sync", "--frozen", cwd=app)
    assert r.returncode == 2 and "holds no pyproject.toml" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (app / ".venv").exists()


def test_add_a_directory_by_path_writes_the_source_and_remove_takes_it_away(pypm, world):
    server, tmp = world
    write_lib(tmp / "libs" / "lib", "lib", deps=["alpha"])
    app = write_app(tmp / "app", server.url, [])
    (app / "pyproject.toml").write_text((app / "pyproject.toml").read_text() + "# the end\n")
    before = (app / "pyproject.toml").read_text()
    r = pypm("add", "--editable", "../libs/lib", cwd=app)
    assert r.returncode == 0, r.stderr
    text = (app / "pyproject.toml").read_text()
    assert 'lib = { path = "../libs/lib", editable = true }' in text
    data = tomllib.loads(text)
    # the name without a bound (the directory is the version), the path relative to the project
    assert data["project"]["dependencies"] == ["lib"]
    assert data["tool"]["pypm"]["sources"] == {"lib": {"path": "../libs/lib", "editable": True}}
    assert lock_of(app)["lib"].source == {"editable": "../libs/lib"}
    assert installed(app / ".venv") == {"lib": "0.3.0", "alpha": "1.0"}
    r = run_py(pypm, app, "import lib; print(lib.VALUE)")
    assert (r.returncode, r.stdout) == (0, "one\n"), r.stderr
    r = pypm("remove", "lib", cwd=app)
    assert r.returncode == 0, r.stderr
    assert "lib" not in installed(app / ".venv")
    # the source went with the last requirement naming it: the file is as it was, byte for byte
    assert (app / "pyproject.toml").read_text() == before


def test_add_a_path_that_cannot_be_locked_puts_everything_back(pypm, world):
    server, tmp = world
    write_lib(tmp / "lib", "lib", build=False)
    app = write_app(tmp / "app", server.url, [])
    before = (app / "pyproject.toml").read_bytes()
    r = pypm("add", "../lib", cwd=app)
    assert r.returncode == 3 and "has no [build-system]" in r.stderr, r.stderr
    assert (app / "pyproject.toml").read_bytes() == before
    assert not (app / "pypm.lock").exists()


@pytest.mark.parametrize("editable", [False, True])
def test_a_setuptools_project_is_built_with_its_locked_build_dependencies(pypm, dists, index_server, tmp_path,
                                                                         editable):
    from tests.support.fixtures import canary_wheels_dir

    d = canary_wheels_dir()
    st = sorted(d.glob("setuptools-*-py3-none-any.whl")) if d else []
    if not st:
        pytest.skip("no setuptools wheel among the canary fixtures (run scripts/fetch_fixtures.py)")
    dists.wheel("alpha", "1.0")
    server = index_server([dists.dir, st[-1]])
    lib = tmp_path / "lib"
    (lib / "src" / "lib").mkdir(parents=True)
    (lib / "src" / "lib" / "__init__.py").write_text("VALUE = 'built by setuptools'\n")
    (lib / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "lib"\nversion = "2.1"\nrequires-python = ">=3.9"\ndependencies = ["alpha"]\n')
    flag = ", editable = true" if editable else ""
    app = write_app(tmp_path / "app", server.url, ["lib"], f'\n[tool.pypm.sources]\nlib = {{ path = "../lib"{flag} }}\n',
                    python=">=3.10")  # (the fixtures' setuptools needs 3.10)
    r = pypm("sync", cwd=app, timeout=300)
    assert r.returncode == 0, r.stderr
    entry = lock_of(app)["lib"]
    assert [b.name for b in entry.build_dependencies] == ["setuptools"]  # locked as an sdist's are
    assert installed(app / ".venv") == {"lib": "2.1", "alpha": "1.0"}  # setuptools only in the build env
    r = run_py(pypm, app, "import lib; print(lib.VALUE)")
    assert (r.returncode, r.stdout) == (0, "built by setuptools\n"), r.stderr


def test_a_path_dependency_with_a_dynamic_version_is_locked_from_its_backend(pypm, world):
    server, tmp = world
    write_lib(tmp / "lib", "lib", "0.7.1", deps=["alpha"], dynamic='"version"', value="dynamic")
    app = write_app(tmp / "app", server.url, ["lib"], '\n[tool.pypm.sources]\nlib = { path = "../lib" }\n')
    r = pypm("sync", cwd=app)
    assert r.returncode == 0, r.stderr
    assert "Reading the metadata of lib (../lib) from its build backend" in r.stderr, r.stderr
    entry = lock_of(app)["lib"]
    assert entry.version == "0.7.1" and [d.name for d in entry.dependencies] == ["alpha"]
    assert installed(app / ".venv") == {"lib": "0.7.1", "alpha": "1.0"}
    r = run_py(pypm, app, "import lib; print(lib.VALUE)")
    assert (r.returncode, r.stdout) == (0, "dynamic\n"), r.stderr
    # --no-build: the backend is not run, and the table's gap is the error it was
    (app / "pypm.lock").unlink()
    r = pypm("lock", "--no-build", cwd=app)
    assert r.returncode == 3 and "version is listed in `project.dynamic`" in r.stderr, r.stderr
    # the project itself with a computed version: locked as 0, shown as built (it said `==0`)
    me = write_lib(tmp / "me", "me", "2.5.0", dynamic='"version"',
                   tool=f'\n[tool.pypm]\nindex-url = "{server.url}"\n')
    r = pypm("sync", cwd=me)
    assert r.returncode == 0 and " + me==2.5.0 (editable)" in r.stderr, r.stderr
    assert lock_of(me)["me"].version == "0" and installed(me / ".venv") == {"me": "2.5.0"}


def test_a_directorys_metadata_from_its_backend_is_kept_until_any_of_its_files_or_tags_change(pypm, world):
    """The backend is asked once for a tree as it is: a relock for another reason reuses its answer;
    any change to a file the backend could read (not only pyproject.toml: here the VERSION file it
    reads), or a new tag in the repository holding it, has it asked again."""
    server, tmp = world
    lib = write_lib(tmp / "lib", "lib", "0.7.1", deps=["alpha"], dynamic='"version"')
    app = write_app(tmp / "app", server.url, ["lib"], '\n[tool.pypm.sources]\nlib = { path = "../lib" }\n')
    asked = "Reading the metadata of lib (../lib) from its build backend"

    def relock(deps: list[str]) -> subprocess.CompletedProcess[str]:
        text = (app / "pyproject.toml").read_text()
        old = text.split("dependencies = ", 1)[1].split("\n", 1)[0]
        (app / "pyproject.toml").write_text(text.replace(f"dependencies = {old}", f"dependencies = {json.dumps(deps)}"))
        r = pypm("lock", cwd=app)
        assert r.returncode == 0, r.stderr
        return r

    r = pypm("lock", cwd=app)
    assert r.returncode == 0 and asked in r.stderr, r.stderr
    r = relock(["lib", "beta"])  # the project's own change: lib's tree is as it was
    assert asked not in r.stderr, r.stderr
    assert lock_of(app)["lib"].version == "0.7.1" and "beta" in lock_of(app)
    (lib / "VERSION").write_text("0.7.2\n")  # a file outside the lock's inputs, which the backend reads
    r = relock(["lib"])
    assert asked in r.stderr and lock_of(app)["lib"].version == "0.7.2", r.stderr
    r = relock(["lib", "beta"])
    assert asked not in r.stderr, r.stderr
    r = pypm("lock", "--refresh", cwd=app)  # (asked again when told)
    assert r.returncode == 0 and asked in r.stderr, r.stderr
    # a record somebody else could have written (group-writable) is not trusted: it names what a sync installs
    (kept,) = (pypm.cache_dir / "path-metadata").iterdir()
    kept.chmod(0o664)
    r = relock(["lib"])
    assert asked in r.stderr, r.stderr
    r = relock(["lib", "beta"])  # (written again, this user's alone)
    assert asked not in r.stderr, r.stderr
    # a record in use is kept by `pypm cache prune` (which goes by mtime): each use touches it
    (kept,) = (pypm.cache_dir / "path-metadata").iterdir()
    os.utime(kept, (time.time() - 40 * 86400,) * 2)
    r = relock(["lib", "alpha"])
    assert asked not in r.stderr and kept.stat().st_mtime > time.time() - 3600, r.stderr
    pypm("cache", "prune", cwd=app, check=True)
    assert kept.exists()
    # the repository holding it: a new commit or tag (setuptools-scm's version) is a new tree
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "one"]):
        subprocess.run([*git, *cmd], cwd=tmp, check=True, capture_output=True)
    r = relock(["lib"])
    assert asked in r.stderr, r.stderr
    r = relock(["lib", "beta"])
    assert asked not in r.stderr, r.stderr
    subprocess.run([*git, "tag", "v0.7.2"], cwd=tmp, check=True, capture_output=True)
    r = relock(["lib"])
    assert asked in r.stderr, r.stderr
