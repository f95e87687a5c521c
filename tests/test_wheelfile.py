"""pypm.wheelfile's own zip member reader (pread + inflate): the bytes zipfile reads, and damaged archives
refused -- each test twice, inflating with isal (the default where installed) and with the standard zlib."""

from __future__ import annotations

import os
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from pypm.errors import IntegrityError
from pypm.wheelfile import _SMALL, extract_verified
from tests.support.dists import record_hash

NAME = "pkg-1.0.dist-info"


@pytest.fixture(autouse=True, params=["isal", "zlib"])
def inflater(request, monkeypatch):
    """Which inflate the reader uses: chosen once per process, so reset around each test."""
    import pypm.wheelfile as wf

    if request.param == "isal":
        pytest.importorskip("isal", reason="isal has no wheel for this platform: the zlib run covers the reader")
        monkeypatch.delenv("PYPM_INFLATE", raising=False)
    else:
        monkeypatch.setenv("PYPM_INFLATE", "zlib")
    monkeypatch.setattr(wf, "_INFLATE", None)
    yield request.param
    # exact names: "isal.isal_zlib" also ends in "zlib"
    assert wf._INFLATE is None or wf._INFLATE[0].__name__ == (
        "isal.isal_zlib" if request.param == "isal" else "zlib"), wf._INFLATE


def test_isal_is_the_default_where_installed(monkeypatch):
    import pypm.wheelfile as wf

    isal_zlib = pytest.importorskip("isal.isal_zlib", reason="isal has no wheel for this platform")
    monkeypatch.delenv("PYPM_INFLATE", raising=False)
    monkeypatch.setattr(wf, "_INFLATE", None)
    mod, errors = wf._inflate_module()
    assert mod is isal_zlib and isal_zlib.error in errors
    wf._INFLATE = None  # chosen by this test, not by the run's inflater (checked after each test)


def _wheel(path: Path, members: dict[str, tuple[bytes, int]], *, execs: tuple[str, ...] = (),
           record_method: int = zipfile.ZIP_DEFLATED) -> Path:
    """A wheel whose members are (data, compress_type); RECORD (no hash of its own) is added."""
    rows = []
    with zipfile.ZipFile(path, "w") as zf:
        for n, (data, method) in members.items():
            zi = zipfile.ZipInfo(n, date_time=(2020, 1, 1, 0, 0, 0))
            zi.compress_type = method
            zi.external_attr = ((0o755 if n in execs else 0o644) | stat.S_IFREG) << 16
            zf.writestr(zi, data)
            rows.append(f"{n},{record_hash(data)},{len(data)}")
        rows.append(f"{NAME}/RECORD,,")
        zf.writestr(zipfile.ZipInfo(f"{NAME}/RECORD"), "\n".join(rows) + "\n", compress_type=record_method)
    return path


