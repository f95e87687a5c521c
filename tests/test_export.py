"""pypm export (PEP 751 pylock.toml, requirements.txt) and import_pylock, against real installers.

The lock is built by hand from the files a real index on 127.0.0.1 serves (wheels built by
tests/support/dists.py), so these tests do not depend on the resolver; what they check is
that installers nobody here wrote (uv, pip --require-hashes) install exactly the locked set.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pypm.errors import LockError
from pypm.export import import_pylock, is_pylock_name, render_pylock, selection_markers
from pypm.lockfile import Dependency, FileEntry, Lock, LockedPackage, dumps, write_atomic
from pypm.selection import Selection
from tests.support.dists import build_sdist, build_wheel
from tests.support.index_server import IndexServer

HOST_PY = "/usr/bin/python3"  # world-readable, has venv; a different interpreter from pypm's own

# name -> (version, requires_dist, extra wheel tags). Every package has a py3-none-any wheel.
GRAPH = {
    "alpha": ("1.0", ["gamma==1.0"], ["cp311-cp311-manylinux_2_17_x86_64"]),
    "beta": ("2.0", ["delta==1.5; extra == 'fast'"], []),
    "gamma": ("1.0", [], []),
    "delta": ("1.5", [], []),
    "epsilon": ("0.3", [], []),
    "tomlish": ("2.1", [], []),
    "winonly": ("1.0", [], []),
    "zeta": ("9.0", [], []),
}


@pytest.fixture(scope="session")
def index(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("dists")
    for name, (ver, reqs, tags) in GRAPH.items():
        build_wheel(d, name, ver, requires_dist=reqs)
        for t in tags:
            build_wheel(d, name, ver, requires_dist=reqs, tag=t)
    build_sdist(d, "gamma", "1.0")
    build_wheel(d, "alpha", "0.9", requires_dist=["gamma==1.0"])  # an older release, for `lock --from`
    with IndexServer([d]) as idx:
        yield idx


def _files(idx: IndexServer, name: str, version: str) -> tuple[FileEntry | None, list[FileEntry]]:
    sdist, wheels = None, []
    for dist in idx.dists:
        if dist.project != name or f"-{version}" not in dist.filename:
            continue
        fe = FileEntry(filename=dist.filename, url=idx.file_url(dist.filename), sha256=dist.sha256, size=dist.size)
        if dist.filename.endswith(".whl"):
            wheels.append(fe)
        else:
            sdist = fe
    return sdist, wheels


def make_lock(idx: IndexServer, *, virtual: bool = True) -> Lock:
    """The lock `pypm lock` would write for the project in `write_project`."""

    def pkg(name: str, **kw) -> LockedPackage:
        ver = GRAPH[name][0]
        sdist, wheels = _files(idx, name, ver)
        return LockedPackage(name=name, version=ver, source={"registry": idx.url}, sdist=sdist, wheels=wheels, **kw)

    dep = lambda n, marker=None, extras=(): Dependency(n, GRAPH[n][0], marker, tuple(extras))  # noqa: E731
    root = LockedPackage(
        name="app", version="0.1.0", source={"virtual" if virtual else "editable": "."},
        dependencies=[dep("alpha"), dep("beta", extras=["fast"]),
                      dep("tomlish", 'python_version < "3.11"'), dep("winonly", 'sys_platform == "win32"')],
        optional_dependencies={"heavy": [dep("zeta")]},
        dependency_groups={"dev": [dep("epsilon"), dep("tomlish")]},
    )
    return Lock(
        requires_python=">=3.8",
        content_hash="sha256:" + "0" * 64,
        packages=[
            root,
            pkg("alpha", main=True, dependencies=[dep("gamma")]),
            pkg("beta", main=True, optional_dependencies={"fast": [dep("delta")]}),
            pkg("gamma", main=True),
            pkg("delta", main=True),
            pkg("epsilon", groups=["dev"]),
            pkg("tomlish", main=True, groups=["dev"]),
            pkg("winonly", main=True, marker='sys_platform == "win32"'),
            pkg("zeta", extras=["heavy"]),
        ],
    )


PYPROJECT = """\
[project]
name = "app"
version = "0.1.0"
requires-python = ">=3.8"
dependencies = ["alpha==1.0", "beta[fast]==2.0", 'tomlish>=2; python_version < "3.11"',
                'winonly; sys_platform == "win32"']

