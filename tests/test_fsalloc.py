"""pypm.fsalloc: the cache's store directories carry ext4's top-directory attribute (chattr +T)."""

from __future__ import annotations

import fcntl
import sys
from pathlib import Path

import pytest

from pypm.cache import Cache
from pypm.fsalloc import _FS_IOC_GETFLAGS, _FS_TOPDIR_FL, spread_subdirs
from pypm.lockfile import FileEntry
from tests.support.dists import sha256_file


def _topdir(path: Path) -> bool:
    import os

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return bool(int.from_bytes(fcntl.ioctl(fd, _FS_IOC_GETFLAGS, bytes(8))[:4], sys.byteorder) & _FS_TOPDIR_FL)
    finally:
        os.close(fd)


def test_spread_subdirs_never_raises(tmp_path):
    assert spread_subdirs(tmp_path / "missing") is False
    (tmp_path / "file").write_text("x")
    assert spread_subdirs(tmp_path / "file") is False


def test_the_stores_fan_directories_spread_their_entries(dists, tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    if not spread_subdirs(probe) or not _topdir(probe):
        pytest.skip(f"the file system under {tmp_path} has no top-directory attribute (not ext4?)")
    w = dists.wheel("spread", "1.0", modules={"spread/__init__.py": "x = 1\n"})
    e = FileEntry(w.name, w.as_uri(), sha256_file(w), w.stat().st_size)
    with Cache(tmp_path / "cache", base_dir=tmp_path) as cache:
        u = cache.unpack(e, package="spread")
        assert (u / "spread" / "__init__.py").read_text() == "x = 1\n"
        wheel = cache.wheel_path(e.sha256, e.filename)
        assert wheel.is_file()
    assert _topdir(u.parent), "unpacked/<fan>: each extraction directory gets a block group of its own"
    assert _topdir(u.parent.parent) and _topdir(wheel.parent.parent.parent), "unpacked/, wheels/: their fans too"
    assert _topdir(wheel.parent.parent), "wheels/<fan>"
    assert _topdir(tmp_path / "cache" / "locks"), "locks/: its fan directories are spread"
    assert not _topdir(u), "the entry itself is an ordinary directory"


def test_a_venv_the_sync_creates_spreads_its_packages(tmp_path, monkeypatch):
    from pypm.interpreter import query_interpreter
    from pypm.sync import _ensure_venv

    probe = tmp_path / "probe"
    probe.mkdir()
    if not spread_subdirs(probe):
        pytest.skip(f"the file system under {tmp_path} has no top-directory attribute (not ext4?)")

    class Ctx:
        def info(self, msg: str) -> None:
            pass

    monkeypatch.setenv("PYPM_CACHE_DIR", str(tmp_path / "icache"))
    interp = query_interpreter(Path(sys.executable))
    assert _ensure_venv(Ctx(), tmp_path / ".venv", interp) is True
    site = next((tmp_path / ".venv" / "lib").glob("python*/site-packages"))
    assert _topdir(site)
    assert not _topdir(tmp_path / ".venv")
