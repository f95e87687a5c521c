"""pypm.venvstate: the no-op check on real installs (real wheels, a real venv, real file systems)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from pypm import venvstate
from pypm.cache import Cache
from pypm.installer import install_wheel
from pypm.interpreter import query_interpreter
from pypm.lockfile import FileEntry
from pypm.venv import VenvLayout, create_venv
from tests.e2e.test_sync import site_packages, write_lock, write_project
from tests.support.dists import sha256_file

PY = "/usr/bin/python3"  # world-readable system CPython with the venv module


@pytest.fixture(scope="module")
def interp(tmp_path_factory):
    os.environ.setdefault("PYPM_CACHE_DIR", str(tmp_path_factory.mktemp("vcache")))
    return query_interpreter(PY)


def _wheel(dists, *, pyc: bool = True):
    # pyc: a wheel shipping a __pycache__ (RECORD lists it; Python would rewrite this bad one on import)
    pycache = {"pkg/__pycache__/__init__.cpython-311.pyc": "not really bytecode"} if pyc else {}
    return dists.wheel(
        "pkg", "1.0",
        modules={"pkg/__init__.py": "A = 1\n", "pkg/sub/__init__.py": "", "pkg/sub/deep/mod.py": "B = 2\n", **pycache},
        entry_points={"console_scripts": {"pkg-cli": "pkg:main"}},
        data={"data/share/pkg/readme.txt": b"shared\n"})


@pytest.fixture
def installed(dists, interp, tmp_path) -> tuple[VenvLayout, dict]:
    """A venv with one installed wheel, and the state.json `installed` record of it."""
    layout = create_venv(tmp_path / "proj" / ".venv", interp)
    w = _wheel(dists)
    e = FileEntry(w.name, w.as_uri(), sha256_file(w), w.stat().st_size)
    tree = Cache(tmp_path / "cache").unpack(e, package="pkg")
    install_wheel(layout, tree, wheel_filename=w.name, wheel_sha256=e.sha256)
    rec = venvstate.installed_record(layout.root, [layout.purelib, layout.platlib])
    return layout, rec


def _intact(layout: VenvLayout, rec: dict) -> bool:
    return venvstate.venv_intact(layout.root, {"installed": rec})


def test_the_record_watches_every_directory_holding_files_and_each_record(installed) -> None:
    layout, rec = installed
    sp = os.path.relpath(layout.purelib, layout.root)
    assert rec["site-dirs"] == [sp]
    assert rec["dists"] == [f"{sp}/pkg-1.0.dist-info"]
    st = (layout.purelib / "pkg-1.0.dist-info" / "RECORD").stat()
    assert rec["records"] == [[st.st_size, st.st_mtime_ns]]
    # the directories of the files, their parents up to the site dir, scripts and data; not the
    # venv itself, not __pycache__ (Python writes there on import), nothing above the site dir
    assert set(rec["dirs"]) == {sp, f"{sp}/pkg", f"{sp}/pkg/sub", f"{sp}/pkg/sub/deep", f"{sp}/pkg-1.0.dist-info",
                                "bin", "share", "share/pkg"}
    for d, mtime in rec["dirs"].items():
        assert (layout.root / d).stat().st_mtime_ns == mtime, d
    assert _intact(layout, rec)
    json.dumps(rec)  # it goes into state.json as it is


def test_the_record_is_taken_once_the_clock_tick_of_its_newest_mtime_is_over(installed, tmp_path) -> None:
    """Without fine-grained timestamps (Linux < 6.13) a change in the same coarse-clock tick as the
    recorded mtime would keep it: installed_record returns only once that tick is over."""
    layout, _ = installed
    (layout.purelib / "pkg" / "new.txt").write_text("")  # an mtime from this very tick
    rec = venvstate.installed_record(layout.root, [layout.purelib])
    coarse = time.clock_gettime_ns(5)  # CLOCK_REALTIME_COARSE: what such kernels stamp files with
    assert coarse > max(rec["dirs"].values()) and coarse > rec["records"][0][1]


def _rename_replace(sp: Path) -> None:
    new = sp / "pkg" / ".new"
    new.write_text("A = 2\n")  # an editor's save, or `cp` over a hard-linked file with --remove-destination
    os.replace(new, sp / "pkg" / "__init__.py")


def _rewrite_record(sp: Path) -> None:
    record = sp / "pkg-1.0.dist-info" / "RECORD"
    with open(record, "a") as f:  # in place: the dist-info directory's mtime does not change
        f.write("pkg/extra.py,,\n")


DAMAGE = {
    "file deleted": lambda sp: (sp / "pkg" / "sub" / "deep" / "mod.py").unlink(),
    "file added": lambda sp: (sp / "pkg" / "sub" / "stray.py").write_text(""),
    "file replaced by a rename": _rename_replace,
    "subpackage removed": lambda sp: shutil.rmtree(sp / "pkg" / "sub"),
    "script deleted": lambda sp: (sp.parents[2] / "bin" / "pkg-cli").unlink(),
    "data file deleted": lambda sp: (sp.parents[2] / "share" / "pkg" / "readme.txt").unlink(),
    "RECORD rewritten in place": _rewrite_record,
    "another dist-info": lambda sp: (sp / "other-1.0.dist-info").mkdir(),
    "dist-info removed": lambda sp: shutil.rmtree(sp / "pkg-1.0.dist-info"),
    "interrupted install (journal)": lambda sp: (sp.parents[2] / ".pypm" / "journal" / "pkg.json").write_text("{}"),
    # Python creating a package's __pycache__ changes the package dir: the next no-op sync takes
    # the full path once, which records the new mtime (test_a_new_pycache_costs_one_full_sync_then_none).
    "__pycache__ created": lambda sp: (sp / "pkg" / "sub" / "__pycache__").mkdir(),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_the_no_op_check_notices_what_changes_a_directory(installed, kind) -> None:
    layout, rec = installed
    (layout.root / ".pypm" / "journal").mkdir(parents=True, exist_ok=True)
    assert _intact(layout, rec)
    DAMAGE[kind](layout.purelib)
    assert not _intact(layout, rec), kind


def test_an_edit_in_place_and_new_bytecode_are_not_its_business(installed) -> None:
    """The documented trade-off (uv and pip make it too): an edit through the same inode changes no
    directory; `pypm verify --venv` hashes and finds it. Bytecode written into an existing
    __pycache__ is Python's cache, not the install."""
    layout, rec = installed
    target = layout.purelib / "pkg" / "__init__.py"
    time.sleep(0.01)  # later than RECORD by more than a clock tick: for files_present below
    with open(target, "r+b") as f:
        f.write(b"Z")
    (layout.purelib / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"")
    assert _intact(layout, rec)
    assert not venvstate.files_present(layout.purelib / "pkg-1.0.dist-info")  # the full sync's check sees it


