"""A wheel archive: RECORD parsing and safe, verified extraction (the cache's unpacked store uses it).

Hand-written on top of zipfile because the checks are the point: `installer` (pypa) trusts
RECORD only when asked and extracts file by file into a destination; here every member is
checked against RECORD before anything is written, and big wheels extract on several threads.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InstallError, IntegrityError

TYPE_CHECKING = False  # zipfile, csv, hashlib and threads load where used: installing reads none of them
if TYPE_CHECKING:  # pragma: no cover
    import zipfile
    from typing import Any, Iterable

__all__ = ["record_hash", "parse_record", "find_dist_info", "extract_verified", "manifest_of_dir", "safe_name",
           "PARALLEL_MIN_BYTES", "MANIFEST_FORMAT"]

CHUNK = 256 << 10  # per read while extracting: with several threads, each holds a chunk in and out of zlib


def record_hash(digest: bytes) -> str:
    """RECORD's hash form: 'sha256=' + urlsafe base64 without padding."""
    import base64

    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def parse_record(text: str) -> list[tuple[str, str, str]]:
    """RECORD rows as (path, hash, size); malformed rows raise ValueError."""
    import csv
    import io

    rows = []
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        if len(row) != 3:
            raise ValueError(f"a RECORD row must have 3 fields, not {len(row)}: {row!r}")
        rows.append((row[0], row[1], row[2]))
    return rows