[project.optional-dependencies]
heavy = ["zeta"]

[dependency-groups]
dev = ["epsilon", "tomlish"]
"""


def write_project(root: Path, lock: Lock, *, virtual: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    text = PYPROJECT
    if not virtual:
        text += '\n[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
    (root / "pyproject.toml").write_text(text)
    write_atomic(root / "pypm.lock", dumps(lock))
    return root


def clean_env(**extra: str) -> dict[str, str]:
    """The host's environment without settings that would change what pypm, pip or uv do."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYPM_", "UV_", "VIRTUAL_ENV"))}
    return dict(env, PIP_CONFIG_FILE=os.devnull, **extra)


def pypm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = clean_env()
    return subprocess.run([sys.executable, "-m", "pypm", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=60)


def fresh_venv(path: Path) -> Path:
    subprocess.run([HOST_PY, "-m", "venv", "--without-pip", str(path)], check=True, timeout=60)
    return path / "bin" / "python"


def installed(py: Path) -> set[str]:
    code = ("import importlib.metadata as m; "
            "print('\\n'.join(sorted(f\"{d.metadata['Name'].lower()}=={d.version}\" for d in m.distributions())))")
    out = subprocess.run([str(py), "-I", "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def uv_env(tmp: Path) -> dict[str, str]:
    return clean_env(UV_NO_CONFIG="1", UV_CACHE_DIR=str(tmp / "uv-cache"), UV_PYTHON_DOWNLOADS="never", NO_COLOR="1")


def uv_bin() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


DEFAULT_SET = {"alpha==1.0", "beta==2.0", "gamma==1.0", "delta==1.5", "epsilon==0.3", "tomlish==2.1"}


# --------------------------------------------------------------------------- other installers accept it

def test_pylock_installs_exactly_the_locked_set_with_uv(index: IndexServer, tmp_path: Path) -> None:
    proj = write_project(tmp_path / "app", make_lock(index))
    r = pypm("-C", str(proj), "export", "--format", "pylock.toml", "-o", str(proj / "pylock.toml"))
    assert r.returncode == 0, r.stderr
    py = fresh_venv(tmp_path / "venv")
    r = subprocess.run([uv_bin(), "pip", "install", "--python", str(py), "-r", str(proj / "pylock.toml")],
                       capture_output=True, text=True, env=uv_env(tmp_path), timeout=120)
    assert r.returncode == 0, r.stderr
    # Python 3.11: tomlish's main edge (< 3.11) does not apply but the dev group needs it anyway;
    # winonly (win32) and zeta (extra not asked for) stay out.
    assert installed(py) == DEFAULT_SET


def test_pylock_no_dev_keeps_markers_uv_honours_them(index: IndexServer, tmp_path: Path) -> None:
    proj = write_project(tmp_path / "app", make_lock(index))
    out = proj / "pylock.prod.toml"
    r = pypm("-C", str(proj), "export", "--no-dev", "--extra", "heavy", "-o", str(out))
    assert r.returncode == 0, r.stderr
    data = tomllib.loads(out.read_text())
    by_name = {p["name"]: p for p in data["packages"]}
    assert "epsilon" not in by_name
    assert by_name["tomlish"]["marker"] == 'python_version < "3.11"'
    assert by_name["winonly"]["marker"] == 'sys_platform == "win32"'
    assert "zeta" in by_name and "marker" not in by_name["zeta"]
    py = fresh_venv(tmp_path / "venv")
    r = subprocess.run([uv_bin(), "pip", "install", "--python", str(py), "-r", str(out)],
                       capture_output=True, text=True, env=uv_env(tmp_path), timeout=120)
    assert r.returncode == 0, r.stderr
    assert installed(py) == {"alpha==1.0", "beta==2.0", "gamma==1.0", "delta==1.5", "zeta==9.0"}


def test_requirements_txt_installs_with_pip_require_hashes(index: IndexServer, tmp_path: Path) -> None:
    proj = write_project(tmp_path / "app", make_lock(index))
    req = tmp_path / "requirements.txt"
    r = pypm("-C", str(proj), "export", "--format", "requirements.txt", "-o", str(req))
    assert r.returncode == 0, r.stderr
    text = req.read_text()
    assert "--hash=sha256:" in text and 'tomlish==2.1 \\' in text
    py = fresh_venv(tmp_path / "venv")
    env = clean_env()
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-cache-dir",
                        "--disable-pip-version-check", "--require-hashes", "--index-url", index.url,
                        "-r", str(req)], capture_output=True, text=True, env=env, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert installed(py) == DEFAULT_SET


def test_requirements_txt_hash_mismatch_is_refused_by_pip(index: IndexServer, tmp_path: Path) -> None:
    # The hashes are what pip checks: a wrong one makes pip refuse, so the export's hashes matter.
    lock = make_lock(index)
    g = lock.get("gamma", "1.0")
    assert g is not None
    g.wheels = [FileEntry(w.filename, w.url, "ab" * 32, w.size) for w in g.wheels]
    g.sdist = None
    proj = write_project(tmp_path / "app", lock)
    req = tmp_path / "requirements.txt"
    assert pypm("-C", str(proj), "export", "--format", "requirements.txt", "--no-dev", "-o", str(req)).returncode == 0
    py = fresh_venv(tmp_path / "venv")
    env = clean_env()
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-cache-dir",
                        "--disable-pip-version-check", "--require-hashes", "--index-url", index.url,
                        "-r", str(req)], capture_output=True, text=True, env=env, timeout=180)
    assert r.returncode != 0
    assert "HASHES" in (r.stdout + r.stderr).upper()
    assert "gamma" in r.stdout + r.stderr


