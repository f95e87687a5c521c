"""pypm.installer: real wheels, a real venv, real processes (scripts run, kill -9 mid-install)."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pypm.cache import Cache
from pypm.errors import InstallError
from pypm.installer import JOURNAL_DIR, install_wheel, installed_distributions, uninstall
from pypm.interpreter import query_interpreter
from pypm.lockfile import FileEntry
from pypm.venv import VenvLayout, create_venv
from tests.support.dists import sha256_file

PY = "/usr/bin/python3"  # world-readable system CPython with the venv module


@pytest.fixture(scope="module")
def interp(tmp_path_factory):
    os.environ.setdefault("PYPM_CACHE_DIR", str(tmp_path_factory.mktemp("icache")))
    return query_interpreter(PY)


@pytest.fixture
def venv(tmp_path, interp) -> VenvLayout:
    return create_venv(tmp_path / "proj" / ".venv", interp)


@pytest.fixture
def cache(tmp_path) -> Cache:
    return Cache(tmp_path / "cache")


def unpacked(cache: Cache, wheel: Path) -> tuple[Path, FileEntry]:
    e = FileEntry(wheel.name, wheel.as_uri(), sha256_file(wheel), wheel.stat().st_size)
    return cache.unpack(e, package=wheel.name.split("-")[0]), e


def install(venv, cache, wheel, **kw):
    u, e = unpacked(cache, wheel)
    return install_wheel(venv, u, wheel_filename=wheel.name, wheel_sha256=e.sha256, **kw)


def tree(root: Path) -> dict[str, str]:
    """Every file/dir/link under root (except pypm's own journal dir) -> a fingerprint."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if rel.startswith(".pypm"):
            continue
        out[rel] = "link" if p.is_symlink() else ("dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def rich_wheel(dists, name="rich-pkg", version="1.0", **kw):
    return dists.wheel(
        name, version,
        modules={"rich_pkg/__init__.py": "VALUE = 42\n",
                 "rich_pkg/cli.py": "import sys\ndef main():\n    print('console', sys.executable)\n"
                                    "def gui():\n    print('gui')\n"},
        entry_points={"console_scripts": {"rich-cli": "rich_pkg.cli:main"},
                      "gui_scripts": {"rich-gui": "rich_pkg.cli:gui"}},
        data={"scripts/rich-tool": b"#!python\nimport rich_pkg\nprint('tool', rich_pkg.VALUE)\n",
              "scripts/plain.sh": b"#!/bin/sh\necho plain\n",
              "data/share/rich-pkg/readme.txt": b"shared data\n",
              "headers/rich.h": b"#define RICH 1\n",
              "purelib/rich_extra.py": b"EXTRA = 'pure'\n",
              "platlib/rich_native/__init__.py": b"NATIVE = 'plat'\n"},
        **kw)


def test_install_places_every_scheme_and_writes_a_true_record(dists, venv, cache):
    w = rich_wheel(dists)
    d = install(venv, cache, w, direct_url={"url": "file:///src/rich", "dir_info": {}})
    assert d.complete and d.name == "rich-pkg" and d.version == "1.0" and d.installer == "pypm"
    sp = venv.purelib
    assert (sp / "rich_pkg" / "__init__.py").read_text() == "VALUE = 42\n"
    assert (venv.root / "share" / "rich-pkg" / "readme.txt").read_bytes() == b"shared data\n"
    assert (venv.headers / "rich-pkg" / "rich.h").is_file()
    assert (sp / "rich_extra.py").is_file() and (venv.platlib / "rich_native" / "__init__.py").is_file()
    assert not list(sp.glob("*.data"))  # the .data directory itself is never installed
    info = sp / "rich_pkg-1.0.dist-info"
    assert (info / "INSTALLER").read_text() == "pypm\n"
    assert json.loads((info / "direct_url.json").read_text())["url"] == "file:///src/rich"
    assert json.loads((info / "pypm_source.json").read_text()).items() >= {  # (+ the Merkle root, issue 7)
        "filename": w.name, "sha256": sha256_file(w)}.items()
    rows = list(csv.reader((info / "RECORD").read_text().splitlines()))
    listed = set()
    for path, h, size in rows:
        f = Path(os.path.normpath(sp / path))
        listed.add(f)
        if path.endswith("RECORD"):
            assert h == "" and size == ""
            continue
        data = f.read_bytes()
        assert h == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert int(size) == len(data)
    skeleton = {"pyvenv.cfg", ".gitignore", "activate", "activate.csh", "activate.fish"}
    installed = {p for p in venv.root.rglob("*") if p.is_file() and not p.is_symlink() and p.name not in skeleton}
    assert installed <= listed  # everything the install created is in RECORD
    assert {p.name for p in listed if p.parent == venv.scripts} == {"rich-cli", "rich-gui", "rich-tool", "plain.sh"}


def test_scripts_run_with_the_venv_python(dists, venv, cache):
    install(venv, cache, rich_wheel(dists))
    out = subprocess.run([str(venv.scripts / "rich-cli")], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"console {venv.python}"
    assert subprocess.run([str(venv.scripts / "rich-gui")], capture_output=True, text=True,
                          check=True).stdout.strip() == "gui"
    tool = venv.scripts / "rich-tool"
    assert tool.read_bytes().startswith(f"#!{venv.python}\n".encode())
    assert subprocess.run([str(tool)], capture_output=True, text=True, check=True).stdout.strip() == "tool 42"
    assert subprocess.run([str(venv.scripts / "plain.sh")], capture_output=True, text=True,
                          check=True).stdout.strip() == "plain"


def test_hardlink_mode_links_files_but_never_modifies_the_cache(dists, venv, cache):
    w = rich_wheel(dists)
    u, _ = unpacked(cache, w)
    cached_tool = u / "rich_pkg-1.0.data" / "scripts" / "rich-tool"
    before = cached_tool.read_bytes()
    install(venv, cache, w, link_mode="hardlink")
    assert (venv.purelib / "rich_pkg" / "cli.py").stat().st_ino == (u / "rich_pkg" / "cli.py").stat().st_ino
    assert (venv.scripts / "rich-tool").stat().st_ino != cached_tool.stat().st_ino  # rewritten, fresh file
    assert cached_tool.read_bytes() == before == b"#!python\nimport rich_pkg\nprint('tool', rich_pkg.VALUE)\n"
    assert (venv.purelib / "rich_pkg-1.0.dist-info" / "RECORD").stat().st_ino != \
        (u / "rich_pkg-1.0.dist-info" / "RECORD").stat().st_ino


@pytest.mark.parametrize("mode", ["copy", "reflink"])
def test_copy_and_reflink_modes_give_independent_files(mode, dists, venv, cache):
    w = rich_wheel(dists)
    u, _ = unpacked(cache, w)
    install(venv, cache, w, link_mode=mode)  # reflink falls back to a copy where the fs cannot clone
    dst = venv.purelib / "rich_pkg" / "cli.py"
    assert dst.stat().st_ino != (u / "rich_pkg" / "cli.py").stat().st_ino
    assert dst.read_bytes() == (u / "rich_pkg" / "cli.py").read_bytes()


def test_root_is_purelib_false_goes_to_platlib(dists, venv, cache):
    w = dists.wheel("plat", "1.0", tag="cp311-cp311-linux_x86_64")
    install(venv, cache, w)
    assert (venv.platlib / "plat" / "__init__.py").is_file()
    r = subprocess.run([str(venv.python), "-c", "import plat; print(plat.__version__)"], capture_output=True, text=True)
    assert r.stdout.strip() == "1.0"


def test_uninstall_leaves_nothing_behind(dists, venv, cache):
    before = tree(venv.root)
    install(venv, cache, rich_wheel(dists), compile_bytecode=True)
    # running the package creates __pycache__ entries that RECORD never listed
    subprocess.run([str(venv.python), "-c", "import rich_pkg.cli"], check=True)
    rec = (venv.purelib / "rich_pkg-1.0.dist-info" / "RECORD").read_text()
    assert "__pycache__/cli.cpython-311.pyc,," in rec
    assert tree(venv.root) != before
    removed = uninstall(venv, "Rich_Pkg")
    assert removed
    assert tree(venv.root) == before
    assert installed_distributions(venv) == {}
    assert uninstall(venv, "rich-pkg") == []  # a second uninstall is a no-op


def test_installed_distributions_reports_name_version_and_source(dists, venv, cache):
    a, b = dists.wheel("Alpha.Pkg", "1.0"), dists.wheel("beta", "2.0rc1")
    install(venv, cache, a)
    install(venv, cache, b)
    found = installed_distributions(venv)
    assert sorted(found) == ["alpha-pkg", "beta"]
    assert found["beta"].version == "2.0rc1" and found["beta"].source_sha256 == sha256_file(b)
    assert found["alpha-pkg"].source_filename == a.name and all(d.complete for d in found.values())


def test_upgrade_by_uninstall_then_install(dists, venv, cache):
    old = dists.wheel("mover", "1.0", modules={"mover/__init__.py": "V = 1\n", "mover/old_only.py": ""})
    new = dists.wheel("mover", "2.0", modules={"mover/__init__.py": "V = 2\n"})
    install(venv, cache, old)
    uninstall(venv, "mover")
    install(venv, cache, new)
    assert not (venv.purelib / "mover" / "old_only.py").exists()
    assert installed_distributions(venv)["mover"].version == "2.0"


_KILLER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    import pypm.installer as inst
    from pypm.venv import VenvLayout
    n = 0
    orig = inst._Linker.place
    def place(self, src, dst):
        global n
        n += 1
        if n == 3:
            os.kill(os.getpid(), signal.SIGKILL)   # a real kill -9, half-way through the files
        return orig(self, src, dst)
    inst._Linker.place = place
    layout = VenvLayout.from_venv(Path({venv!r}))
    inst.install_wheel(layout, Path({unpacked!r}), wheel_filename={fn!r}, wheel_sha256={sha!r})
""")


def test_kill_9_mid_install_is_detected_and_repaired(dists, venv, cache):
    before = tree(venv.root)
    mods = {f"victim/m{i}.py": f"x = {i}\n" for i in range(10)}
    w = dists.wheel("victim", "1.0", modules={"victim/__init__.py": "", **mods},
                    entry_points={"console_scripts": {"victim": "victim.m1:main"}})
    u, e = unpacked(cache, w)
    code = _KILLER.format(repo=str(Path(__file__).resolve().parents[1]), venv=str(venv.root), unpacked=str(u),
                          fn=w.name, sha=e.sha256)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert (venv.root / JOURNAL_DIR / "victim.json").exists()
    got = installed_distributions(venv)
    assert "victim" in got and not got["victim"].complete
    assert any((venv.purelib / "victim").glob("*.py"))  # it really was half-installed
    uninstall(venv, "victim")
    assert tree(venv.root) == before and installed_distributions(venv) == {}
    d = install_wheel(venv, u, wheel_filename=w.name, wheel_sha256=e.sha256)
    assert d.complete and installed_distributions(venv)["victim"].complete


@pytest.mark.parametrize("journal", ['[1, 2]', '{"version": 3, "paths": 5}', '{"paths": [7, "/etc/passwd"]}', "\xff{"])
def test_a_damaged_journal_marks_the_dist_incomplete_and_removes_nothing_outside(dists, venv, cache, journal):
    w = dists.wheel("victim", "1.0", modules={"victim/__init__.py": ""})
    u, e = unpacked(cache, w)
    install_wheel(venv, u, wheel_filename=w.name, wheel_sha256=e.sha256)
    (venv.root / JOURNAL_DIR).mkdir(parents=True, exist_ok=True)
    (venv.root / JOURNAL_DIR / "victim.json").write_text(journal, encoding="latin-1")
    (venv.root / JOURNAL_DIR / "ghost.json").write_text(journal, encoding="latin-1")
    got = installed_distributions(venv)
    assert not got["victim"].complete and not got["ghost"].complete and got["ghost"].version == ""
    uninstall(venv, "victim")
    uninstall(venv, "ghost")
    assert installed_distributions(venv) == {} and Path("/etc/passwd").exists()


def test_long_venv_path_gets_a_working_sh_shebang(dists, tmp_path, interp, cache):
    deep = tmp_path / ("d" * 60) / ("e" * 60) / ".venv"
    layout = create_venv(deep, interp)
    assert len(str(layout.python)) > 125
    install(layout, cache, rich_wheel(dists))
    script = layout.scripts / "rich-cli"
    assert script.read_bytes().startswith(b"#!/bin/sh\n")
    out = subprocess.run([str(script)], capture_output=True, text=True, check=True).stdout
    assert out.startswith("console ")


def test_bad_entry_point_and_unknown_scheme_are_install_errors(dists, venv, cache, tmp_path):
    w = dists.wheel("badep", "1.0", entry_points={"console_scripts": {"x": "not a valid ref"}})
    before = tree(venv.root)
    with pytest.raises(InstallError, match="entry point x"):
        install(venv, cache, w)
    assert tree(venv.root) == before  # refused while planning: nothing written
    assert installed_distributions(venv) == {}
    odd = dists.wheel("odd", "1.0", data={"scripts/x": b""})
    u, e = unpacked(cache, odd)
    # (a tree outside the store, so it is read from disk rather than from the entry's manifest)
    odd_tree = tmp_path / "odd-tree"
    shutil.copytree(u, odd_tree)
    os.rename(odd_tree / "odd-1.0.data" / "scripts", odd_tree / "odd-1.0.data" / "weird")
    with pytest.raises(InstallError, match="unknown install scheme"):
        install_wheel(venv, odd_tree, wheel_filename=odd.name, wheel_sha256=e.sha256)
    assert tree(venv.root) == before


def test_two_venvs_from_one_cache_have_identical_records(dists, tmp_path, interp, cache):
    w = rich_wheel(dists)
    a = create_venv(tmp_path / "a" / ".venv", interp)
    b = create_venv(tmp_path / "b" / ".venv", interp)
    install(a, cache, w)
    install(b, Cache(tmp_path / "other-cache"), w)

    def rows(layout):  # scripts carry the venv's own path in their shebang: compare the rest
        text = (layout.purelib / "rich_pkg-1.0.dist-info" / "RECORD").read_text()
        return [r for r in text.splitlines() if not r.startswith("../../../bin/")]

    assert rows(a) == rows(b)


def test_a_project_name_that_is_not_a_name_is_refused(dists, venv, cache):
    w = dists.wheel("okname", "1.0")
    u, e = unpacked(cache, w)
    meta = u / "okname-1.0.dist-info" / "METADATA"
    text = meta.read_text().replace("Name: okname", "Name: ../../evil")
    meta.unlink()  # (a fresh file: the cache's copy may be hard-linked elsewhere)
    meta.write_text(text)
    before = tree(venv.root)
    with pytest.raises(InstallError, match="not a valid name"):
        install_wheel(venv, u, wheel_filename=w.name, wheel_sha256=e.sha256)
    assert tree(venv.root) == before


def test_canonical_name_is_the_lock_models():
    """installer.canonical_name is lockfile.canonical_name without importing the lock model."""
    from pypm import installer, lockfile

    for name in ("Foo", "foo_bar", "foo.bar-baz", "Foo__Bar..Baz", "A-B_C.D", "x", "zope.interface", "PyYAML"):
        assert installer.canonical_name(name) == lockfile.canonical_name(name)


def test_without_a_journal_the_install_is_the_same(dists, venv, cache, tmp_path, interp):
    """journal=False (a venv being built, removed whole on failure) writes no journal and installs
    exactly what a journalled install does."""
    w = rich_wheel(dists)
    d = install(venv, cache, w, journal=False)
    assert d.complete and not any((venv.root / JOURNAL_DIR).glob("*.json"))
    other = create_venv(tmp_path / "other" / ".venv", interp)
    install(other, cache, w)
    assert tree(venv.root).keys() == tree(other.root).keys()
    # the same RECORD but for the scripts, whose shebang names their own venv
    rec = lambda v: [r for r in (v.purelib / "rich_pkg-1.0.dist-info" / "RECORD").read_text().splitlines()  # noqa: E731
                     if not r.startswith("../../../bin/")]
    assert rec(venv) == rec(other)