def find_dist_info(names: Iterable[str], wheel_filename: str | None = None) -> str:
    """The `*.dist-info` directory among top-level names (the one matching the wheel's name when several)."""
    infos = sorted({n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")})
    if len(infos) == 1 or (infos and not wheel_filename):
        return infos[0]
    if wheel_filename:
        want = wheel_filename.split("-")[0].lower().replace(".", "_").replace("-", "_")
        for d in infos:
            if d.rsplit("-", 1)[0].lower().replace(".", "_").replace("-", "_") == want:
                return d
    raise ValueError("no .dist-info directory" if not infos else f"several .dist-info directories: {infos}")


_HASHES = {"sha256", "sha384", "sha512", "sha3_256", "sha3_384", "sha3_512", "blake2b", "blake2s"}
_UNSIGNED = {"RECORD", "RECORD.jws", "RECORD.p7s"}  # may be listed without a hash
PARALLEL_MIN_BYTES = 16 << 20  # below this one thread is faster than starting several


def safe_name(name: str) -> bool:
    """A relative member path that stays inside the directory it is extracted or installed into."""
    if name and name[0] != "/" and ".." not in name and "\\" not in name and "\x00" not in name \
            and name[1:2] != ":":
        return True  # the common case, decided without splitting the path
    return _safe_name(name)


def _normal(name: str) -> str:
    """A member name without empty or "." components (and without a directory's trailing "/")."""
    if "//" not in name and "/./" not in name and not name.startswith("./") and not name.endswith(("/.", "/")):
        return name
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _ancestors(d: str) -> list[str]:
    out = [d]
    while "/" in d:
        d = d.rpartition("/")[0]
        out.append(d)
    return out


def _safe_name(name: str) -> bool:
    if not name or name.startswith(("/", "\\")) or "\\" in name or "\x00" in name:
        return False
    if len(name) > 1 and name[1] == ":":  # a drive letter: absolute on Windows
        return False
    return all(part not in ("..",) for part in name.split("/"))


# --------------------------------------------------------------------------- the manifest
# What the installer needs to know about an unpacked wheel, computed once from verified bytes
# and kept beside its store entry (pypm.wheeltree.manifest_path): its dist-info directory, every
# file with the hash and size RECORD gives it, and its directories. Installing then reads one
# small JSON file instead of walking the tree and parsing RECORD again on every sync.

MANIFEST_FORMAT = 1


def _manifest(info_dir: str, files: list[list[str]], dirs: Iterable[str]) -> dict[str, Any]:
    return {"format": MANIFEST_FORMAT, "dist-info": info_dir, "files": sorted(files),
            "dirs": sorted(d for d in dirs if d and d != ".")}


def manifest_of_dir(directory: Path, wheel_filename: str | None = None) -> dict[str, Any]:
    """The manifest of an unpacked wheel tree read from disk (a store entry made before manifests
    existed, or a tree that is not a store entry): walk it and take hashes and sizes from RECORD.
    ValueError when it has no single dist-info directory or an unreadable RECORD."""
    root = str(directory)
    n_root = len(root) + 1
    files: list[str] = []
    dirs: list[str] = []
    for dirpath, _, filenames in os.walk(root):
        rel = dirpath[n_root:]
        if rel:
            dirs.append(rel)
        prefix = rel + "/" if rel else ""
        files += [prefix + fn for fn in filenames]
    info_dir = find_dist_info(files, wheel_filename)
    try:
        text = Path(directory, info_dir, "RECORD").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {info_dir}/RECORD: {e}") from None
    record = {p: (h, s) for p, h, s in parse_record(text)}
    return _manifest(info_dir, [[f, *record.get(f, ("", ""))] for f in files], dirs)


def extract_verified(wheel: Path, dest: Path, *, label: str = "") -> dict[str, Any]:
    """Extract `wheel` into the new directory `dest`, refusing anything unsafe or unverified;
    returns the tree's manifest (see above).

    Refused (nothing is written outside `dest`; the caller removes `dest` on error): absolute
    paths, `..`, symlinks and other non-regular members, duplicate names, members not listed in
    RECORD or listed without a hash, RECORD entries the archive lacks, and any file whose hash
    or size differs from RECORD.
    """
    import stat
    import zipfile
    from concurrent.futures import ThreadPoolExecutor

    name = label or wheel.name
    try:
        fh = open(wheel, "rb")
    except OSError as e:
        raise IntegrityError(f"{name}: cannot read {wheel}: {e}", hint="run `pypm cache clean` and sync again") \
            from None
    with fh:
        try:
            # zipfile reads the central directory (once); the members are read below with pread
            # on this same open file, not through zipfile (see _extract_bucket).
            zf = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise IntegrityError(f"{name}: {wheel} is not a valid wheel (zip) file: {e}",
                                 hint="run `pypm cache clean` and sync again") from None
        fd = fh.fileno()
        infos = zf.infolist()
        seen: set[str] = set()
        files: list[zipfile.ZipInfo] = []
        for i in infos:
            if not _safe_name(i.filename):
                raise InstallError(f"{name}: unsafe path {i.filename!r} in {wheel.name} (absolute or escaping "
                                   "the install directory); refusing to install it",
                                   hint="this wheel is malformed or malicious: do not use it")
            kind = (i.external_attr >> 16) & 0o170000
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                what = "a symlink" if kind == stat.S_IFLNK else "not a regular file"
                raise InstallError(f"{name}: {i.filename!r} in {wheel.name} is {what}; refusing to install it",
                                   hint="this wheel is malformed or malicious: do not use it")
            if i.filename in seen:
                raise InstallError(f"{name}: {wheel.name} holds {i.filename!r} twice; refusing to install it",
                                   hint="this wheel is malformed or malicious: do not use it")
            seen.add(i.filename)
            if not i.is_dir():
                files.append(i)
        # The same path spelled twice ("a/./b", "a//b" beside "a/b"), or a file where a directory
        # goes ("a" beside "a/b"): refused here by name, rather than as an OSError from O_EXCL
        # (an "internal error") halfway through the extraction.
        file_names = {_normal(i.filename) for i in files}
        if len(file_names) != len(files):
            odd = next(i.filename for i in files if _normal(i.filename) != i.filename)
            raise InstallError(f"{name}: {wheel.name} names a file twice ({odd!r}); refusing to install it",
                               hint="this wheel is malformed or malicious: do not use it")
        dir_names = {n.rpartition("/")[0] for n in file_names if "/" in n}
        dir_names.update(_normal(i.filename) for i in infos if i.is_dir())
        clash = file_names & {p for d in dir_names for p in _ancestors(d)}
        if clash:
            raise InstallError(f"{name}: {wheel.name} has {min(clash)!r} both as a file and as a directory; "
                               "refusing to install it", hint="this wheel is malformed or malicious: do not use it")
        try:
            info_dir = find_dist_info((i.filename for i in files), wheel.name)
        except ValueError as e:
            raise InstallError(f"{name}: {wheel.name} is not a valid wheel: {e}") from None
        record_name = f"{info_dir}/RECORD"
        if record_name not in seen:
            raise IntegrityError(f"{name}: {wheel.name} has no {record_name}",
                                 hint="this wheel is malformed: do not use it")
        record_info = next(i for i in files if i.filename == record_name)
        try:
            rows = parse_record(b"".join(_member_data(fd, record_info, name, wheel.name)).decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise IntegrityError(f"{name}: {wheel.name}: cannot parse {record_name}: {e}") from None
        record: dict[str, tuple[str, str]] = {}
        for path, h, size in rows:
            if not _safe_name(path):
                raise InstallError(f"{name}: unsafe path {path!r} in {record_name} of {wheel.name}; refusing it",
                                   hint="this wheel is malformed or malicious: do not use it")
            record[path] = (h, size)
        for i in files:
            if i.filename.startswith(info_dir + "/") and i.filename[len(info_dir) + 1:] in _UNSIGNED:
                continue
            h, _ = record.get(i.filename, ("", ""))
            if i.filename not in record:
                raise IntegrityError(f"{name}: {i.filename} in {wheel.name} is not listed in {record_name}",
                                     hint="this wheel is malformed or tampered with: do not use it")
            algo = h.partition("=")[0]
            if algo not in _HASHES:
                raise IntegrityError(f"{name}: {record_name} of {wheel.name} has no acceptable hash for "
                                     f"{i.filename} ({h or 'none'})",
                                     hint="this wheel is malformed or tampered with: do not use it")
        present = {i.filename for i in files}
        for path in record:
            if path not in present and not path.endswith("/"):
                raise IntegrityError(f"{name}: {record_name} of {wheel.name} lists {path}, which the wheel "
                                     "does not contain", hint="this wheel is malformed or tampered with: do not use it")

        dest.mkdir(parents=True)
        # Every directory with its ancestors, on strings (a Path per member was a tenth of the
        # extraction's CPU); sorted, a parent comes before its children, so a plain mkdir each.
        dirs: set[str] = {i.filename.rstrip("/") for i in infos if i.is_dir()}
        dirs.update(i.filename.rpartition("/")[0] for i in files)
        for d in list(dirs):
            while "/" in d:
                d = d.rpartition("/")[0]
                dirs.add(d)
        dirs.discard("")
        dest_s = str(dest)
        for d in sorted(dirs):
            try:
                os.mkdir(f"{dest_s}/{d}")
            except FileExistsError:  # "a/./b" or "a//b" name a directory twice
                pass
        total = sum(i.file_size for i in files)
        workers = min(EXTRACT_THREADS, os.cpu_count() or 1) if total >= PARALLEL_MIN_BYTES and len(files) > 1 else 1
        buckets: list[list[zipfile.ZipInfo]] = [[] for _ in range(workers)]
        loads = [0] * workers
        for i in sorted(files, key=lambda i: -i.file_size):  # greedy: biggest first to the emptiest bucket
            k = loads.index(min(loads))
            buckets[k].append(i)
            loads[k] += i.file_size
        if workers == 1:
            _extract_bucket(fd, buckets[0], dest_s, record, name, wheel.name)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pypm-unpack") as ex:
                # One open file for all threads: pread has no shared file position.
                futs = [ex.submit(_extract_bucket, fd, b, dest_s, record, name, wheel.name) for b in buckets]
                for f in futs:
                    f.result()
    return _manifest(info_dir, [[i.filename, *record.get(i.filename, ("", ""))] for i in files], dirs)


# --------------------------------------------------------------------------- reading members
# Hand-written instead of ZipFile.open because that costs ~8 seeks and reads per member (the
# shared file re-seeks for each of the local header, the name, the extra field and the data),
# plus a CRC-32 over every byte; and writing through open()'s buffered file adds an fstat, an
# ioctl and an lseek per file. With several threads each system call is also a GIL hand-off.
# Here a small member is one pread (header, name and data together), the output one os.write.
# The central directory still comes from zipfile (read once); each member's local header is
# checked against it as zipfile does (signature, name, no encryption), and its data is bounded
# by the central directory's sizes.

_LOCAL = None  # struct.Struct of the 30-byte local file header, made on first use
_SMALL = 256 << 10  # members compressed to at most this are read in one pread with their header
_OUT = 256 << 10  # most bytes inflated or read at once: bounds memory whatever the archive claims
EXTRACT_THREADS = 4  # for one big wheel, at most one per core


def _bad(name: str, wheel_name: str, what: str) -> IntegrityError:
    return IntegrityError(f"{name}: {wheel_name} is not a valid wheel (zip) file: {what}",
                          hint="this wheel is malformed or tampered with: do not use it")


_INFLATE: Any = None  # (module with decompressobj, its error classes), chosen on first use


def _inflate_module() -> Any:
    """isal's zlib-compatible inflate when installed, else zlib. Inflating is a third of a cold
    sync's CPU (the web stack: 42 MB of deflate into 133 MB); ISA-L's decoder does the same
    DEFLATE in half zlib's time (measured over those 3,675 members: 0.175 vs 0.35 s). The
    bytes out are the same either way, and they are checked against RECORD's sha256 regardless.
    `PYPM_INFLATE=zlib` forces the standard library (the tests run both)."""
    global _INFLATE
    if _INFLATE is None:
        import zlib

        mod: Any = zlib
        if os.environ.get("PYPM_INFLATE") != "zlib":
            try:
                from isal import isal_zlib

                mod = isal_zlib
            except ImportError:  # no wheel for this platform: the standard library's is correct too
                pass
        _INFLATE = (mod, (zlib.error, mod.error))
    return _INFLATE


def _member_data(fd: int, i: Any, name: str, wheel_name: str) -> Iterable[bytes | memoryview]:
    """The uncompressed bytes of member `i` in pieces of at most _OUT bytes; the decompressed
    length is checked against the central directory's. Corrupt or unsupported data raises."""
    global _LOCAL
    if _LOCAL is None:
        import struct

        _LOCAL = struct.Struct("<4s2B4HL2L2H")  # zipfile.structFileHeader
    csize = i.compress_size
    off = i.header_offset
    head = os.pread(fd, 30 + 512 + (csize if csize <= _SMALL else 0), off)
    if len(head) < 30:
        raise _bad(name, wheel_name, f"{i.filename}: truncated")
    sig, _, _, flags, _, _, _, _, _, _, n_name, n_extra = _LOCAL.unpack_from(head)
    if sig != b"PK\x03\x04":
        raise _bad(name, wheel_name, f"{i.filename}: bad local file header")
    raw_name = head[30:30 + n_name] if 30 + n_name <= len(head) else os.pread(fd, n_name, off + 30)
    if raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace") != i.orig_filename:
        raise _bad(name, wheel_name, f"{i.filename}: the local header names another file")
    if flags & 0x1 or i.flag_bits & 0x1:
        raise _bad(name, wheel_name, f"{i.filename} is encrypted")
    start = 30 + n_name + n_extra
    if csize <= _SMALL and start + csize <= len(head):
        pieces: Iterable[bytes | memoryview] = (memoryview(head)[start:start + csize],)
    else:
        pieces = _pread_pieces(fd, off + start, csize, name, wheel_name, i.filename)
    method = i.compress_type
    total = 0
    if method == 0:  # stored
        if csize != i.file_size:
            raise _bad(name, wheel_name, f"{i.filename}: stored with two sizes")
        for p in pieces:
            if not len(p):
                break
            total += len(p)
            yield p
    elif method == 8:  # deflated
        inflate, inflate_errors = _INFLATE or _inflate_module()
        d = inflate.decompressobj(-15)
        try:
            for p in pieces:
                while p:
                    out = d.decompress(p, _OUT)
                    total += len(out)
                    if total > i.file_size:
                        raise _bad(name, wheel_name, f"{i.filename}: more data than its size")
                    if out:
                        yield out
                    p = d.unconsumed_tail
            out = d.flush()
        except inflate_errors as e:
            raise _bad(name, wheel_name, f"{i.filename}: {e}") from None
        total += len(out)
        if out:
            yield out
        if not d.eof:
            raise _bad(name, wheel_name, f"{i.filename}: truncated")
    else:  # bzip2, lzma: not seen in wheels; zipfile reads them (slower, but correct)
        import zipfile

        with open(f"/proc/self/fd/{fd}", "rb") as f, zipfile.ZipFile(f) as zf, zf.open(i.filename) as src:
            while chunk := src.read(_OUT):
                total += len(chunk)
                yield chunk
        return
    if total != i.file_size:
        raise _bad(name, wheel_name, f"{i.filename}: {total} bytes, its header says {i.file_size}")


def _pread_pieces(fd: int, pos: int, n: int, name: str, wheel_name: str, member: str) -> Iterable[bytes]:
    while n > 0:
        b = os.pread(fd, min(n, _OUT), pos)
        if not b:
            raise _bad(name, wheel_name, f"{member}: truncated")
        pos += len(b)
        n -= len(b)
        yield b


def _extract_bucket(fd: int, members: list[Any], dest: str, record: dict[str, tuple[str, str]], name: str,
                    wheel_name: str) -> None:
    import base64
    import hashlib
    import zlib

    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    write = os.write
    for i in members:
        h_expected, size_expected = record.get(i.filename, ("", ""))
        algo, _, want = h_expected.partition("=")
        h = (hashlib.sha256() if algo == "sha256" else hashlib.new(algo)) if algo in _HASHES else None
        crc = 0  # only for members RECORD gives no hash (RECORD itself): the hash is the stronger check
        n = 0
        out = os.open(f"{dest}/{i.filename}", flags, 0o666)
        try:
            for chunk in _member_data(fd, i, name, wheel_name):
                n += len(chunk)
                if h is not None:
                    h.update(chunk)
                else:
                    crc = zlib.crc32(chunk, crc)
                while chunk:  # a regular file takes it whole; the loop is for the rare short write
                    k = write(out, chunk)
                    chunk = chunk[k:]
            if (i.external_attr >> 16) & 0o111:
                os.fchmod(out, 0o755)
        finally:
            os.close(out)
        if h is not None:
            got = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode("ascii")
            if got != want:
                raise IntegrityError(f"{name}: {i.filename} in {wheel_name} does not match its RECORD hash:\n"
                                     f"    expected {algo}={want}\n    actual   {algo}={got}",
                                     hint="this wheel is malformed or tampered with: do not use it")
            if size_expected and size_expected.isdigit() and int(size_expected) != n:
                raise IntegrityError(f"{name}: {i.filename} in {wheel_name} is {n} bytes, RECORD says "
                                     f"{size_expected}", hint="this wheel is malformed or tampered with")
        elif crc != i.CRC:
            raise _bad(name, wheel_name, f"{i.filename}: bad CRC-32")