# --------------------------------------------------------------------------- content and determinism

def test_pylock_content_and_determinism(index: IndexServer, tmp_path: Path) -> None:
    lock = make_lock(index)
    text = render_pylock(lock, Selection())
    data = tomllib.loads(text)
    assert data["lock-version"] == "1.0" and data["created-by"] == "pypm"
    assert data["requires-python"] == ">=3.8"
    names = [p["name"] for p in data["packages"]]
    # Universal: winonly is in the file (with its marker); only the zeta extra is left out.
    assert names == sorted(names) and set(names) == {n.split("==")[0] for n in DEFAULT_SET} | {"winonly"}
    alpha = next(p for p in data["packages"] if p["name"] == "alpha")
    assert alpha["index"] == index.url
    assert len(alpha["wheels"]) == 2
    for w in alpha["wheels"]:
        served = index.dist(w["name"])
        assert w["url"] == index.file_url(w["name"])
        assert w["size"] == served.size and w["hashes"] == {"sha256": served.sha256}
    gamma = next(p for p in data["packages"] if p["name"] == "gamma")
    assert gamma["sdist"]["name"] == "gamma-1.0.tar.gz"
    # Reached unconditionally through the dev group, tomlish needs no marker in this selection.
    assert "marker" not in next(p for p in data["packages"] if p["name"] == "tomlish")
    # Same lock in another order -> same bytes.
    shuffled = make_lock(index)
    shuffled.packages.reverse()
    for p in shuffled.packages:
        p.wheels.reverse()
        p.dependencies.reverse()
    assert render_pylock(shuffled, Selection()) == text


def test_stdout_and_file_exports_are_identical(index: IndexServer, tmp_path: Path) -> None:
    proj = write_project(tmp_path / "app", make_lock(index, virtual=False), virtual=False)
    for fmt, name in (("pylock.toml", "pylock.toml"), ("requirements.txt", "requirements.txt")):
        shown = pypm("export", "--format", fmt, cwd=proj)
        assert shown.returncode == 0, shown.stderr
        assert pypm("export", "--format", fmt, "-o", name, cwd=proj).returncode == 0
        assert (proj / name).read_text() == shown.stdout
        assert pypm("-q", "export", "--format", fmt, "-o", name, cwd=proj).stderr == ""


def test_non_virtual_project_is_an_editable_directory_entry(index: IndexServer, tmp_path: Path) -> None:
    proj = write_project(tmp_path / "app", make_lock(index, virtual=False), virtual=False)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "pylock.toml"
    assert pypm("-C", str(proj), "export", "-o", str(out)).returncode == 0
    entries = [p for p in tomllib.loads(out.read_text())["packages"] if p["name"] == "app"]
    assert entries == [{"name": "app", "directory": {"path": "../app", "editable": True}}]
    assert pypm("-C", str(proj), "export", "--no-install-project", "-o", str(out)).returncode == 0
    assert all(p["name"] != "app" for p in tomllib.loads(out.read_text())["packages"])
    req = tmp_path / "requirements.txt"
    assert pypm("-C", str(proj), "export", "--format", "requirements.txt", "-o", str(req)).returncode == 0
    assert req.read_text().splitlines()[1] == "-e ./app"


