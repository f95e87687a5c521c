"""End-to-end tests of `pypm sync`: real index servers on 127.0.0.1, real wheels, real venvs."""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping

import pytest
from packaging.utils import canonicalize_name, parse_wheel_filename

from pypm.lockfile import Dependency, FileEntry, Lock, LockedPackage, dumps

# --------------------------------------------------------------------------- helpers (also used by test_run)

BACKEND = '''\
"""A minimal in-tree PEP 517/660 backend, so editable installs need no build dependency."""
import base64, hashlib, os, zipfile

NAME, VERSION = "app", "0.1.0"


def _h(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _wheel(directory, files):
    di = f"{NAME}-{VERSION}.dist-info"
    files = dict(files)
    files[f"{di}/METADATA"] = f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n".encode()
    files[f"{di}/WHEEL"] = b"Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    record = "".join(f"{p},{_h(d)},{len(d)}\\n" for p, d in files.items()) + f"{di}/RECORD,,\\n"
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(directory, name), "w") as z:
        for p, d in files.items():
            z.writestr(p, d)
        z.writestr(f"{di}/RECORD", record)
    return name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    with open("src/app/__init__.py", "rb") as f:
        return _wheel(wheel_directory, {"app/__init__.py": f.read()})


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory, {"_app_editable.pth": (os.path.abspath("src") + "\\n").encode()})


def get_requires_for_build_wheel(config_settings=None):
    return []


get_requires_for_build_editable = get_requires_for_build_wheel
'''


def write_project(root: Path, *, name: str = "app", deps: Iterable[str] = (),
                  groups: Mapping[str, Iterable[str]] | None = None,
                  extras: Mapping[str, Iterable[str]] | None = None, editable: bool = False,
                  tool: str = "") -> Path:
    """A pyproject.toml (virtual unless `editable`: then an in-tree backend builds it)."""
    root.mkdir(parents=True, exist_ok=True)
    q = lambda xs: "[" + ", ".join(f'"{x}"' for x in xs) + "]"  # noqa: E731
    text = f'[project]\nname = "{name}"\nversion = "0.1.0"\nrequires-python = ">=3.9"\ndependencies = {q(deps)}\n'
    if extras:
        text += "\n[project.optional-dependencies]\n" + "".join(f"{k} = {q(v)}\n" for k, v in extras.items())
    if groups:
        text += "\n[dependency-groups]\n" + "".join(f"{k} = {q(v)}\n" for k, v in groups.items())
    if editable:
        text = ('[build-system]\nrequires = []\nbuild-backend = "_backend"\nbackend-path = ["."]\n\n' + text)
        (root / "_backend.py").write_text(BACKEND)
        (root / "src" / "app").mkdir(parents=True, exist_ok=True)
        (root / "src" / "app" / "__init__.py").write_text('GREETING = "hello from app"\n')
    # The interpreter is named (pypm's own) so each test does not scan PATH; discovery itself is
    # covered by tests/test_interpreter.py and the canary tests.
    text += f'\n[tool.pypm]\nfind-links = []\npython = "{sys.executable}"\n' + tool
    (root / "pyproject.toml").write_text(text)
    return root


def _nv(path: Path) -> tuple[str, str]:
    if path.name.endswith(".tar.gz"):
        from packaging.utils import parse_sdist_filename

        name, version = parse_sdist_filename(path.name)
        return str(name), str(version)
    name, version, _, _ = parse_wheel_filename(path.name)
    return str(name), str(version)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_lock(root: Path, server, wheels: Iterable[Path], *, main: Iterable[str] = (),
               groups: Mapping[str, Iterable[str]] | None = None, extras: Mapping[str, Iterable[str]] | None = None,
               edges: Mapping[str, Iterable[str]] | None = None, editable: bool = False,
               sha: Mapping[str, str] | None = None, name: str = "app", sdists: Iterable[Path] = (),
               build_edges: Mapping[str, Iterable[str]] | None = None) -> Path:
    """pypm.lock for `root` pinning `wheels` and `sdists` (served by `server`); edges/main/groups
    by package name; `build_edges`: a package's build-dependencies (also pinned in `wheels`)."""
    wheels = list(wheels) + list(sdists)
    by_name = {canonicalize_name(_nv(w)[0]): w for w in wheels}

    def dep(n: str) -> Dependency:
        return Dependency(n, _nv(by_name[canonicalize_name(n)])[1])

    pkgs = []
    for w in wheels:
        n, v = _nv(w)
        entry = FileEntry(w.name, server.file_url(w.name), (sha or {}).get(n, sha256_of(w)), w.stat().st_size)
        is_sdist = w.name.endswith(".tar.gz")
        pkgs.append(LockedPackage(
            name=n, version=v, source={"registry": server.url},
            dependencies=[dep(d) for d in (edges or {}).get(n, ())],
            build_dependencies=[dep(d) for d in (build_edges or {}).get(n, ())],
            wheels=[] if is_sdist else [entry], sdist=entry if is_sdist else None,
        ))
    pkgs.append(LockedPackage(
        name=name, version="0.1.0", source={"editable": "."} if editable else {"virtual": "."},
        dependencies=[dep(d) for d in main],
        dependency_groups={g: [dep(d) for d in ds] for g, ds in (groups or {}).items()},
        optional_dependencies={e: [dep(d) for d in ds] for e, ds in (extras or {}).items()},
    ))
    lock = Lock(requires_python=">=3.9", content_hash="sha256:" + "0" * 64, packages=pkgs)
    (root / "pypm.lock").write_text(dumps(lock))
    return root / "pypm.lock"


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    assert found, f"no site-packages under {venv}"
    return found[0]


def installed(venv: Path) -> dict[str, str]:
    """{canonical name: version} of every dist-info in the venv."""
    out = {}
    for d in site_packages(venv).glob("*.dist-info"):
        n, _, v = d.name[: -len(".dist-info")].partition("-")
        out[str(canonicalize_name(n))] = v
    return out


def record_of(venv: Path, name: str) -> list[tuple[str, str, str]]:
    sp = site_packages(venv)
    [di] = [d for d in sp.glob("*.dist-info") if canonicalize_name(d.name.split("-")[0]) == canonicalize_name(name)]
    with open(di / "RECORD", newline="") as f:
        return [tuple(r) for r in csv.reader(f)]  # type: ignore[misc]


def assert_venv_exact(venv: Path, expected: Mapping[str, str]) -> None:
    """The venv holds exactly `expected` and every file in every RECORD has its recorded hash."""
    assert installed(venv) == {str(canonicalize_name(k)): v for k, v in expected.items()}
    sp = site_packages(venv)
    for name in expected:
        for path, h, _size in record_of(venv, name):
            f = (sp / path).resolve()
            assert f.exists(), f"{name}: {path} listed in RECORD is missing"
            if h:
                algo, _, digest = h.partition("=")
                got = base64.urlsafe_b64encode(hashlib.new(algo, f.read_bytes()).digest()).rstrip(b"=").decode()
                assert got == digest, f"{name}: {path} does not match its RECORD hash"