def _members() -> dict[str, tuple[bytes, int]]:
    D, S = zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED
    return {
        "pkg/__init__.py": (b"x = 1\n" * 1000, D),
        "pkg/empty.py": (b"", D),
        "pkg/stored.txt": (b"stored bytes\n" * 50, S),
        "pkg/big.bin": (os.urandom(_SMALL + 12345), D),  # over the one-read size: read in pieces
        "pkg/zeros.bin": (bytes(5 << 20), D),  # inflates far beyond its compressed size
        "pkg/run.sh": (b"#!/bin/sh\necho hi\n", D),
        f"{NAME}/METADATA": (b"Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n", D),
        f"{NAME}/WHEEL": (b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n", D),
    }


def test_extraction_gives_the_bytes_and_modes_zipfile_reads(tmp_path):
    w = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", _members(), execs=("pkg/run.sh",))
    out = tmp_path / "out"
    manifest = extract_verified(w, out, label="pkg")
    with zipfile.ZipFile(w) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        for n in names:
            assert (out / n).read_bytes() == zf.read(n), n
    assert sorted(f for f, _, _ in manifest["files"]) == sorted(names)
    assert (out / "pkg/run.sh").stat().st_mode & 0o777 == 0o755
    assert not (out / "pkg/__init__.py").stat().st_mode & 0o111


def _offset_of(w: Path, name: str) -> int:
    with zipfile.ZipFile(w) as zf:
        return zf.getinfo(name).header_offset


def _patch(w: Path, at: int, data: bytes) -> None:
    with open(w, "r+b") as f:
        f.seek(at)
        f.write(data)


def _central(raw: bytes | bytearray, name: str) -> int:
    """Where the central directory header of `name` starts (46 fixed bytes, then the name)."""
    return raw.index(b"PK\x01\x02", raw.index(name.encode(), raw.index(b"PK\x01\x02")) - 46)


def _data_start(w: Path, name: str) -> int:
    off = _offset_of(w, name)
    head = w.read_bytes()[off:off + 30]
    n_name, n_extra = struct.unpack("<2H", head[26:30])
    return off + 30 + n_name + n_extra


@pytest.mark.parametrize("case", ["deflate-garbage", "local-name", "record-crc", "encrypted", "truncated-stored",
                                  "inflates-past-size"])
def test_a_damaged_member_is_an_integrity_error(case, tmp_path):
    members = {"pkg/__init__.py": (b"x = 1\n" * 1000, zipfile.ZIP_DEFLATED),
               "pkg/data.txt": (b"stored\n" * 10, zipfile.ZIP_STORED),
               f"{NAME}/WHEEL": (b"Wheel-Version: 1.0\n", zipfile.ZIP_DEFLATED)}
    w = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", members,
               record_method=zipfile.ZIP_STORED if case == "record-crc" else zipfile.ZIP_DEFLATED)
    if case == "deflate-garbage":  # not a deflate stream any more (a bad block type)
        _patch(w, _data_start(w, "pkg/__init__.py"), b"\xff\xff\xff\xff")
        words = "pkg/__init__.py"
    elif case == "local-name":  # the local header names a different file than the central directory
        _patch(w, _offset_of(w, "pkg/data.txt") + 30, b"pkg/dXta.txt")
        words = "names another file"
    elif case == "record-crc":  # RECORD has no hash of its own: its CRC-32 is what guards it
        with zipfile.ZipFile(w) as zf:
            n = zf.getinfo(f"{NAME}/RECORD").file_size
        _patch(w, _data_start(w, f"{NAME}/RECORD") + n - 1, b" ")  # still a valid RECORD: "...RECORD,, "
        words = "bad CRC-32"
    elif case == "encrypted":
        _patch(w, _offset_of(w, "pkg/data.txt") + 6, struct.pack("<H", 1))
        words = "encrypted"
    elif case == "truncated-stored":  # the central directory claims more bytes than the member has
        raw = bytearray(w.read_bytes())
        with zipfile.ZipFile(w) as zf:
            info = zf.getinfo("pkg/data.txt")
        struct.pack_into("<2L", raw, _central(raw, "pkg/data.txt") + 20, info.compress_size + 100,
                         info.file_size + 100)
        w.write_bytes(bytes(raw))
        words = "pkg/data.txt"
    else:  # the central directory says the file is smaller than what the data inflates to
        raw = bytearray(w.read_bytes())
        at = _central(raw, "pkg/__init__.py") + 24
        struct.pack_into("<L", raw, at, struct.unpack_from("<L", raw, at)[0] - 10)
        w.write_bytes(bytes(raw))
        words = "pkg/__init__.py"
    with pytest.raises(IntegrityError) as ei:
        extract_verified(w, tmp_path / "out", label="pkg")
    assert words in str(ei.value) and "pkg" in str(ei.value)
    assert ei.value.hint


def test_members_compressed_otherwise_are_read_through_zipfile(tmp_path):
    """bzip2 and lzma are legal in a zip (no wheel seen uses them): the reader hands them to zipfile."""
    members = {"pkg/b.txt": (b"bzip2 " * 500, zipfile.ZIP_BZIP2), "pkg/l.txt": (b"lzma " * 500, zipfile.ZIP_LZMA),
               f"{NAME}/WHEEL": (b"Wheel-Version: 1.0\n", zipfile.ZIP_DEFLATED)}
    w = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", members)
    out = tmp_path / "out"
    extract_verified(w, out, label="pkg")
    assert (out / "pkg/b.txt").read_bytes() == b"bzip2 " * 500
    assert (out / "pkg/l.txt").read_bytes() == b"lzma " * 500


@pytest.mark.parametrize("extra", [
    {"pkg/./__init__.py": b"y = 2\n"},  # the same file spelled twice
    {"pkg//empty.py": b"z\n"},
    {"pkg/sub": b"a file", "pkg/sub/x.py": b"below it"},  # a file where a directory goes
    {"pkg/run.sh/inner.py": b"below a file"},
])
def test_a_path_named_twice_or_a_file_where_a_directory_goes_is_refused_by_name(extra, tmp_path):
    """Refused before anything is extracted with a clear error, not an OSError (FileExistsError:
    an 'internal error') from the second O_EXCL create or mkdir halfway through."""
    from pypm.errors import InstallError

    D = zipfile.ZIP_DEFLATED
    w = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", {**_members(), **{n: (b, D) for n, b in extra.items()}})
    with pytest.raises(InstallError, match="twice|both as a file and as a directory"):
        extract_verified(w, tmp_path / "out", label="pkg")
    assert not (tmp_path / "out").exists()  # refused before the directory was made


def test_a_directory_member_named_like_a_file_is_refused_by_name(tmp_path):
    from pypm.errors import InstallError

    w = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", {**_members(), "pkg/d": (b"file", zipfile.ZIP_DEFLATED)})
    with zipfile.ZipFile(w, "a") as zf:
        zf.writestr(zipfile.ZipInfo("pkg/d/"), b"")
    with pytest.raises(InstallError, match="both as a file and as a directory"):
        extract_verified(w, tmp_path / "out", label="pkg")