# A PEP 517/660 backend inside the project (backend-path), with no build requirements, so uv
# can build the editable project without reaching any index.
IN_TREE_BACKEND = r"""
import base64, hashlib, os, zipfile

NAME, VERSION = "app", "0.1.0"
HERE = os.path.dirname(os.path.abspath(__file__))


def _wheel(directory, files):
    di = f"{NAME}-{VERSION}.dist-info"
    files = dict(files)
    files[f"{di}/METADATA"] = f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n\n"
    files[f"{di}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    rows = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        rows.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{di}/RECORD"] = "\n".join(rows + [f"{di}/RECORD,,"]) + "\n"
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(directory, name), "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory, {"app_mod.py": open(os.path.join(HERE, "app_mod.py")).read()})


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory, {"_app_editable.pth": HERE + "\n"})
"""


def test_editable_project_entry_is_installed_by_uv(index: IndexServer, tmp_path: Path) -> None:
    proj = write_project(tmp_path / "app", make_lock(index, virtual=False), virtual=False)
    (proj / "backend.py").write_text(IN_TREE_BACKEND)
    (proj / "app_mod.py").write_text("WHERE = __file__\n")
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "pylock.toml"
    r = pypm("-C", str(proj), "export", "--no-dev", "-o", str(out))
    assert r.returncode == 0, r.stderr
    py = fresh_venv(tmp_path / "venv")
    r = subprocess.run([uv_bin(), "pip", "install", "--python", str(py), "-r", str(out)],
                       capture_output=True, text=True, env=uv_env(tmp_path), timeout=180)
    assert r.returncode == 0, r.stderr
    assert installed(py) == {"app==0.1.0", "alpha==1.0", "beta==2.0", "gamma==1.0", "delta==1.5"}
    # Editable: the module is imported from the project directory itself.
    where = subprocess.run([str(py), "-I", "-c", "import app_mod; print(app_mod.WHERE)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
    assert where == str(proj / "app_mod.py")


def test_selection_markers_combine_paths() -> None:
    d = Dependency
    root = LockedPackage("r", "0", {"virtual": "."},
                         dependencies=[d("a", "1", 'sys_platform == "linux"'), d("b", "1")],
                         dependency_groups={"dev": [d("c", "1", 'python_version >= "3.12"')]})
    lock = Lock(">=3.8", "sha256:", [
        root,
        LockedPackage("a", "1", {}, dependencies=[d("c", "1", 'python_version < "3.10"')]),
        LockedPackage("b", "1", {}, dependencies=[d("a", "1", 'os_name == "nt"')]),
        LockedPackage("c", "1", {}, marker='implementation_name == "cpython"'),
    ])
    m = selection_markers(lock, Selection(groups=frozenset()))
    assert m[("b", "1")] is None
    assert m[("a", "1")] == 'os_name == "nt" or sys_platform == "linux"'
    assert m[("c", "1")] == ('(implementation_name == "cpython" and os_name == "nt" and python_version < "3.10") or '
                             '(implementation_name == "cpython" and python_version < "3.10" and sys_platform == "linux")')
    m = selection_markers(lock, Selection())
    assert 'python_version >= "3.12"' in (m[("c", "1")] or "")


def test_selection_markers_stay_bounded_on_diamonds() -> None:
    # 10 layers of two conditional parallel edges: 2**10 paths to `end`. The marker falls back
    # to the lock's own marker for `end` instead of growing without bound.
    d = Dependency
    pkgs = [LockedPackage("r", "0", {"virtual": "."}, dependencies=[d("n0", "1")])]
    for i in range(10):
        pkgs.append(LockedPackage(f"n{i}", "1", {}, dependencies=[
            d(f"a{i}", "1", f'python_version == "3.{i}"'), d(f"b{i}", "1", f'platform_machine == "m{i}"')]))
        nxt = "end" if i == 9 else f"n{i + 1}"
        pkgs += [LockedPackage(f"a{i}", "1", {}, dependencies=[d(nxt, "1")]),
                 LockedPackage(f"b{i}", "1", {}, dependencies=[d(nxt, "1")])]
    pkgs.append(LockedPackage("end", "1", {}, marker='os_name == "posix"'))
    m = selection_markers(Lock("", "", pkgs), Selection())
    assert m[("end", "1")] == 'os_name == "posix"'
    assert m[("n1", "1")] == 'platform_machine == "m0" or python_version == "3.0"'


def test_invalid_marker_in_lock_is_a_lock_error() -> None:
    lock = Lock("", "", [LockedPackage("r", "0", {"virtual": "."}, dependencies=[Dependency("a", "1", "python_version <")]),
                         LockedPackage("a", "1", {})])
    with pytest.raises(LockError, match="the edge to a==1 has an invalid marker"):
        selection_markers(lock, Selection())


# --------------------------------------------------------------------------- errors

def test_export_errors_are_clear(index: IndexServer, tmp_path: Path) -> None:
    lock = make_lock(index)
    proj = write_project(tmp_path / "app", lock)
    r = pypm("-C", str(proj), "export", "--extra", "nope")
    assert r.returncode == 2 and "--extra nope" in r.stderr and "heavy" in r.stderr and "Traceback" not in r.stderr
    r = pypm("-C", str(proj), "export", "--group", "nope")
    assert r.returncode == 2 and "--group nope" in r.stderr and "dev" in r.stderr
    r = pypm("-C", str(proj), "export", "-o", str(tmp_path / "lock.toml"))
    assert r.returncode == 2 and "pylock.toml" in r.stderr
    r = pypm("-C", str(proj), "export", "-o", str(tmp_path / "missing" / "pylock.toml"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    # A placeholder hash: refused, naming the package, nothing written.
    g = lock.get("gamma", "1.0")
    assert g is not None and g.sdist is not None
    g.sdist = FileEntry(g.sdist.filename, g.sdist.url, "", g.sdist.size)
    write_atomic(proj / "pypm.lock", dumps(lock))
    out = proj / "pylock.toml"
    r = pypm("-C", str(proj), "export", "-o", str(out))
    assert r.returncode == 3 and "gamma==1.0" in r.stderr and "--refresh" in r.stderr
    assert not out.exists()
    (proj / "pypm.lock").unlink()
    r = pypm("-C", str(proj), "export")
    assert r.returncode == 3 and "pypm.lock does not exist" in r.stderr and "`pypm lock`" in r.stderr
    assert "--frozen" not in r.stderr  # export has no such flag; the message must not mention it


def test_failed_export_keeps_the_old_file(index: IndexServer, tmp_path: Path) -> None:
    proj = write_project(tmp_path / "app", make_lock(index))
    out = proj / "pylock.toml"
    out.write_text("old\n")
    lock = make_lock(index)
    lock.packages = [p for p in lock.packages if p.name != "gamma"]  # alpha's edge now dangles
    write_atomic(proj / "pypm.lock", dumps(lock))
    r = pypm("-C", str(proj), "export", "-o", str(out))
    assert r.returncode == 3 and "gamma==1.0" in r.stderr
    assert out.read_text() == "old\n"
    assert sorted(x.name for x in proj.iterdir()) == ["pylock.toml", "pypm.lock", "pyproject.toml"]


# --------------------------------------------------------------------------- import

def test_import_round_trip(index: IndexServer, tmp_path: Path) -> None:
    lock = make_lock(index)
    path = tmp_path / "pylock.toml"
    path.write_text(render_pylock(lock, Selection(extras=frozenset({"*"}))))
    got = import_pylock(path)
    assert got.requires_python == ">=3.8" and got.root() is None
    assert {(p.name, p.version) for p in got.packages} == {
        (p.name, p.version) for p in lock.packages if not p.is_root}
    for p in got.packages:
        orig = lock.get(p.name, p.version)
        assert orig is not None
        assert p.source == {"registry": index.url}
        assert sorted(p.files()) == sorted(orig.files())
    winonly = got.get("winonly", "1.0")
    assert winonly is not None and winonly.marker == 'sys_platform == "win32"'


def test_import_accepts_path_entries_and_minor_versions(tmp_path: Path) -> None:
    (tmp_path / "pylock.toml").write_text(
        'lock-version = "1.3"\ncreated-by = "other"\n\n[[packages]]\nname = "Foo_Bar"\nversion = "1.0"\n'
        'wheels = [{ path = "w/foo_bar-1.0-py3-none-any.whl", hashes = { sha256 = "' + "A" * 64 + '" } }]\n'
        '\n[[packages]]\nname = "me"\ndirectory = { path = "." }\n')
    got = import_pylock(tmp_path / "pylock.toml")
    (p,) = got.packages
    assert p.name == "foo-bar" and p.version == "1.0"
    (w,) = p.wheels
    assert w.filename == "foo_bar-1.0-py3-none-any.whl" and w.sha256 == "a" * 64
    assert w.url == (tmp_path / "w" / "foo_bar-1.0-py3-none-any.whl").as_uri()


@pytest.mark.parametrize("body, needle", [
    ('created-by = "x"\n', "`lock-version` is missing"),
    ('lock-version = "2.0"\n', "lock-version 1.x"),
    ('lock-version = 1\n', "lock-version"),
    ('lock-version = "1.0"\npackages = 3\n', "`packages`"),
    ('lock-version = "1.0"\n[[packages]]\nversion = "1"\n', "packages[0].name"),
    ('lock-version = "1.0"\n[[packages]]\nname = "a"\nversion = "x y"\nindex = "u"\n', "not a PEP 440 version"),
    ('lock-version = "1.0"\n[[packages]]\nname = "a"\nversion = "1"\nmarker = "python_version <"\nindex = "u"\n',
     "packages[0] (a).marker"),
    ('lock-version = "1.0"\n[[packages]]\nname = "a"\nversion = "1"\nwheels = [{ url = "http://x/a.whl" }]\n',
     "packages[0] (a).wheels[0].hashes"),
    ('lock-version = "1.0"\n[[packages]]\nname = "a"\nversion = "1"\nsdist = { hashes = { sha256 = "00" } }\n',
     "neither `url` nor `path`"),
    ('lock-version = "1.0"\n[[packages]]\nname = "a"\nversion = "1"\n', "no index, archive, vcs, sdist or wheels"),
    ('lock-version = "1.0"\n[[packages\n', "not valid TOML"),
])
def test_import_errors_name_file_and_key(tmp_path: Path, body: str, needle: str) -> None:
    path = tmp_path / "pylock.toml"
    path.write_text(body)
    with pytest.raises(LockError) as e:
        import_pylock(path)
    assert str(path) in str(e.value) and needle in str(e.value)
    assert e.value.hint


def test_import_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LockError, match="does not exist"):
        import_pylock(tmp_path / "pylock.toml")


def test_pylock_names() -> None:
    assert is_pylock_name("pylock.toml") and is_pylock_name("pylock.dev.toml")
    assert not is_pylock_name("pylock.a.b.toml") and not is_pylock_name("lock.toml")


# --------------------------------------------------------------------------- with the real `pypm lock`

REAL_PYPROJECT = """\
[project]
name = "real"
version = "0.1.0"
requires-python = ">=3.8"
dependencies = ["alpha", 'tomlish; python_version < "3.11"']

[dependency-groups]
dev = ["epsilon"]

[tool.pypm]
index-url = "{url}"
"""


def test_locked_by_pypm_then_exported_installs_with_uv(index: IndexServer, tmp_path: Path, pypm) -> None:
    proj = tmp_path / "real"
    proj.mkdir()
    (proj / "pyproject.toml").write_text(REAL_PYPROJECT.format(url=index.url))
    pypm("lock", cwd=proj, check=True)
    out = proj / "pylock.toml"
    r = pypm("export", "-o", out, cwd=proj, check=True)
    assert "out of date" not in r.stderr
    data = tomllib.loads(out.read_text())
    by_name = {p["name"]: p for p in data["packages"]}
    assert set(by_name) == {"alpha", "gamma", "epsilon", "tomlish"}
    assert by_name["alpha"]["version"] == "1.0"
    assert by_name["tomlish"]["marker"] == 'python_version < "3.11"'
    py = fresh_venv(tmp_path / "venv")
    r = subprocess.run([uv_bin(), "pip", "install", "--python", str(py), "-r", str(out)],
                       capture_output=True, text=True, env=uv_env(tmp_path), timeout=120)
    assert r.returncode == 0, r.stderr
    assert installed(py) == {"alpha==1.0", "gamma==1.0", "epsilon==0.3"}
    # Editing pyproject.toml makes the lock stale: export still writes it, and says so.
    (proj / "pyproject.toml").write_text(REAL_PYPROJECT.format(url=index.url).replace('"epsilon"', '"zeta"'))
    r = pypm("export", "-o", out, cwd=proj, check=True)
    assert "warning: pypm.lock is out of date with pyproject.toml" in r.stderr
    assert "epsilon" in out.read_text()


def test_lock_from_pylock_starts_from_its_pins(index: IndexServer, tmp_path: Path, pypm) -> None:
    proj = tmp_path / "real"
    proj.mkdir()
    (proj / "pyproject.toml").write_text(REAL_PYPROJECT.format(url=index.url))
    # A pylock from "another tool" pinning the older alpha.
    old = index.dist("alpha-0.9-py3-none-any.whl")
    (tmp_path / "pylock.toml").write_text(
        'lock-version = "1.0"\ncreated-by = "someone-else"\n\n[[packages]]\nname = "alpha"\nversion = "0.9"\n'
        f'index = "{index.url}"\n'
        f'wheels = [{{ url = "{index.file_url(old.filename)}", hashes = {{ sha256 = "{old.sha256}" }} }}]\n')
    pypm("lock", "--from", tmp_path / "pylock.toml", cwd=proj, check=True)
    lock = tomllib.loads((proj / "pypm.lock").read_text())
    assert {p["name"]: p["version"] for p in lock["package"]}["alpha"] == "0.9"
    # Without --from the existing pin is kept; --upgrade-package moves it.
    pypm("lock", "--upgrade-package", "alpha", cwd=proj, check=True)
    lock = tomllib.loads((proj / "pypm.lock").read_text())
    assert {p["name"]: p["version"] for p in lock["package"]}["alpha"] == "1.0"


def test_lock_from_a_bad_pylock_fails_and_writes_nothing(index: IndexServer, tmp_path: Path, pypm) -> None:
    proj = tmp_path / "real"
    proj.mkdir()
    (proj / "pyproject.toml").write_text(REAL_PYPROJECT.format(url=index.url))
    bad = tmp_path / "pylock.toml"
    bad.write_text('lock-version = "2.0"\ncreated-by = "x"\n')
    r = pypm("lock", "--from", bad, cwd=proj)
    assert r.returncode == 3, r.stderr
    assert str(bad) in r.stderr and "lock-version" in r.stderr and "Traceback" not in r.stderr
    assert not (proj / "pypm.lock").exists()


def test_lock_from_a_pylock_written_by_uv(index: IndexServer, tmp_path: Path, pypm) -> None:
    # Interop the other way: a pylock.toml that uv (nobody here wrote it) exported is a valid
    # starting point. uv pins the old alpha; pypm's lock of the unpinned project keeps that pin.
    uvproj = tmp_path / "uvproj"
    uvproj.mkdir()
    (uvproj / "pyproject.toml").write_text(
        '[project]\nname = "uvproj"\nversion = "0.1.0"\nrequires-python = ">=3.8"\n'
        'dependencies = ["alpha==0.9", \'tomlish; python_version < "3.11"\']\n')
    env = uv_env(tmp_path)
    for cmd in (["lock"], ["export", "--format", "pylock.toml", "-o", "pylock.toml"]):
        r = subprocess.run([uv_bin(), *cmd, "--default-index", index.url], cwd=uvproj, capture_output=True,
                           text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
    imported = import_pylock(uvproj / "pylock.toml")
    assert {(p.name, p.version) for p in imported.packages} == {("alpha", "0.9"), ("gamma", "1.0"), ("tomlish", "2.1")}
    assert all(f.has_valid_hash() and f.size for p in imported.packages for f in p.files())

    proj = tmp_path / "real"
    proj.mkdir()
    (proj / "pyproject.toml").write_text(REAL_PYPROJECT.format(url=index.url))
    pypm("lock", "--from", uvproj / "pylock.toml", cwd=proj, check=True)
    versions = {p["name"]: p["version"] for p in tomllib.loads((proj / "pypm.lock").read_text())["package"]}
    assert versions["alpha"] == "0.9" and versions["gamma"] == "1.0"