def snapshot(tree: Path) -> dict[str, tuple[int, int, int]]:
    """(mtime_ns, inode, size) of every file and directory under tree."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[os.path.relpath(p, tree)] = (st.st_mtime_ns, st.st_ino, st.st_size)
    st = os.lstat(tree)
    out["."] = (st.st_mtime_ns, st.st_ino, st.st_size)
    return out


def file_gets(server, filename: str) -> list[dict[str, str]]:
    return [h for m, p, h in server.requests_for(f"/files/{filename}") if m == "GET" and p == f"/files/{filename}"]


@pytest.fixture
def small(dists, index_server, tmp_path):
    """Three pure wheels (one with a console script and data files) on a fresh index, and a project."""
    a = dists.wheel("alpha", "1.0", requires_dist=["beta==2.0"],
                    modules={"alpha/__init__.py": "from beta import B\nA = 'alpha ' + B\n"},
                    entry_points={"console_scripts": {"alpha-hello": "alpha:main"}},
                    data={"data/share/alpha/readme.txt": b"alpha data\n"})
    b = dists.wheel("beta", "2.0", modules={"beta/__init__.py": "B = 'beta'\n"})
    t = dists.wheel("devtool", "3.0", modules={"devtool/__init__.py": "D = 3\n"})
    server = index_server()
    project = write_project(tmp_path / "proj", deps=["alpha"], groups={"dev": ["devtool"]})
    write_lock(project, server, [a, b, t], main=["alpha"], groups={"dev": ["devtool"]}, edges={"alpha": ["beta"]})
    return project, server, {"alpha": a, "beta": b, "devtool": t}


# --------------------------------------------------------------------------- synthetic projects

def test_sync_installs_the_locked_set_and_second_sync_touches_nothing(pypm, small) -> None:
    project, server, wheels = small
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 0, r.stderr
    venv = project / ".venv"
    assert_venv_exact(venv, {"alpha": "1.0", "beta": "2.0", "devtool": "3.0"})
    assert (venv / "bin" / "alpha-hello").exists()
    assert (venv / "share" / "alpha" / "readme.txt").read_bytes() == b"alpha data\n"
    assert (venv / ".pypm" / "state.json").is_file()

    before = snapshot(project)
    server.clear_requests()
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "nothing to do" in r.stderr
    assert snapshot(project) == before, "a no-op sync changed files"
    assert server.requests == [], "a no-op sync used the network"


def test_no_dev_removes_the_group_and_adding_back_relinks_from_cache(pypm, small) -> None:
    project, server, wheels = small
    pypm("sync", "--frozen", cwd=project, check=True)
    pypm("sync", "--frozen", "--no-dev", cwd=project, check=True)
    assert_venv_exact(project / ".venv", {"alpha": "1.0", "beta": "2.0"})
    assert not (site_packages(project / ".venv") / "devtool").exists()
    server.clear_requests()
    pypm("sync", "--frozen", cwd=project, check=True)
    assert_venv_exact(project / ".venv", {"alpha": "1.0", "beta": "2.0", "devtool": "3.0"})
    assert server.requests_for("/files/") == [], "re-adding a group downloaded again instead of using the cache"
    # the installed file is a hard link to the cache's unpacked copy, not a fresh download
    assert (site_packages(project / ".venv") / "devtool" / "__init__.py").stat().st_nlink >= 2


def test_dry_run_prints_the_plan_and_changes_nothing(pypm, small) -> None:
    project, server, _ = small
    r = pypm("sync", "--frozen", "--dry-run", cwd=project)
    assert r.returncode == 0, r.stderr
    assert " + alpha==1.0" in r.stdout and " + devtool==3.0" in r.stdout
    assert not (project / ".venv").exists()
    pypm("sync", "--frozen", cwd=project, check=True)
    r = pypm("sync", "--frozen", "--dry-run", "--no-dev", cwd=project, check=True)
    assert " - devtool==3.0" in r.stdout
    assert "devtool" in installed(project / ".venv")


def test_upgrade_and_downgrade_replace_in_place(pypm, small, dists) -> None:
    project, server, wheels = small
    pypm("sync", "--frozen", cwd=project, check=True)
    b3 = dists.wheel("beta", "3.0", modules={"beta/__init__.py": "B = 'beta3'\n", "beta/extra.py": ""})
    server.add(b3)
    write_lock(project, server, [wheels["alpha"], b3, wheels["devtool"]], main=["alpha"],
               groups={"dev": ["devtool"]}, edges={"alpha": ["beta"]})
    pypm("sync", "--frozen", cwd=project, check=True)
    assert_venv_exact(project / ".venv", {"alpha": "1.0", "beta": "3.0", "devtool": "3.0"})
    write_lock(project, server, wheels.values(), main=["alpha"], groups={"dev": ["devtool"]}, edges={"alpha": ["beta"]})
    pypm("sync", "--frozen", cwd=project, check=True)
    assert_venv_exact(project / ".venv", {"alpha": "1.0", "beta": "2.0", "devtool": "3.0"})
    assert not (site_packages(project / ".venv") / "beta" / "extra.py").exists()


def test_unknown_extra_or_group_is_named(pypm, small) -> None:
    project, _, _ = small
    r = pypm("sync", "--frozen", "--extra", "nosuch", "--group", "nogroup", cwd=project)
    assert r.returncode == 2
    assert "nosuch" in r.stderr and "nogroup" in r.stderr and "Traceback" not in r.stderr
    assert not (project / ".venv").exists()


def test_editable_project_is_installed_through_its_backend(pypm, small) -> None:
    project, server, wheels = small
    write_project(project, deps=["alpha"], groups={"dev": ["devtool"]}, editable=True)
    write_lock(project, server, wheels.values(), main=["alpha"], groups={"dev": ["devtool"]},
               edges={"alpha": ["beta"]}, editable=True)
    pypm("sync", "--frozen", cwd=project, check=True)
    assert installed(project / ".venv")["app"] == "0.1.0"
    py = project / ".venv" / "bin" / "python"
    out = subprocess.run([str(py), "-c", "import app; print(app.GREETING)"], capture_output=True, text=True)
    assert out.stdout.strip() == "hello from app", out.stderr
    # editable: a change in the source is seen without syncing again
    (project / "src" / "app" / "__init__.py").write_text('GREETING = "changed"\n')
    out = subprocess.run([str(py), "-c", "import app; print(app.GREETING)"], capture_output=True, text=True)
    assert out.stdout.strip() == "changed"
    pypm("sync", "--frozen", "--no-install-project", cwd=project, check=True)
    assert "app" not in installed(project / ".venv")


def _venv_bytes(venv: Path) -> dict[str, bytes]:
    return {str(p.relative_to(venv)): p.read_bytes() for p in sorted(venv.rglob("*"))
            if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts and ".pypm" not in p.parts}


def test_two_cache_dirs_give_byte_identical_venvs(pypm, small, tmp_path) -> None:
    """One lock, two machines (two cache dirs, nothing shared): the same RECORDs and the same bytes."""
    project, server, _ = small
    pypm("sync", "--frozen", cwd=project, check=True)
    venv = project / ".venv"
    first = {n: record_of(venv, n) for n in ("alpha", "beta", "devtool")}
    first_bytes = _venv_bytes(venv)
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    server.clear_requests()
    pypm("sync", "--frozen", cwd=project, env={"PYPM_CACHE_DIR": str(tmp_path / "cache2")}, check=True)
    assert server.requests_for("/files/"), "the second machine did not download: the caches were shared"
    assert {n: record_of(venv, n) for n in ("alpha", "beta", "devtool")} == first
    assert _venv_bytes(venv) == first_bytes


# --------------------------------------------------------------------------- faults

def test_dropped_connection_is_resumed_with_range(pypm, dists, index_server, tmp_path) -> None:
    big = dists.wheel("big", "1.0", modules={"big/__init__.py": "", "big/blob.bin": os.urandom(3 << 20)})
    server = index_server()
    project = write_project(tmp_path / "p", deps=["big"])
    write_lock(project, server, [big], main=["big"])
    server.drop_after(big.name, 1 << 20, times=1)
    r = pypm("sync", "--frozen", cwd=project)
    if r.returncode != 0:  # the cut surfaced as an error: the next sync must resume, not restart
        assert "big" in r.stderr, r.stderr
        r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 0, r.stderr
    gets = file_gets(server, big.name)
    ranges = [h.get("Range") or h.get("range") for h in gets]
    assert any(rg and rg.startswith("bytes=") and not rg.startswith("bytes=0-") for rg in ranges), gets
    assert_venv_exact(project / ".venv", {"big": "1.0"})


def test_altered_bytes_fail_naming_everything_and_install_nothing(pypm, dists, index_server, tmp_path) -> None:
    good = dists.wheel("good", "1.0")
    bad = dists.wheel("bad", "1.0", modules={"bad/__init__.py": "X = 1\n" * 100})
    server = index_server()
    project = write_project(tmp_path / "p", deps=["good", "bad"])
    write_lock(project, server, [good, bad], main=["good", "bad"])
    server.corrupt(bad.name)
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 6, r.stderr
    expected = sha256_of(bad)
    assert "bad" in r.stderr and bad.name in r.stderr and expected in r.stderr, r.stderr
    actual = [w for w in r.stderr.replace(",", " ").replace(")", " ").split() if len(w) >= 64 and w != expected]
    assert actual, f"the actual sha256 is not in the message: {r.stderr}"
    assert "Traceback" not in r.stderr
    venv = project / ".venv"
    assert not venv.exists() or installed(venv) == {}, "something was installed despite the bad download"


def test_placeholder_hash_is_refused_naming_the_fix(pypm, dists, index_server, tmp_path) -> None:
    a = dists.wheel("requests-ish", "1.0")
    server = index_server()
    project = write_project(tmp_path / "p", deps=["requests-ish"])
    write_lock(project, server, [a], main=["requests-ish"], sha={"requests-ish": "sha256:TODO"})
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 3, r.stderr
    assert "requests-ish==1.0" in r.stderr and "pypm lock --refresh" in r.stderr
    assert not (project / ".venv").exists()
    assert server.requests_for("/files/") == []


@pytest.mark.parametrize("kind", ["traversal", "absolute", "record-mismatch"])
def test_malicious_wheel_is_refused_and_nothing_escapes(pypm, dists, index_server, tmp_path, kind) -> None:
    target = tmp_path / "outside" / "evil.txt"
    target.parent.mkdir()
    depth = "../" * 12
    if kind == "traversal":
        w = dists.wheel("evil", "1.0", unsafe={f"{depth}{target.relative_to('/')}": b"pwned"})
    elif kind == "absolute":
        w = dists.wheel("evil", "1.0", unsafe={str(target): b"pwned"})
    else:
        w = dists.wheel("evil", "1.0", bad_record_hash_for="evil/__init__.py")
    server = index_server()
    project = write_project(tmp_path / "p", deps=["evil"])
    write_lock(project, server, [w], main=["evil"])
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode in (6, 7), r.stderr
    assert "evil" in r.stderr and "Traceback" not in r.stderr
    assert not target.exists()
    assert not list(tmp_path.rglob("evil.txt"))
    venv = project / ".venv"
    assert not venv.exists() or "evil" not in installed(venv)


def _big_project(dists, index_server, tmp_path, name: str = "p"):
    many = dists.wheel("many", "1.0", modules={f"many/m{i:04d}.py": f"X = {i}\n" for i in range(1500)})
    others = [dists.wheel(f"pkg{i}", "1.0") for i in range(6)]
    server = index_server()
    names = ["many"] + [f"pkg{i}" for i in range(6)]
    project = write_project(tmp_path / name, deps=names)
    write_lock(project, server, [many, *others], main=names)
    return project, {n: "1.0" for n in names}


def test_kill_9_during_install_is_repaired_by_the_next_sync(pypm, dists, index_server, tmp_path) -> None:
    project, expected = _big_project(dists, index_server, tmp_path)
    venv = project / ".venv"
    killed_mid_install = False
    for _attempt in range(5):
        proc = pypm.popen("sync", "--frozen", cwd=project)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            sp = list(venv.glob("lib/python3*/site-packages"))
            if sp and any(sp[0].iterdir()):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.001)
        proc.wait()
        if proc.returncode == -signal.SIGKILL and not (venv / ".pypm" / "state.json").exists():
            killed_mid_install = True
            break
        subprocess.run(["rm", "-rf", str(venv)], check=True)
    assert killed_mid_install, "could not kill pypm while it was installing"
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 0, r.stderr
    assert_venv_exact(venv, expected)


def test_after_reinstall_the_next_sync_and_run_take_the_fast_path(pypm, small) -> None:
    # `sync --reinstall` records the venv as any sync does: the next sync and run skip the plan.
    # (A --frozen sync's state serves only --frozen commands: one without --frozen checks the lock
    # once, by design -- that was the "fast path missed once after --reinstall" seen by hand.)
    project, _, _ = small
    pypm("sync", "--frozen", cwd=project, check=True)
    pypm("sync", "--frozen", "--reinstall", cwd=project, check=True)
    r = pypm("-v", "sync", "--frozen", cwd=project, check=True)
    assert "not syncing" in r.stderr and "nothing to do" in r.stderr, r.stderr
    pypm("sync", "--frozen", "--reinstall", cwd=project, check=True)
    r = pypm("-v", "run", "--frozen", "--no-sandbox", "--", "python", "-c", "import alpha", cwd=project, check=True)
    assert "not syncing" in r.stderr, r.stderr


def test_damaged_install_is_detected_and_reinstalled(pypm, small) -> None:
    project, _, _ = small
    pypm("sync", "--frozen", cwd=project, check=True)
    sp = site_packages(project / ".venv")
    (sp / "beta" / "__init__.py").unlink()
    # replaced by a shorter file (a new inode: writing through the hard link would change the
    # cache's copy too, which is what hard-link installs share with uv and pip's cache-less peers)
    (sp / "alpha" / "__init__.py").unlink()
    (sp / "alpha" / "__init__.py").write_text("")
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 0, r.stderr
    assert_venv_exact(project / ".venv", {"alpha": "1.0", "beta": "2.0", "devtool": "3.0"})


def test_edit_in_place_through_the_hard_link_is_repaired_in_the_venv_and_the_cache(pypm, small, tmp_path) -> None:
    project, server, wheels = small
    pypm("sync", "--frozen", cwd=project, check=True)
    sp = site_packages(project / ".venv")
    target = sp / "beta" / "__init__.py"
    good = target.read_bytes()
    assert target.stat().st_nlink >= 2, "expected a hard link into the unpacked store"
    time.sleep(0.01)  # the edit's mtime must be later than the install's RECORD
    with open(target, "r+b") as f:  # in place, same size: writes through the link into the cache
        f.write(b"X" * len(good))
    store = [p for p in (pypm.cache_dir / "unpacked").rglob("beta/__init__.py")]
    assert len(store) == 1 and store[0].read_bytes() == b"X" * len(good), "the edit did not reach the store"

    # a fresh venv installed from the damaged store entry (before the edited venv is re-synced)
    # gets the wheel's bytes: the store file's mtime is later than the entry's tree file
    fresh = write_project(tmp_path / "fresh", deps=["alpha"])
    (fresh / "pypm.lock").write_bytes((project / "pypm.lock").read_bytes())
    pypm("sync", "--frozen", "--no-dev", cwd=fresh, check=True)
    assert (site_packages(fresh / ".venv") / "beta" / "__init__.py").read_bytes() == good
    assert target.read_bytes() == b"X" * len(good)  # the edited venv keeps its own (old) inode until re-synced

    # The no-op sync checks directories, not files (as uv and pip): an edit in place is not
    # seen there; `pypm verify --venv` finds it and `pypm sync --reinstall` repairs it.
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 0 and "nothing to do" in r.stderr, r.stderr
    assert target.read_bytes() == b"X" * len(good)
    r = pypm("verify", "--venv", cwd=project)
    assert r.returncode == 1 and "beta/__init__.py" in r.stdout, r.stdout + r.stderr
    server.clear_requests()
    r = pypm("sync", "--frozen", "--reinstall", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "~ beta==2.0" in r.stderr, r.stderr
    assert target.read_bytes() == good, "the venv still has the edited file"
    store = [p for p in (pypm.cache_dir / "unpacked").rglob("beta/__init__.py")]
    assert len(store) == 1 and store[0].read_bytes() == good, "the cache's copy was not restored"
    assert server.requests_for("/files/") == [], "the cached wheel (sha256-verified) should have been used"
    r = pypm("run", "--frozen", "--no-sandbox", "python", "-c", "import beta; print(beta.B)", cwd=project)
    assert r.stdout.strip() == "beta", r.stderr

    # a second project linked to the same store is repaired from the restored copy too
    other = write_project(tmp_path / "other", deps=["alpha"])
    (other / "pypm.lock").write_bytes((project / "pypm.lock").read_bytes())
    pypm("sync", "--frozen", "--no-dev", cwd=other, check=True)
    assert (site_packages(other / ".venv") / "beta" / "__init__.py").read_bytes() == good
    r = pypm("verify", "--venv", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr


def test_an_edit_that_keeps_size_and_mtime_is_found_by_verify_and_repaired_by_reinstall(pypm, small) -> None:
    project, server, wheels = small
    pypm("sync", "--frozen", cwd=project, check=True)
    target = site_packages(project / ".venv") / "beta" / "__init__.py"
    good, st = target.read_bytes(), target.stat()
    with open(target, "r+b") as f:  # through the hard link: the cache's copy changes too
        f.write(b"Y" * len(good))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # what `touch -r` or a careful editor does
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 0 and "nothing to do" in r.stderr, r.stderr  # the documented trade-off
    r = pypm("verify", "--venv", cwd=project)
    assert r.returncode == 1 and "beta/__init__.py" in r.stdout, r.stdout + r.stderr
    assert "pypm sync --reinstall" in r.stderr, r.stderr
    r = pypm("sync", "--frozen", "--reinstall", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "~ beta==2.0" in r.stderr and "~ alpha==1.0" in r.stderr, r.stderr
    assert target.read_bytes() == good
    store = [p for p in (pypm.cache_dir / "unpacked").rglob("beta/__init__.py")]
    assert len(store) == 1 and store[0].read_bytes() == good, "the cache's copy was not restored"
    r = pypm("verify", "--venv", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("sig, rc", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_during_first_sync_leaves_no_venv(pypm, dists, index_server, tmp_path, sig, rc) -> None:
    """Ctrl-C, or SIGTERM (a CI runner's timeout, `kill`), which pypm takes as it takes Ctrl-C."""
    project, _ = _big_project(dists, index_server, tmp_path)
    venv = project / ".venv"
    proc = pypm.popen("sync", "--frozen", cwd=project)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not venv.exists():
        time.sleep(0.001)
    assert proc.poll() is None, "sync finished before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == rc and ("terminated" if sig == signal.SIGTERM else "interrupted") in err, err
    assert not venv.exists(), "a half-built .venv was left behind"


def test_ctrl_c_while_a_worker_extracts_ends_the_worker_too(pypm, dists, index_server, tmp_path) -> None:
    """The extraction worker (pypm.extractor) is in a session of its own, so Ctrl-C reaches pypm
    alone: exit 130, no half-built venv, and no worker left running (pypm kills it as it unwinds;
    that the kill stops a job in flight is tests/test_extractor.py's)."""
    import psutil

    project, _ = _big_project(dists, index_server, tmp_path)
    hit = False
    for _attempt in range(5):
        subprocess.run(["rm", "-rf", str(project / ".venv"), str(pypm.cache_dir)], check=True)
        proc = pypm.popen("sync", "--frozen", cwd=project)
        workers: list[psutil.Process] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and not workers:
            try:
                workers = [c for c in psutil.Process(proc.pid).children()
                           if "pypm.extractor" in " ".join(c.cmdline())]
            except psutil.Error:
                pass
        if workers and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        if workers and proc.returncode == 130:
            hit = True
            break
    assert hit, "could not interrupt a sync while its extraction worker ran"
    assert not (project / ".venv").exists(), "a half-built .venv was left behind"
    for w in workers:
        assert not w.is_running() or w.status() == psutil.STATUS_ZOMBIE, f"worker {w.pid} outlived pypm"


def test_the_extraction_worker_unpacks_from_a_project_elsewhere(pypm, small) -> None:
    """A sync started in a project (pypm's own tree is not on the worker's import path then) gets
    a worker that starts and unpacks. Until stop 37 a worker of an editable install of pypm (this
    suite's: setuptools' import-hook finder, which `-S` skips) exited 3 at once, and every sync
    unpacked in-process behind a debug note."""
    project, _, _ = small
    r = pypm("--verbose", "sync", "--frozen", cwd=project, env={"PYPM_EXTRACT_WORKERS": "1"})
    assert r.returncode == 0, r.stderr
    assert "extraction worker stopped" not in r.stderr and "cannot start" not in r.stderr, r.stderr
    m = re.search(r"unpacked (\d+) wheels in the extraction worker, (\d+) in this process", r.stderr)
    assert m and int(m[1]) >= 1 and int(m[1]) + int(m[2]) == 3, r.stderr
    assert_venv_exact(project / ".venv", {"alpha": "1.0", "beta": "2.0", "devtool": "3.0"})


def test_two_syncs_at_once_are_serialised(pypm, small) -> None:
    project, _, _ = small
    procs = [pypm.popen("sync", "--frozen", cwd=project) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert_venv_exact(project / ".venv", {"alpha": "1.0", "beta": "2.0", "devtool": "3.0"})


def test_a_sync_waits_for_the_project_lock(pypm, small) -> None:
    """Serialisation made visible: while another holder has the project locked, sync waits."""
    import fcntl

    project, _, _ = small
    fd = os.open(project, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        proc = pypm.popen("sync", "--frozen", cwd=project)
        line = proc.stderr.readline()
        assert "waiting for another pypm process" in line, line
        time.sleep(0.3)
        assert proc.poll() is None and not (project / ".venv").exists()
    finally:
        os.close(fd)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert_venv_exact(project / ".venv", {"alpha": "1.0", "beta": "2.0", "devtool": "3.0"})


def test_eight_projects_share_one_cache_at_once(pypm, dists, index_server, tmp_path) -> None:
    shared = [dists.wheel("shared", "1.0", modules={f"shared/m{i}.py": "Y = 1\n" * 50 for i in range(200)}),
              dists.wheel("common", "2.0")]
    server = index_server()
    projects = []
    for i in range(8):
        p = write_project(tmp_path / f"p{i}", deps=["shared", "common"])
        write_lock(p, server, shared, main=["shared", "common"])
        projects.append(p)
    procs = [pypm.popen("sync", "--frozen", cwd=p) for p in projects]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, outs
    for p in projects:
        assert_venv_exact(p / ".venv", {"shared": "1.0", "common": "2.0"})


# --------------------------------------------------------------------------- the canary

def test_canary_sync_run_nodev_and_back(pypm, canary_project, canary_index) -> None:
    r = pypm("sync", cwd=canary_project, timeout=600)
    assert r.returncode == 0, r.stderr
    venv = canary_project / ".venv"
    have = installed(venv)
    for n in ("requests", "urllib3", "idna", "certifi", "charset-normalizer", "black", "pytest", "mypy", "my-lib"):
        assert n in have, (n, sorted(have))
    assert "torch" not in have and "tomli" not in have or sys.version_info < (3, 11)
    r = pypm("run", "--no-sandbox", "python", "-m", "my_lib.demo", cwd=canary_project)
    assert r.returncode == 0, r.stderr
    assert "requests" in r.stdout and "2.32.3" in r.stdout

    before = snapshot(canary_project)
    r = pypm("sync", cwd=canary_project)
    assert r.returncode == 0, r.stderr
    assert snapshot(canary_project) == before, "a no-op sync changed files"

    pypm("sync", "--no-dev", cwd=canary_project, check=True)
    have = installed(venv)
    assert not {"black", "pytest", "mypy"} & set(have), sorted(have)
    canary_index.clear_requests()
    pypm("sync", cwd=canary_project, check=True)
    assert {"black", "pytest", "mypy"} <= set(installed(venv))
    assert canary_index.requests_for("/files/") == [], "adding dev back downloaded instead of re-linking"


@pytest.mark.slow
def test_canary_heavy_extra_torch(pypm, canary_project, torch_wheel) -> None:
    r = pypm("sync", "--extra", "heavy", "--no-dev", cwd=canary_project, timeout=900)
    assert r.returncode == 0, r.stderr
    r = pypm("run", "--no-sandbox", "--extra", "heavy", "--no-dev", "python", "-c",
             "import torch; print(torch.__version__, torch.ones(2).sum().item())", cwd=canary_project, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("2.13.0") and "2.0" in r.stdout


# --------------------------------------------------------------------------- with the real resolver

def test_sync_locks_when_needed_and_locked_refuses_a_stale_lock(pypm, dists, index_server, tmp_path) -> None:
    dists.wheel("alpha", "1.0", requires_dist=["beta>=2"])
    dists.wheel("beta", "2.0")
    dists.wheel("gamma", "1.0")
    server = index_server()
    project = write_project(tmp_path / "p", deps=["alpha"], tool=f'index-url = "{server.url}"\n')
    # no pypm.lock at all: --dry-run says so (not the --frozen wording) and creates nothing
    r = pypm("sync", "--dry-run", cwd=project)
    assert r.returncode == 3, r.stderr  # ExitCode.PROJECT
    assert "does not exist, and --dry-run does not create one" in r.stderr and "pypm lock" in r.stderr, r.stderr
    assert "--frozen" not in r.stderr, r.stderr
    assert not (project / "pypm.lock").exists() and not (project / ".venv").exists()
    r = pypm("sync", cwd=project)
    assert r.returncode == 0, r.stderr
    assert (project / "pypm.lock").is_file()
    assert_venv_exact(project / ".venv", {"alpha": "1.0", "beta": "2.0"})
    # pyproject.toml changes: --locked refuses, plain sync re-locks, run re-syncs first
    text = (project / "pyproject.toml").read_text().replace('dependencies = ["alpha"]', 'dependencies = ["alpha", "gamma"]')
    (project / "pyproject.toml").write_text(text)
    lock_before = (project / "pypm.lock").read_bytes()
    r = pypm("sync", "--locked", cwd=project)
    assert r.returncode == 1 and "--locked" in r.stderr, r.stderr
    assert (project / "pypm.lock").read_bytes() == lock_before
    r = pypm("sync", "--dry-run", cwd=project)
    assert r.returncode == 0 and "would re-lock first" in r.stderr, r.stderr
    assert (project / "pypm.lock").read_bytes() == lock_before
    r = pypm("run", "--no-sandbox", "python", "-c", "import gamma, alpha; print('ok')", cwd=project)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    assert_venv_exact(project / ".venv", {"alpha": "1.0", "beta": "2.0", "gamma": "1.0"})


# --------------------------------------------------------------------------- source distributions

def app_sdist(dists):
    """An sdist of `app` 0.1.0 built by the in-tree BACKEND (no build dependency to fetch)."""
    return dists.sdist("app", "0.1.0", build_requires=(), extra_files={
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "_backend"\nbackend-path = ["."]\n\n'
                          '[project]\nname = "app"\nversion = "0.1.0"\n',
        "_backend.py": BACKEND,
        "src/app/__init__.py": 'GREETING = "built from an sdist"\n',
    })


def test_sdist_without_a_wheel_is_built_in_an_isolated_env(pypm, dists, index_server, tmp_path) -> None:
    sd = app_sdist(dists)
    server = index_server()
    project = write_project(tmp_path / "p", name="proj", deps=["app"])
    write_lock(project, server, [], sdists=[sd], main=["app"], name="proj")
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 0, r.stderr
    assert_venv_exact(project / ".venv", {"app": "0.1.0"})
    out = subprocess.run([str(project / ".venv" / "bin" / "python"), "-c", "import app; print(app.GREETING)"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "built from an sdist", out.stderr
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 0 and "nothing to do" in r.stderr, r.stderr


def test_sdist_with_a_c_extension_builds_with_locked_setuptools(pypm, dists, index_server, tmp_path) -> None:
    from tests.support.fixtures import canary_wheels_dir

    d = canary_wheels_dir()
    st = sorted(d.glob("setuptools-*-py3-none-any.whl")) if d else []
    if not st:
        pytest.skip("no setuptools wheel among the canary fixtures (run scripts/fetch_fixtures.py)")
    sd = dists.sdist("cext", "1.0", c_extension=True)
    server = index_server([dists.dir, st[-1]])
    project = write_project(tmp_path / "p", deps=["cext"])
    write_lock(project, server, [st[-1]], sdists=[sd], main=["cext"], build_edges={"cext": ["setuptools"]})
    r = pypm("sync", "--frozen", cwd=project, timeout=300)
    assert r.returncode == 0, r.stderr
    assert_venv_exact(project / ".venv", {"cext": "1.0"})  # setuptools was only in the build env
    out = subprocess.run([str(project / ".venv" / "bin" / "python"), "-c",
                          "from cext._speedups import add; print(add(2, 3))"], capture_output=True, text=True)
    assert out.stdout.strip() == "5", out.stderr


def test_failed_build_names_the_package_and_shows_the_backend_output(pypm, dists, index_server, tmp_path) -> None:
    sd = dists.sdist("broken", "1.0", build_requires=(), extra_files={
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "_backend"\nbackend-path = ["."]\n',
        "_backend.py": "def build_wheel(d, c=None, m=None):\n    raise RuntimeError('compiler exploded')\n",
    })
    server = index_server()
    project = write_project(tmp_path / "p", deps=["broken"])
    write_lock(project, server, [], sdists=[sd], main=["broken"])
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 10, r.stderr
    assert "broken" in r.stderr and "compiler exploded" in r.stderr and "Traceback (most recent call last)" in r.stderr
    assert not (project / ".venv").exists()


def test_editable_build_is_cached_and_redone_when_its_inputs_change(pypm, small) -> None:
    project, server, wheels = small
    write_project(project, deps=["alpha"], groups={"dev": ["devtool"]}, editable=True)
    write_lock(project, server, wheels.values(), main=["alpha"], groups={"dev": ["devtool"]},
               edges={"alpha": ["beta"]}, editable=True)
    pypm("sync", "--frozen", cwd=project, check=True)
    subprocess.run(["rm", "-rf", str(project / ".venv")], check=True)
    r = pypm("-v", "sync", "--frozen", cwd=project, check=True)
    assert "using the wheel built earlier" in r.stderr, r.stderr
    assert installed(project / ".venv")["app"] == "0.1.0"
    # a change to the build inputs (pyproject.toml) reinstalls the project, and only it
    with open(project / "pyproject.toml", "a") as f:
        f.write("# touched\n")
    r = pypm("sync", "--frozen", "--dry-run", cwd=project, check=True)
    assert " ~ app==0.1.0 (different file)" in r.stdout and "replace 1" in r.stdout, r.stdout
    r = pypm("-v", "sync", "--frozen", cwd=project, check=True)
    assert "using the wheel built earlier" not in r.stderr
    assert_venv_exact(project / ".venv", {"alpha": "1.0", "beta": "2.0", "devtool": "3.0", "app": "0.1.0"})
    # --reinstall re-checks the built wheel's store entry too (its editable .pth edited through the link)
    pth = site_packages(project / ".venv") / "_app_editable.pth"
    good = pth.read_bytes()
    pth.write_bytes(b"/nowhere\n"[: len(good)].ljust(len(good), b"x"))  # in place: same inode as the store's
    r = pypm("-v", "sync", "--frozen", "--reinstall", cwd=project, check=True)
    assert "using the wheel built earlier" in r.stderr and "~ app==0.1.0" in r.stderr, r.stderr
    assert pth.read_bytes() == good
    assert_venv_exact(project / ".venv", {"alpha": "1.0", "beta": "2.0", "devtool": "3.0", "app": "0.1.0"})


def test_offline_sync_works_from_a_warm_cache(pypm, small) -> None:
    project, server, _ = small
    pypm("sync", "--frozen", cwd=project, check=True)
    subprocess.run(["rm", "-rf", str(project / ".venv")], check=True)
    server.stop()
    r = pypm("sync", "--frozen", "--offline", cwd=project)
    assert r.returncode == 0, r.stderr
    assert_venv_exact(project / ".venv", {"alpha": "1.0", "beta": "2.0", "devtool": "3.0"})


def test_link_mode_copy_and_compile(pypm, small) -> None:
    project, _, _ = small
    pypm("sync", "--frozen", "--link-mode", "copy", "--compile", cwd=project, check=True)
    sp = site_packages(project / ".venv")
    assert (sp / "beta" / "__init__.py").stat().st_nlink == 1
    assert list((sp / "beta" / "__pycache__").glob("__init__.*.pyc"))
    assert_venv_exact(project / ".venv", {"alpha": "1.0", "beta": "2.0", "devtool": "3.0"})
    pypm("sync", "--frozen", "--no-dev", cwd=project, check=True)
    assert not (sp / "devtool").exists(), "uninstall left the package directory (or its __pycache__) behind"


def test_another_interpreter_recreates_the_venv(pypm, small) -> None:
    other = Path("/usr/bin/python3")
    if not other.exists() or os.path.realpath(other) == os.path.realpath(sys.executable):
        pytest.skip("needs a second interpreter at /usr/bin/python3, different from the one running the tests")
    project, _, _ = small
    pypm("sync", "--frozen", cwd=project, check=True)
    r = pypm("sync", "--frozen", "--python", str(other), cwd=project)
    assert r.returncode == 0, r.stderr
    cfg = (project / ".venv" / "pyvenv.cfg").read_text()
    assert f"executable = {os.path.realpath(other)}" in cfg, cfg
    assert_venv_exact(project / ".venv", {"alpha": "1.0", "beta": "2.0", "devtool": "3.0"})
    r = pypm("run", "--no-sandbox", "--frozen", "--python", str(other), "python", "-c",
             "import sys, alpha; print(sys.base_prefix)", cwd=project)
    assert r.returncode == 0 and r.stdout.strip() == "/usr", r.stderr


def test_bad_venv_inputs_are_clear_errors_or_repaired(pypm, small) -> None:
    project, _, _ = small
    (project / ".venv").write_text("not a directory\n")
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 7 and ".venv" in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (project / ".venv").read_text() == "not a directory\n"
    (project / ".venv").unlink()
    pypm("sync", "--frozen", cwd=project, check=True)
    (project / ".venv" / ".pypm" / "state.json").write_text("{ garbage")
    r = pypm("run", "--no-sandbox", "--frozen", "python", "-c", "import alpha; print(alpha.A)", cwd=project)
    assert r.returncode == 0 and r.stdout.strip() == "alpha beta", r.stderr
    assert (project / ".venv" / ".pypm" / "state.json").read_text().startswith("{\n")


def test_a_lock_that_is_a_directory_is_named_by_sync_and_run(pypm, small) -> None:
    """On a synced project the no-op fast paths hash pypm.lock before anything else: a directory
    there (or an unreadable file) ended `pypm sync`/`run` in a bare traceback."""
    project, _, _ = small
    pypm("sync", "--frozen", cwd=project, check=True)
    (project / "pypm.lock").unlink()
    (project / "pypm.lock").mkdir()
    for args in (("sync", "--frozen"), ("run", "--no-sandbox", "--frozen", "true")):
        r = pypm(*args, cwd=project)
        assert r.returncode == 3 and r.stderr.startswith("error: cannot read "), (args, r.stderr)
        assert "pypm.lock: Is a directory" in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_noop_fast_path_still_syncs_exactly(pypm, small) -> None:
    """The no-op fast path (state.json matches) must find what the full plan finds: a dist added
    behind pypm's back is removed, an interrupted install (journal) is repaired."""
    project, _, _ = small
    pypm("sync", "--frozen", cwd=project, check=True)
    sp = site_packages(project / ".venv")
    stray = sp / "stray-1.0.dist-info"
    stray.mkdir()
    (stray / "METADATA").write_text("Metadata-Version: 2.1\nName: stray\nVersion: 1.0\n")
    (stray / "RECORD").write_text("stray-1.0.dist-info/METADATA,,\nstray-1.0.dist-info/RECORD,,\n")
    r = pypm("sync", "--frozen", cwd=project, check=True)
    assert "nothing to do" not in r.stderr, r.stderr
    assert_venv_exact(project / ".venv", {"alpha": "1.0", "beta": "2.0", "devtool": "3.0"})
    r = pypm("sync", "--frozen", cwd=project, check=True)
    assert "nothing to do" in r.stderr, r.stderr
    journal = project / ".venv" / ".pypm" / "journal"
    journal.mkdir(parents=True, exist_ok=True)
    (journal / "beta.json").write_text('{"name": "beta", "version": "2.0", "paths": []}')
    r = pypm("sync", "--frozen", cwd=project, check=True)
    assert "nothing to do" not in r.stderr, r.stderr
    assert not any(journal.iterdir())
    assert_venv_exact(project / ".venv", {"alpha": "1.0", "beta": "2.0", "devtool": "3.0"})


# --------------------------------------------------------------------------- a fresh venv from the recipe (H1)

def _imported(stderr: str) -> set[str]:
    """Module names in `python -X importtime` output (PYTHONPROFILEIMPORTTIME=1)."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")
            and line.count("|") == 2}


def _venv_files(venv: Path) -> dict[str, str]:
    sp = site_packages(venv)
    return {str(p.relative_to(venv)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(venv.rglob("*")) if p.is_file() and ".pypm" not in p.parts and sp in p.parents
            or p.parent == venv / "bin" and p.is_file() and not p.is_symlink()}


def _state_without_mtimes(venv: Path) -> dict:
    import json

    state = json.loads((venv / ".pypm" / "state.json").read_text())
    return {**state, "installed": {"dists": state["installed"]["dists"]}}


def test_a_fresh_venv_is_rebuilt_from_the_recipe_as_the_full_sync_builds_it(pypm, small) -> None:
    """`rm -rf .venv && pypm sync` with unchanged inputs: built from the store by the entry point's
    fast path (no CLI, no project model, no lock parser, no network), file for file and state for
    state what the full sync built."""
    project, server, _ = small
    pypm("sync", "--frozen", cwd=project, check=True)
    venv = project / ".venv"
    files, state = _venv_files(venv), _state_without_mtimes(venv)
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    server.clear_requests()
    r = pypm("sync", "--frozen", cwd=project, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 0, r.stderr
    mods = _imported(r.stderr)
    assert "pypm.syncrecipe" in mods and not {"pypm.cli", "pypm.project", "pypm.locking"} & mods, sorted(mods)
    assert " + alpha==1.0" in r.stderr and "Synced" in r.stderr
    assert server.requests == []
    assert _venv_files(venv) == files
    assert _state_without_mtimes(venv) == state
    journal = venv / ".pypm" / "journal"
    assert not (venv / ".pypm-building").exists() and not (journal.exists() and any(journal.iterdir()))
    assert_venv_exact(venv, {"alpha": "1.0", "beta": "2.0", "devtool": "3.0"})
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "import alpha; print(alpha.A)"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "alpha beta", out.stderr
    r = pypm("sync", "--frozen", cwd=project, check=True)
    assert "nothing to do" in r.stderr, r.stderr  # the state it wrote satisfies the no-op check
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    r = pypm("-q", "sync", "--frozen", cwd=project, env={"PYTHONPROFILEIMPORTTIME": "1"}, check=True)
    assert "pypm.cli" not in _imported(r.stderr)
    assert _venv_files(venv) == files


def test_the_recipe_is_not_used_when_anything_differs(pypm, small) -> None:
    """Other inputs, other flags, or a store entry written since it was unpacked: the full sync
    runs (and repairs the store entry) instead of the fast path."""
    project, server, _ = small
    pypm("sync", "--frozen", cwd=project, check=True)
    venv = project / ".venv"
    files = _venv_files(venv)
    good = (site_packages(venv) / "beta" / "__init__.py").read_bytes()

    def fresh_sync(*args: str) -> set[str]:
        subprocess.run(["rm", "-rf", str(venv)], check=True)
        r = pypm(*args, cwd=project, env={"PYTHONPROFILEIMPORTTIME": "1"})
        assert r.returncode == 0, r.stderr
        return _imported(r.stderr)

    assert "pypm.cli" in fresh_sync("sync", "--frozen", "--no-dev")  # another selection
    # a store file edited (through some venv's hard link) after it was unpacked
    store = [p for p in (pypm.cache_dir / "unpacked").rglob("beta/__init__.py")]
    assert len(store) == 1
    time.sleep(0.01)
    with open(store[0], "r+b") as f:
        f.write(b"X" * len(good))
    assert "pypm.cli" in fresh_sync("sync", "--frozen")
    assert (site_packages(venv) / "beta" / "__init__.py").read_bytes() == good
    assert _venv_files(venv) == files
    # pyproject.toml changed: its sha256 no longer matches the recipe's
    with open(project / "pyproject.toml", "a") as text:
        text.write("\n# a comment\n")
    assert "pypm.cli" in fresh_sync("sync", "--frozen")
    assert_venv_exact(venv, {"alpha": "1.0", "beta": "2.0", "devtool": "3.0"})
    # and the recipe that sync recorded serves the next fresh venv
    assert "pypm.cli" not in fresh_sync("sync", "--frozen")
    assert _venv_files(venv) == files


def test_a_first_sync_installs_every_package_while_others_still_unpack(pypm, dists, index_server, tmp_path) -> None:
    """A venv created by the sync installs each package as soon as its store entry is ready; the
    sync returns only when every one is in (twelve wheels unpacked and installed on a few threads)."""
    wheels = [dists.wheel(f"pkg{i:02d}", "1.0", modules={f"pkg{i:02d}/__init__.py": f"N = {i}\n",
                                                         **{f"pkg{i:02d}/m{j}.py": "" for j in range(20)}})
              for i in range(12)]
    server = index_server()
    names = [f"pkg{i:02d}" for i in range(12)]
    project = write_project(tmp_path / "p", deps=names)
    write_lock(project, server, wheels, main=names)
    pypm("sync", "--frozen", cwd=project, check=True)
    assert_venv_exact(project / ".venv", {n: "1.0" for n in names})
    subprocess.run(["rm", "-rf", str(project / ".venv"), str(pypm.cache_dir / "syncs")], check=True)
    pypm("sync", "--frozen", cwd=project, check=True)  # warm store, full path
    assert_venv_exact(project / ".venv", {n: "1.0" for n in names})


def test_an_interrupted_rebuild_from_the_recipe_leaves_nothing_the_next_sync_trips_on(pypm, dists, index_server,
                                                                                      tmp_path) -> None:
    """Ctrl-C during the fresh-venv fast path: exit 130 and no .venv; SIGTERM likewise (143); kill
    -9: a venv still marked as being built, which the next sync replaces. Either way the next sync
    builds it exactly."""
    project, expected = _big_project(dists, index_server, tmp_path)
    venv = project / ".venv"
    pypm("sync", "--frozen", cwd=project, check=True)  # records the recipe
    for sig, rc in ((signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -signal.SIGKILL)):
        hit = False
        for _attempt in range(5):
            subprocess.run(["rm", "-rf", str(venv)], check=True)
            proc = pypm.popen("sync", "--frozen", cwd=project)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                sp = list(venv.glob("lib/python3*/site-packages"))
                if sp and any(sp[0].iterdir()):
                    proc.send_signal(sig)
                    break
                time.sleep(0.0005)
            _, err = proc.communicate(timeout=60)
            if proc.returncode == rc:
                hit = True
                break
        assert hit, f"could not interrupt the rebuild with signal {sig}"
        if sig != signal.SIGKILL:
            assert err.strip() == ("interrupted" if sig == signal.SIGINT else "terminated"), err
            assert not venv.exists(), "a half-built .venv was left behind"
        else:
            assert not venv.exists() or (venv / ".pypm-building").exists()
        r = pypm("sync", "--frozen", cwd=project)
        assert r.returncode == 0, r.stderr
        assert_venv_exact(venv, expected)


def test_a_store_file_touched_but_unchanged_is_hashed_once_not_on_every_sync(pypm, small) -> None:
    """A store file with a later mtime and the same bytes (a `touch`, an editor saving it unchanged)
    costs one hashing of its entry: the next fresh venv is built by the fast path again."""
    project, _, _ = small
    venv = project / ".venv"
    pypm("sync", "--frozen", cwd=project, check=True)
    [store] = [p for p in (pypm.cache_dir / "unpacked").rglob("beta/__init__.py")]
    later = time.time_ns() + 2_000_000_000
    os.utime(store, ns=(later, later))

    def fresh_sync() -> set[str]:
        subprocess.run(["rm", "-rf", str(venv)], check=True)
        r = pypm("sync", "--frozen", cwd=project, env={"PYTHONPROFILEIMPORTTIME": "1"})
        assert r.returncode == 0, r.stderr
        return _imported(r.stderr)

    time.sleep(2.1)  # past the touched mtime: the moved reference must be later than it
    assert "pypm.cli" in fresh_sync()  # written since unpacked: the full path hashes the entry
    assert "pypm.cli" not in fresh_sync()  # intact, and now known to be: the fast path again
    assert_venv_exact(venv, {"alpha": "1.0", "beta": "2.0", "devtool": "3.0"})


def _sync_inside(pypm, project: Path, setup: str, result: str, env: Mapping[str, str] | None = None):
    """`pypm sync --frozen` run by pypm's own main in a fresh interpreter after `setup` (code that
    wraps pypm's functions to observe them); returns the JSON value of the expression `result`
    (which may use `rc`, main's return value) evaluated after the sync. `env` adds variables."""
    import json

    code = f"{setup}from pypm.cli import main\nrc = main(['sync', '--frozen'])\nimport json\nprint(json.dumps({result}))\n"
    r = subprocess.run([sys.executable, "-c", code], cwd=project, env={**pypm.env, **(env or {})},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_short_gil_switch_interval_holds_while_applying_and_is_restored(pypm, small) -> None:
    """sync's downloads, unpacking and installs run with sync.GIL_SWITCH_INTERVAL; the process's own
    interval is back afterwards (seen from inside a real sync)."""
    project, _, _ = small
    rc, seen, after, short = _sync_inside(
        pypm, project,
        "import sys; import pypm.sync as s; real = s._apply; seen = []\n"
        "def _apply(*a, **k):\n    seen.append(sys.getswitchinterval())\n    return real(*a, **k)\n"
        "s._apply = _apply; sys.setswitchinterval(0.004)\n",
        "[rc, seen, sys.getswitchinterval(), s.GIL_SWITCH_INTERVAL]")
    assert rc == 0 and after == 0.004  # restored
    assert seen == [short] and short < 0.004  # one _apply, under the short interval
    assert (project / ".venv").is_dir()


def _one_big_five_small(dists, index_server, tmp_path):
    """A project of one 2 MB wheel (most of the bytes) and five small ones; (project, names)."""
    big = dists.wheel("big", "1.0", modules={"big/__init__.py": "", "big/blob.bin": os.urandom(2 << 20)})
    smalls = [dists.wheel(f"small{i}", "1.0") for i in range(5)]
    server = index_server()
    names = ["big"] + [f"small{i}" for i in range(5)]
    project = write_project(tmp_path / "p", deps=names)
    write_lock(project, server, [big, *smalls], main=names)
    return project, names


def test_wheels_landing_during_a_dominant_download_wait_for_it(pypm, dists, index_server, tmp_path) -> None:
    """Downloads in-process (PYPM_FETCH_PROCESS=0): one network download with most of the bytes,
    and the small wheels that land while it is under way are not unpacked until it has landed
    (sync._HoldBack), seen from inside a real sync. The big download is made to last 0.4 s
    longer, so without the hold-back the small ones are unpacked inside that time."""
    project, names = _one_big_five_small(dists, index_server, tmp_path)
    rc, events = _sync_inside(
        pypm, project,
        "import time, pypm.cache as c\n"
        "events = []; real_dl = c.Cache._download; real_unpack = c.Cache.unpack\n"
        "def _download(self, entry, *a, **k):\n"
        "    real_dl(self, entry, *a, **k)\n"
        "    if entry.filename.startswith('big-'):\n"
        "        time.sleep(0.4)\n"
        "    events.append(('landed', entry.filename, time.monotonic()))\n"
        "def unpack(self, entry, **k):\n"
        "    events.append(('unpack', entry.filename, time.monotonic()))\n"
        "    return real_unpack(self, entry, **k)\n"
        "c.Cache._download = _download; c.Cache.unpack = unpack\n",
        "[rc, events]", env={"PYPM_FETCH_PROCESS": "0"})
    assert rc == 0
    big_landed = next(t for kind, fn, t in events if kind == "landed" and fn.startswith("big-"))
    small_landed = [t for kind, fn, t in events if kind == "landed" and fn.startswith("small")]
    unpacks = {fn.split("-")[0]: t for kind, fn, t in events if kind == "unpack"}
    assert len(small_landed) == 5 and min(small_landed) < big_landed  # they did land meanwhile
    assert set(unpacks) == set(names)
    assert all(unpacks[f"small{i}"] >= big_landed for i in range(5)), (big_landed, unpacks)
    assert installed(project / ".venv") == {n: "1.0" for n in names}


# --------------------------------------------------------------------------- the download process


def test_downloads_run_in_a_process_of_their_own_and_each_wheel_unpacks_as_it_lands(
        pypm, dists, index_server, tmp_path) -> None:
    """pypm.fetchchild: every download runs in one forked child, and this process unpacks each
    wheel as the child reports it: the small ones while the dominant download is still under way
    (no hold-back: the downloads share no GIL with the unpacking). The big download is made to
    last 0.4 s longer; the child logs each landing to a file (its memory is not the parent's)."""
    project, names = _one_big_five_small(dists, index_server, tmp_path)
    log = tmp_path / "landed.log"
    rc, unpacks, me = _sync_inside(
        pypm, project,
        "import os, time, pypm.cache as c\n"
        f"LOG = {str(log)!r}\n"
        "unpacks = {}; real_dl = c.Cache._download; real_unpack = c.Cache.unpack\n"
        "def _download(self, entry, *a, **k):\n"
        "    real_dl(self, entry, *a, **k)\n"
        "    if entry.filename.startswith('big-'):\n"
        "        time.sleep(0.4)\n"
        "    with open(LOG, 'a') as f:\n"
        "        f.write(f'{os.getpid()} {entry.filename} {time.monotonic()}\\n')\n"
        "def unpack(self, entry, **k):\n"
        "    unpacks[entry.filename.split('-')[0]] = time.monotonic()\n"
        "    return real_unpack(self, entry, **k)\n"
        "c.Cache._download = _download; c.Cache.unpack = unpack\n",
        "[rc, unpacks, os.getpid()]")
    assert rc == 0
    landed = [line.split() for line in log.read_text().splitlines()]
    assert sorted(fn.split("-")[0] for _, fn, _ in landed) == sorted(names)
    pids = {int(pid) for pid, _, _ in landed}
    assert len(pids) == 1 and me not in pids, (pids, me)  # one child, not this process
    big_landed = next(float(t) for _, fn, t in landed if fn.startswith("big-"))
    assert set(unpacks) == set(names)
    assert all(unpacks[f"small{i}"] < big_landed for i in range(5)), (big_landed, unpacks)
    assert installed(project / ".venv") == {n: "1.0" for n in names}


def _stalled_project(dists, index_server, tmp_path, seconds: float):
    """A project of one 1 MB wheel whose download stops for `seconds` after 512 kB (one
    cache.WRITE_BATCH of it is in the `.part` file by then)."""
    big = dists.wheel("big", "1.0", modules={"big/__init__.py": "", "big/blob.bin": os.urandom(1 << 20)})
    server = index_server()
    project = write_project(tmp_path / "p", deps=["big"])
    write_lock(project, server, [big], main=["big"])
    server.stall(big.name, nbytes=512 << 10, seconds=seconds)
    return project, server, big


def _mid_download(pypm, proc, filename: str):
    """Wait until pypm's download process has part of `filename` in the cache; returns it."""
    import psutil

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            me = psutil.Process(proc.pid)
            children = [c for c in me.children() if c.cmdline() == me.cmdline()]  # a fork: the same command
        except psutil.Error:
            children = []
        parts = [p for p in pypm.cache_dir.rglob(filename + ".part") if p.stat().st_size > 0]
        if children and parts:
            return children[0]
        time.sleep(0.01)
    raise AssertionError(f"pypm never got into the middle of downloading {filename}: {proc.poll()}")


def _gone(p, timeout: float = 10) -> bool:
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not p.is_running() or p.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_pypm_stopped_mid_download_takes_its_download_process_along(pypm, dists, index_server, tmp_path,
                                                                    sig) -> None:
    """Ctrl-C: pypm kills its download process as it unwinds (exit 130, no venv). kill -9: the
    download process sees its job pipe close and exits. Either way what had arrived is kept, and
    the next sync resumes it with a Range request."""
    project, server, big = _stalled_project(dists, index_server, tmp_path, seconds=60)
    proc = pypm.popen("sync", "--frozen", cwd=project)
    child = _mid_download(pypm, proc, big.name)
    proc.send_signal(sig)
    # Well inside the stall (60 s) and the client's read timeout (30 s): a download process left
    # running would keep pypm waiting for it (Ctrl-C) or hold pypm's stderr open (kill -9).
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL), err
    assert _gone(child), f"the download process {child.pid} outlived pypm"
    if sig == signal.SIGINT:
        assert "Traceback" not in err and not (project / ".venv").exists(), err
    server.reset_faults()
    r = pypm("sync", "--frozen", cwd=project)
    assert r.returncode == 0, r.stderr
    ranges = [h.get("Range") or h.get("range") for h in file_gets(server, big.name)]
    assert any(rg and not rg.startswith("bytes=0-") for rg in ranges), ranges
    assert installed(project / ".venv") == {"big": "1.0"}


def test_a_download_process_that_dies_leaves_the_rest_to_pypm(pypm, dists, index_server, tmp_path) -> None:
    """The download process killed in the middle: pypm downloads what it had not reported itself
    (resuming the `.part` file), and the sync succeeds."""
    project, server, big = _stalled_project(dists, index_server, tmp_path, seconds=60)
    proc = pypm.popen("-v", "sync", "--frozen", cwd=project)
    child = _mid_download(pypm, proc, big.name)
    child.kill()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "exited with signal 9; downloading the rest in-process" in err, err
    assert installed(project / ".venv") == {"big": "1.0"}


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_a_download_process_setting_neither_yes_nor_no_is_refused(pypm, small, value) -> None:
    """PYPM_FETCH_PROCESS is read as PYPM_OFFLINE is: a value that is neither yes nor no stops
    the sync with a message naming the variable and its value, before anything is made (it was
    read as a yes). A no keeps the downloads in pypm's process; a yes, unset or empty does not."""
    project, _, _ = small
    r = pypm("sync", "--frozen", cwd=project, env={"PYPM_FETCH_PROCESS": value})
    assert r.returncode == 2, r.stderr
    assert f"PYPM_FETCH_PROCESS={value!r}" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (project / ".venv").exists()
    for ok, where in (("off", "in-process"), ("yes", "in process "), ("", "in process ")):
        r = pypm("-v", "sync", "--frozen", cwd=project, env={"PYPM_FETCH_PROCESS": ok})
        assert r.returncode == 0, r.stderr
        assert ("downloading 3 files in process " in r.stderr) == (where != "in-process"), (ok, r.stderr)
        assert_venv_exact(project / ".venv", {"alpha": "1.0", "beta": "2.0", "devtool": "3.0"})
        shutil.rmtree(project / ".venv")
        shutil.rmtree(pypm.cache_dir, ignore_errors=True)


@pytest.mark.parametrize("name", ["PYPM_OFFLINE", "PYPM_FETCH_PROCESS"])
def test_a_bad_on_off_variable_is_refused_by_the_fast_paths_too(pypm, small, name) -> None:
    """On a synced project the no-op sync, the sandboxed run and the lock check answer before the
    CLI loads; with an on/off variable that is neither yes nor no they answered as if it were
    unset ("nothing to do", exit 0), while every command that read it stopped with exit status 2.
    Now they stop too, with the CLI's message; a valid value keeps the fast path."""
    project, _, _ = small
    assert pypm("sync", "--frozen", cwd=project).returncode == 0
    for args in (("sync", "--frozen"), ("run", "--", "python", "-c", "pass"), ("lock", "--check")):
        r = pypm(*args, cwd=project, env={name: "maybe"})
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert f"{name}='maybe' is neither yes nor no" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = pypm("sync", "--frozen", cwd=project, env={name: "off" if name == "PYPM_FETCH_PROCESS" else "1"})
    assert r.returncode == 0 and "nothing to do" in r.stderr, r.stderr


def test_the_download_process_is_forked_after_what_both_processes_import() -> None:
    """fork_early imports the cache, the framing and tempfile before it forks: the sync needs them
    anyway, and the download process then does not import them a second time while both share
    the cores. Run in a fresh interpreter without the site module (a .pth file may import
    anything): what this test process imported says nothing."""
    import sysconfig

    paths = [str(Path(__file__).resolve().parents[2]), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    script = (
        f"import sys\nsys.path[:0] = {paths!r}\n"
        "from pypm.fetchchild import FetchChild, fork_early\n"
        "assert 'pypm.cache' not in sys.modules and 'tempfile' not in sys.modules\n"
        "fork_early(['sync'])\n"
        "child = FetchChild.take()\n"
        "assert child is not None and child.pid > 0\n"
        "print(*(m in sys.modules for m in ('pypm.cache', 'pypm.framing', 'tempfile', 'httpx')))\n"
        "child.close()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYPM_")}
    r = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, env=env,
                       cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "True", "False"], r.stdout  # the HTTP stack: the child's alone


def test_a_sync_runs_without_cyclic_garbage_collection_and_restores_it(monkeypatch, tmp_path) -> None:
    """`_sync_locked` turns the cycle collector off for the sync (its objects live until it
    ends) and back on afterwards, with what is alive frozen: `pypm run` syncs in-process first
    and must get a collecting interpreter back. Its error paths restore it too."""
    import gc
    from types import SimpleNamespace

    from pypm import sync
    from pypm.selection import Selection

    seen: list[bool] = []

    def planned(*args: object) -> Path:
        seen.append(gc.isenabled())
        if len(seen) == 2:
            raise RuntimeError("a failed sync")
        return tmp_path / ".venv"

    monkeypatch.setattr(sync, "_sync_planned", planned)
    monkeypatch.setattr(sync, "_fire", lambda *a, **k: None)
    ctx = SimpleNamespace(debug=lambda m: None, info=lambda m: None)
    opts = sync.SyncOptions(selection=Selection(), offline=True)  # offline: no download process
    project = SimpleNamespace(root=tmp_path)
    assert gc.isenabled()
    try:
        assert sync._sync_locked(ctx, project, opts, tmp_path / ".venv") == tmp_path / ".venv"
        assert seen == [False] and gc.isenabled() and gc.get_freeze_count() > 0
        with pytest.raises(RuntimeError):
            sync._sync_locked(ctx, project, opts, tmp_path / ".venv")
        assert seen == [False, False] and gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