@pytest.mark.parametrize("edit", ["no records", "no dirs", "records of another length", "a bad record",
                                  "a bad mtime", "dirs as a list"])
def test_a_record_from_an_older_pypm_or_hand_edited_is_not_trusted(installed, edit) -> None:
    layout, rec = installed
    rec = json.loads(json.dumps(rec))
    if edit == "no records":
        del rec["records"]
    elif edit == "no dirs":
        del rec["dirs"]
    elif edit == "records of another length":
        rec["records"].append([1, 2])
    elif edit == "a bad record":
        rec["records"] = [["x"]]
    elif edit == "a bad mtime":
        rec["dirs"] = {d: str(m) for d, m in rec["dirs"].items()}
    else:
        rec["dirs"] = list(rec["dirs"])
    assert not _intact(layout, rec)


def test_an_unreadable_record_leaves_no_snapshot(installed) -> None:
    layout, _ = installed
    (layout.purelib / "pkg-1.0.dist-info" / "RECORD").write_bytes(b"\xff\xfe not utf-8")
    rec = venvstate.installed_record(layout.root, [layout.purelib])
    assert rec["records"] is None and rec["dirs"] is None
    assert not _intact(layout, rec)


# --------------------------------------------------------------------------- through `pypm sync`

@pytest.fixture
def synced(pypm, dists, index_server, tmp_path):
    w = _wheel(dists, pyc=False)
    server = index_server()
    project = write_project(tmp_path / "proj", deps=["pkg"])
    write_lock(project, server, [w], main=["pkg"])
    pypm("sync", "--frozen", cwd=project, check=True)
    return project


def _imports(stderr: str) -> list[str]:
    return [line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")]


def test_the_no_op_sync_imports_almost_nothing(pypm, synced) -> None:
    r = pypm("sync", "--frozen", cwd=synced, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 0 and "nothing to do" in r.stderr, r.stderr
    names = _imports(r.stderr)
    ours = set(names[names.index("pypm"):])  # (the host's .pth files may import more before)
    assert "pypm.venvstate" in ours
    assert not ours & {"pathlib", "json", "hashlib", "re", "enum", "typing", "csv", "argparse", "pypm.cli",
                       "pypm.run", "pypm.selection"}, sorted(ours)


def test_a_new_pycache_costs_one_full_sync_then_none(pypm, synced) -> None:
    r = pypm("run", "--frozen", "--no-sandbox", "python", "-c",
             "import sys; sys.dont_write_bytecode = False; import pkg.sub.deep.mod", cwd=synced)
    assert r.returncode == 0, r.stderr
    assert (site_packages(synced / ".venv") / "pkg" / "sub" / "deep" / "__pycache__").is_dir()
    before = json.loads((synced / ".venv" / ".pypm" / "state.json").read_text())
    r = pypm("sync", "--frozen", cwd=synced, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 0 and "nothing to do" in r.stderr, r.stderr
    assert "pypm.cli" in _imports(r.stderr)  # the full path: it checked every file, and re-recorded
    after = json.loads((synced / ".venv" / ".pypm" / "state.json").read_text())
    assert after["installed"]["dirs"] != before["installed"]["dirs"]
    r = pypm("sync", "--frozen", cwd=synced, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 0 and "nothing to do" in r.stderr and "pypm.cli" not in _imports(r.stderr), r.stderr


def test_a_deleted_file_is_reinstalled_by_the_next_sync(pypm, synced) -> None:
    target = site_packages(synced / ".venv") / "pkg" / "sub" / "deep" / "mod.py"
    target.unlink()
    r = pypm("sync", "--frozen", cwd=synced)
    assert r.returncode == 0 and "nothing to do" not in r.stderr, r.stderr
    assert target.read_text() == "B = 2\n"
    r = pypm("sync", "--frozen", cwd=synced)
    assert "nothing to do" in r.stderr, r.stderr


def test_the_fast_path_steps_aside_while_a_sync_holds_the_project(synced, monkeypatch) -> None:
    monkeypatch.chdir(synced)
    assert venvstate.fast_sync(["-q", "sync", "--frozen"]) == 0
    fd = os.open(synced, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what `pypm sync` holds while it changes the venv
        assert venvstate.fast_sync(["-q", "sync", "--frozen"]) is None  # the full path waits for it
    finally:
        os.close(fd)
    assert venvstate.fast_sync(["-q", "sync", "--frozen"]) == 0
