"""The index client: project file lists (PEP 503/691, find-links) and core metadata (PEP 658), over
HTTP or from local directories, with an HTTP cache; what the pages say is parsed in `pypm.simpleapi`."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import marshal
import os
import struct
import sys
import threading
import urllib.parse
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, ContextManager, Iterable, Iterator, Mapping, TypeVar

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .errors import BuildError, IndexError_, IntegrityError
from .inflight import InFlight
from .simpleapi import (  # DistFile, CoreMetadata and the parse_* functions are re-exported
    DistFile,
    CoreMetadata,
    Releases,
    parse_filename,
    parse_core_metadata,
    _redact,
    _is_local,
    _local_path,
    _page_entries,
    _dist_files,
    _is_json,
    _json_files,
    json_page_files,
    json_page_spans,
    valid_span_columns,
)

__all__ = [
    "DistFile",
    "CoreMetadata",
    "Releases",
    "IndexClient",
    "PackageNotFound",
    "SdistMetadataUnsupported",
    "parse_filename",
    "parse_core_metadata",
]

T = TypeVar("T")

# PEP 691 content negotiation: JSON preferred, the HTML forms as fallbacks.
ACCEPT = ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
          "text/html;q=0.01")
# How much of a wheel's tail to ask for first: the zip end record (the last 22 bytes plus a
# comment wheels never carry) and, for all but wheels with thousands of files, the whole
# central directory; METADATA itself then costs one more request.
TAIL_BYTES = 64 * 1024
# Read size for hashing local files (see _file_hash).
_HASH_CHUNK = 16 << 20
# Minimum size of a range read whose extent is not known in advance.
RANGE_CHUNK = 16 * 1024
# 2: a JSON project page's entry may carry its parsed files (_Page.parsed); 3: or its files' spans
# (simpleapi.json_page_spans). Bump it whenever what either returns changes shape or meaning.
_HTTP_CACHE_VERSION = 3


class PackageNotFound(IndexError_):
    """No configured index or find-links location knows the project."""


class SdistMetadataUnsupported(BuildError):
    """An sdist's metadata would have to be built (PKG-INFO missing, too old, or dynamic)."""


class _Memo:
    """A thread-safe memo: each key computed once; concurrent callers wait for the first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: dict[Any, Future[Any]] = {}

    def started(self, key: Any) -> bool:
        """Whether `key` is computed or being computed."""
        return key in self._futures

    def get(self, key: Any, fn: Callable[[], T]) -> T:
        with self._lock:
            fut = self._futures.get(key)
            owner = fut is None
            if owner:
                fut = self._futures[key] = Future()
        assert fut is not None
        if owner:
            try:
                fut.set_result(fn())
            except BaseException as e:  # stored, re-raised to every caller (and below)
                fut.set_exception(e)
        result: T = fut.result()  # fn's, or the first caller's for this key
        return result

    def set(self, key: Any, value: Any) -> None:
        """`key` is `value` from now on (an error stored for it is forgotten)."""
        fut: Future[Any] = Future()
        fut.set_result(value)
        with self._lock:
            self._futures[key] = fut


def _write_atomic(path: Path, data: bytes | list[bytes | memoryview]) -> None:
    """Write `data` (or its parts, one after the other: no joined copy of a big entry) to `path`."""
    from .fastpath import replace_file

    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(str(path), data)


def _warn_stderr(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


# --------------------------------------------------------------------------- IO helpers


def _cache_key(text: str) -> str:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"{digest[:2]}/{digest}"


def _max_age(cache_control: str) -> int:
    """Seconds a response may be reused without asking again (0 unless the server says so)."""
    directives = [d.strip().lower() for d in cache_control.split(",")]
    if "no-cache" in directives or "no-store" in directives:
        return 0
    for d in directives:
        if d.startswith("max-age="):
            try:
                return max(0, int(d[8:]))
            except ValueError:
                return 0
    return 0


def _http_failure(r: Any, url: str, otherwise: str | None = None) -> IndexError_:
    """The error for an answer that is neither the file nor "not here"; a 401/403 says where
    credentials go (pypm.credentials)."""
    from .credentials import hint_for

    return IndexError_(f"cannot fetch {_redact(url)}: HTTP {r.status_code} {r.reason_phrase}",
                       hint=hint_for(r.status_code, url) or otherwise)


def _same_bytes(a: bytes | memoryview, b: bytes | memoryview) -> bool:
    # A memoryview compares with bytes item by item (~1 ns a byte: ~27 ms for the 28.5 MB of pages
    # a warm lock of the web stack gets again); copied to bytes first, the compare is a memcmp.
    if len(a) != len(b):
        return False
    return (a if type(a) is bytes else bytes(a)) == (b if type(b) is bytes else bytes(b))


@dataclass
class _Page:
    """One cached GET: status (200, or 404/410 for 'not here'), body and its validators."""

    status: int
    content_type: str
    body: bytes | memoryview  # read from the cache: a view into the file's bytes (bytes() to parse it)
    url: str  # after redirects: relative links are resolved against it
    etag: str | None = None
    last_modified: str | None = None
    expires: float = 0.0
    # A JSON project page's files as simpleapi.json_page_spans (or, for another layout,
    # json_page_files) made them, marshalled, in the same cache file as the body they come from (so
    # never out of step with it): a warm lock gets every page again (the index allows no reuse
    # without asking), and when the body is the one cached, loading this (~25 ms for the web
    # stack) replaces finding (~0.12 s) or parsing (~0.2 s) the files again.
    parsed: bytes | memoryview | None = None
    unsaved: bool = False  # a new JSON page returned by _fetch_page(parse_json=True): the caller stores it

    def same_as(self, other: _Page) -> bool:
        """The same response, whenever it was fetched."""
        return (self.status, self.content_type, self.url, self.etag, self.last_modified) == \
            (other.status, other.content_type, other.url, other.etag, other.last_modified) \
            and _same_bytes(self.body, other.body)

    def dumps(self) -> list[bytes | memoryview]:
        # One file, header line then body (then the parsed files), replaced atomically: a reader
        # sees old or new, never half. In parts, written one after the other (no joined copy).
        head = {"v": _HTTP_CACHE_VERSION, "status": self.status, "content_type": self.content_type,
                "url": self.url, "etag": self.etag, "last_modified": self.last_modified,
                "expires": self.expires, "parsed": len(self.parsed or b"")}
        return [json.dumps(head).encode() + b"\n", self.body, self.parsed or b""]

    @classmethod
    def load(cls, path: Path) -> _Page | None:
        try:
            raw = path.read_bytes()
            start = raw.index(b"\n") + 1
            head = json.loads(raw[:start])
            if head.pop("v") != _HTTP_CACHE_VERSION:
                return None
            n = head.pop("parsed")
            if not isinstance(n, int) or not 0 <= n <= len(raw) - start:
                return None
            # Views, not copies: a big page's entry is ~12 MB, and several are read at once.
            view, end = memoryview(raw), len(raw) - n
            return cls(body=view[start:end], parsed=view[end:] if n else None, **head)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):  # AttributeError: not a JSON object
            return None


# Span columns are stored sealed with a CRC: a start that a damaged entry moved but left in range
# would otherwise be decoded as the wrong file (reported as a malformed page, entry after entry).
# Marshal data never begins with a NUL, so the prefix tells the two kinds of entry apart.
_SEAL = b"\x00spans"


def _seal(data: bytes) -> bytes:
    return _SEAL + zlib.crc32(data).to_bytes(4, "little") + data


def _unmarshal(parsed: bytes | memoryview | None) -> Any:
    """A cached page's parsed files (a list of json_page_files' tuples, or json_page_spans'
    columns), or None (none stored, or unreadable: parse the body again)."""
    if not parsed:
        return None
    if bytes(parsed[: len(_SEAL)]) == _SEAL:
        data = parsed[len(_SEAL) + 4 :]
        if zlib.crc32(data) != int.from_bytes(parsed[len(_SEAL) : len(_SEAL) + 4], "little"):
            return None
        parsed = data
    try:
        return marshal.loads(parsed)
    except (ValueError, EOFError, TypeError):
        return None


def _valid_files(files: list[Any]) -> bool:
    # A damaged entry that still unmarshals must not reach Releases half-read (~5 ms for 64k files).
    return all(type(e) is tuple and len(e) == 3 and type(e[0]) is str and type(e[1]) is str
               and type(e[2]) is tuple and len(e[2]) == 8 and type(e[2][0]) is str for e in files)


class _NoRanges(Exception):
    """The server does not answer Range requests; download the whole file instead."""


class _RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file that fetches byte ranges on demand.

    zipfile needs only the end record, the central directory and one member, so reading a
    wheel's METADATA through this costs two small requests instead of the whole wheel.
    """

    def __init__(self, size: int, tail_start: int, tail: bytes, fetch: Callable[[int, int], bytes]) -> None:
        super().__init__()
        self._size = size
        self._pos = 0
        self._chunks: list[tuple[int, bytes]] = [(tail_start, tail)]
        self._fetch = fetch

    @property
    def size(self) -> int:
        return self._size

    def read_range(self, start: int, end: int) -> bytes:
        """Bytes [start, end) (fewer at the end of the file), fetching what is not held yet."""
        start, end = max(0, start), min(self._size, end)
        return self._read(start, end) if start < end else b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, b: Any) -> int:
        start, end = self._pos, min(self._size, self._pos + len(b))
        if start >= end:
            return 0
        data = self._read(start, end)
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def prefetch(self, start: int, end: int) -> None:
        """Fetch [start, end) now, in one request (used for a member whose extent is known)."""
        end = min(self._size, end)
        if start < end and not any(c <= start and end <= c + len(d) for c, d in self._chunks):
            self._chunks.append((start, self._fetch(start, end)))

    def _read(self, start: int, end: int) -> bytes:
        for cstart, cdata in self._chunks:
            if cstart <= start and end <= cstart + len(cdata):
                return cdata[start - cstart : end - cstart]
        for cstart, cdata in self._chunks:
            # The read ends inside a chunk we hold (the central directory reaching into the
            # tail): fetch only the missing head.
            if start < cstart < end <= cstart + len(cdata):
                head = self._fetch(start, cstart)
                self._chunks.append((start, head))
                return head + cdata[: end - cstart]
        fetch_end = min(self._size, max(end, start + RANGE_CHUNK))
        data = self._fetch(start, fetch_end)
        self._chunks.append((start, data))
        return data[: end - start]


class _TempDownload:
    """Context manager: a remote file downloaded (and hash-checked) into a temporary file."""

    def __init__(self, client: IndexClient, f: DistFile) -> None:
        self._client, self._f = client, f
        self._fh: Any = None

    def __enter__(self) -> BinaryIO:
        import tempfile

        try:  # beside the cache rather than in a possibly small tmpfs /tmp
            self._client.cache_dir.mkdir(parents=True, exist_ok=True)
            fh = tempfile.TemporaryFile(dir=self._client.cache_dir)
        except OSError:
            fh = tempfile.TemporaryFile()
        self._fh = fh

        def reset() -> None:
            fh.seek(0)
            fh.truncate()

        self._client._stream_to(self._f, fh.write, reset)
        fh.seek(0)
        return fh

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


# The zip records the quick reader parses (the layouts zipfile's structCentralDir, structFileHeader
# and structEndArchive describe).
_END = struct.Struct("<4s4H2LH")
_CENTRAL_SIG, _LOCAL_SIG = b"PK\x01\x02", b"PK\x03\x04"
_METADATA_SUFFIX = b".dist-info/METADATA"


def _is_own_dist_info(name: str, f: DistFile) -> bool:
    return canonicalize_name(name.split("/")[0][: -len(".dist-info")].rsplit("-", 1)[0]) == f.name


def _quick_zip_metadata(read: Callable[[int, int], bytes], size: int, f: DistFile,
                        before_member: Callable[[int, int], None] | None = None) -> bytes | None:
    """METADATA of a wheel without zipfile, or None whenever the archive is not the plain case
    (zip64, a comment, several or no candidates, encryption, an unusual method, any inconsistency):
    the caller then reads it with zipfile, which also produces the errors.

    Why by hand: zipfile builds a ZipInfo for every member to find one; torch's 12k members cost
    ~40 ms on a cold lock's critical path, and a 60-package lock pays ~0.5 ms per wheel. Here the
    central directory is searched in C (bytes.find) for names ending in `.dist-info/METADATA`.
    Sound because the signature of a central header is counted first: when it occurs exactly as
    many times as the archive has members, no name, extra field or comment holds one, so the
    nearest signature before a name is that name's own header, and every member whose name ends
    in the suffix is found. The member's bytes are checked against its CRC, as zipfile does."""
    if size < 22:
        return None
    sig, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment_len = _END.unpack(read(size - 22, size))
    if (sig != b"PK\x05\x06" or comment_len or disk or cd_disk or n_disk != n_total
            or cd_offset + cd_size != size - 22 or (size >= 42 and read(size - 42, size - 38) == b"PK\x06\x07")):
        return None  # a comment, a multi-disk or zip64 archive, or data before the archive
    cd = read(cd_offset, cd_offset + cd_size)
    if len(cd) != cd_size or cd.count(_CENTRAL_SIG) != n_total:
        return None
    found: list[tuple[str, int]] = []  # (name, offset of its central header)
    pos = cd.find(_METADATA_SUFFIX)
    while pos != -1:
        end = pos + len(_METADATA_SUFFIX)
        if pos < 46:
            return None  # no room for a header before it: not a name
        head = cd.rfind(_CENTRAL_SIG, 0, pos - 42)  # a header ends 46 bytes after it starts, where its name begins
        if head < 0 or head + 46 + int.from_bytes(cd[head + 28 : head + 30], "little") != end:
            return None  # the suffix somewhere else than at the end of a name (an extra field, a comment)
        raw = cd[head + 46 : end]
        flags = int.from_bytes(cd[head + 8 : head + 10], "little")
        name = raw.decode("utf-8" if flags & 0x800 else "cp437")
        if "\x00" in name:
            return None
        if name.count("/") == 1:
            found.append((name, head))
        pos = cd.find(_METADATA_SUFFIX, end)
    mine = [c for c in found if _is_own_dist_info(c[0], f)]
    chosen = mine or found
    if len(chosen) != 1:
        return None  # zipfile's reading names the problem
    name, head = chosen[0]
    (flags, method, _t, _d, crc, csize, usize, n, m, _k, _disk, _ia, _ea,
     offset) = struct.unpack_from("<4H3L5H2L", cd, head + 8)
    if flags & 0x1 or method not in (0, 8):
        return None  # encrypted, or compressed with something other than deflate
    raw_name = cd[head + 46 : head + 46 + n]
    if before_member is not None:
        # The local header's extra field may differ from the central one, hence the slack.
        before_member(offset, offset + 30 + n + m + csize + 1024)
    local = read(offset, offset + 30)
    if len(local) != 30 or local[:4] != _LOCAL_SIG:
        return None
    ln, lm = struct.unpack_from("<2H", local, 26)
    start = offset + 30 + ln + lm
    if read(offset + 30, offset + 30 + ln) != raw_name:
        return None
    data = read(start, start + csize)
    if len(data) != csize:
        return None
    if method == 8:
        try:
            inflate = zlib.decompressobj(-15)
            data = inflate.decompress(data, usize + 1)  # no more than it says (a bomb stops here)
        except zlib.error:
            return None
        if not inflate.eof or inflate.unconsumed_tail:
            return None
    if len(data) != usize or zlib.crc32(data) != crc:
        return None
    return data


def _pread(fd: int) -> Callable[[int, int], bytes]:
    return lambda start, end: os.pread(fd, max(0, end - start), start)


def _unreadable_zip() -> tuple[type[BaseException], ...]:
    """What reading a broken zip raises. zipfile and tarfile are imported where a wheel or an sdist
    is read by them (~7 ms together, with shutil and the compressors), not by every lock: a warm
    one finds all metadata in the cache, and the quick reader above serves most cold reads."""
    import zipfile

    return (zipfile.BadZipFile, NotImplementedError, EOFError, ValueError)


def _zip_metadata(source: Path | Any, f: DistFile) -> bytes:
    """The bytes of a wheel's top-level `<name>-<version>.dist-info/METADATA`."""
    try:
        if isinstance(source, _RangeFile):
            quick = _quick_zip_metadata(source.read_range, source.size, f, source.prefetch)
        elif isinstance(source, Path):
            with open(source, "rb") as fh:
                quick = _quick_zip_metadata(_pread(fh.fileno()), os.fstat(fh.fileno()).st_size, f)
        else:  # a downloaded wheel in a temporary file
            quick = _quick_zip_metadata(_pread(source.fileno()), os.fstat(source.fileno()).st_size, f)
        if quick is not None:
            return quick
        import zipfile

        with zipfile.ZipFile(source) as zf:
            candidates = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            mine = [n for n in candidates if _is_own_dist_info(n, f)]
            chosen = mine or candidates
            if len(chosen) != 1:
                raise IntegrityError(f"{f.filename} has {'no' if not chosen else 'several'} .dist-info/METADATA",
                                     hint="the wheel is broken; report it to the package's maintainers")
            if isinstance(source, _RangeFile):
                # The member's local header + data in one request; the local header's extra
                # field may differ from the central one, hence the slack.
                info = zf.getinfo(chosen[0])
                start = info.header_offset
                source.prefetch(start, start + 30 + len(info.orig_filename.encode()) + len(info.extra)
                                + info.compress_size + 1024)
            return zf.read(chosen[0])
    except FileNotFoundError:
        raise IndexError_(f"{f.filename} does not exist at {source}",
                          hint="the find-links directory or file:// index changed; run again") from None
    except _unreadable_zip() as e:
        raise IntegrityError(f"{f.filename} from {_redact(f.url)} is not a readable wheel: {e}",
                             hint="the file is corrupt; retry with --refresh, or report it") from None
    except OSError as e:
        raise IndexError_(f"cannot read {f.filename} from {_redact(f.url)}: {e}") from e


def _sdist_pkg_info(path: Path | Any, f: DistFile) -> bytes | None:
    """The top-level PKG-INFO of an sdist (.tar.gz or .zip), or None when it has none."""
    import tarfile
    import zipfile

    try:
        if f.filename.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/PKG-INFO")]
                return zf.read(names[0]) if names else None
        opened = tarfile.open(path, "r:*") if isinstance(path, Path) else tarfile.open(fileobj=path, mode="r:*")
        with opened as tf:
            for m in tf:
                if m.isfile() and m.name.count("/") == 1 and m.name.endswith("/PKG-INFO"):
                    fh = tf.extractfile(m)
                    return fh.read() if fh is not None else None
    except FileNotFoundError:
        raise IndexError_(f"{f.filename} does not exist at {path}",
                          hint="the find-links directory or file:// index changed; run again") from None
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise IntegrityError(f"cannot read {f.filename}: {e}", hint="the file is corrupt; retry with --refresh") from e
    return None


# --------------------------------------------------------------------------- the client


class IndexClient:
    """Reads package indexes and find-links locations; all network IO of resolution goes here."""

    def __init__(self, index_urls: list[str], find_links: list[str], *, cache_dir: Path,
                 offline: bool = False, refresh: bool = False, max_workers: int = 16,
                 warn: Callable[[str], None] | None = None, write_behind: bool = False,
                 hash_ahead: bool = False, local: Any = None, first_index: bool = False,
                 pinned_index: Mapping[str, str] | None = None) -> None:
        """`write_behind`: cache entries are written by a thread of their own, all of them by the
        time close() returns (a lock's fetch threads then hand their results over without waiting
        for the disk); without it each is written before the call that fetched it returns.
        `hash_ahead`: local files with no hash start hashing in the background as soon as they are
        likely to be wanted (a lock records every hash; see `_hash_ahead`).
        `local`: a pathdeps.LocalSources; the packages it names come from their paths, never
        from an index.
        `first_index`: the index strategy "first-index" (pypm.project.INDEX_STRATEGIES): the extra
        indexes (`index_urls[1:]`) are asked before the primary, and the first that knows a
        project is its only index; otherwise every index's releases are merged (the first source
        wins a repeated file name). Find-links locations are merged either way.
        `pinned_index`: {canonical name: index URL} (`[tool.pypm.sources] NAME = { index = URL }`):
        that project's releases come from that index alone, no other index or find-links."""
        from .credentials import strip

        # As given, less any `user:password@` (kept for the requests by pypm.credentials): they
        # name the source in DistFile and the lock, and key the cache.
        self.index_urls = [strip(u) for u in index_urls]
        self._index_bases = [u if u.endswith("/") else u + "/" for u in self.index_urls]
        self.find_links = [strip(u) for u in find_links]
        self.cache_dir = Path(cache_dir)
        self.offline = offline
        self.refresh = refresh
        self.max_workers = max_workers
        self._warn = warn or _warn_stderr
        self._cache_warned = False
        self._client_obj: Any = None
        # How many of the pool's jobs run at once (pypm.inflight): the pool has `max_workers`
        # threads, and the gate lets as many work as the index's distance calls for.
        self._in_flight = InFlight(max_workers)
        self._client_lock = threading.Lock()
        self._make_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._closing = False
        self._parse_lock = threading.Lock()
        self._files = _Memo()
        self._listings = _Memo()
        self._meta = _Memo()
        self._hashes = _Memo()
        self._write_behind = write_behind
        self._hash_ahead_on = hash_ahead
        self._writer: ThreadPoolExecutor | None = None
        self._local = local
        self._first_index = first_index
        self._pinned_index = {n: strip(u) for n, u in (pinned_index or {}).items()}

    # ------------------------------------------------------------------ public API

    def project_files(self, name: str) -> list[DistFile]:
        """Every file of `name` from every source, first source winning for a repeated filename."""
        return self.project_releases(name).all_files()

    def project_releases(self, name: str) -> Releases:
        """The files of `name` grouped by release, each release's DistFiles built when first asked for."""
        canon = str(canonicalize_name(name))
        if self._local is not None and canon in self._local:
            return self._files.get(canon, lambda: self._local_releases(canon))
        return self._files.get(canon, lambda: self._project_releases(canon, name))

    def _local_releases(self, canon: str) -> Releases:
        releases = Releases(canon)
        releases.add_files(self._local.files(canon))
        return releases

    def metadata(self, f: DistFile) -> CoreMetadata:
        if f.kind == "directory":  # a path dependency's [project] table (pypm.pathdeps)
            meta: CoreMetadata = self._meta.get(f.url, lambda: self._local.metadata_of(f.name))
            return meta
        with self._naming_the_source(f):
            return self._meta.get(f.url, lambda: self._metadata(f))

    @contextlib.contextmanager
    def _naming_the_source(self, f: DistFile) -> Iterator[None]:
        """A remote archive's errors say which requirement named the URL (pypm.pathdeps); an
        index's file's errors pass as they are."""
        try:
            yield
        except (IndexError_, IntegrityError) as e:
            if f.source[0] != "url" or self._local is None:
                raise
            origin = self._local.sources[f.name].origin if f.name in self._local else "a direct reference"
            raise type(e)(f"{f.name} ({origin}): {e.message}", hint=e.hint) from None

    def remember_metadata(self, f: DistFile, meta: CoreMetadata) -> None:
        """`meta` is `f`'s metadata, found another way (its build backend, pypm.locking): kept for
        this client and in the cache, where the next lock finds it before asking the file."""
        self._meta.set(f.url, meta)
        path = self.cache_dir / "metadata" / (_cache_key(self._file_key(f)) + ".json")
        self._store(path, json.dumps(asdict(meta), sort_keys=True).encode())

    def prefetch(self, names: Iterable[str]) -> None:
        """Fetch the pages of many projects at once; errors surface later from project_files.
        Pages already fetched or being fetched are left alone (the real call waits for them): the
        resolver asks for the same names again and again, and a job per name was ~2k thread-pool
        submissions in a 60-package lock."""
        todo = [n for n in names if not self._files.started(str(canonicalize_name(n)))]
        self._run_all([lambda n=n: self.project_releases(n)  # type: ignore[misc]  # mypy#15459: lambda x=x
                       for n in todo])

    def prefetch_metadata(self, files: Iterable[DistFile]) -> None:
        """Fetch the metadata of many files at once; errors surface later from metadata() (those
        already fetched or being fetched are left alone, as in prefetch)."""
        self._run_all([lambda f=f: self.metadata(f)  # type: ignore[misc]  # mypy#15459: lambda x=x
                       for f in files if not self._meta.started(f.url)])

    def in_background(self, job: Callable[[], Any]) -> None:
        """Run `job` on the client's threads without waiting for it (look-ahead fetches: what it
        fetches, errors included, is memoised for the real calls). Dropped once the client closes."""
        pool = self._get_pool(unless_closing=True)
        if pool is not None:
            try:
                pool.submit(self._gated, job)
            except RuntimeError:  # shut down meanwhile (the client is closing): nothing to warm any more
                pass

    def file_hash(self, f: DistFile) -> str:
        """sha256 (hex) of a file, reading or downloading it when its source gave no hash."""
        if f.sha256:
            return f.sha256
        with self._naming_the_source(f):
            return self._hashes.get(f.url, lambda: self._file_hash(f))

    def open_dist(self, f: DistFile) -> ContextManager[BinaryIO]:
        """The file's bytes as a seekable binary file: a local file opened in place, a remote one
        downloaded into an anonymous temporary file and checked against `f.sha256` when known."""
        if _is_local(f.url):
            return _local_path(f.url).open("rb")
        return _TempDownload(self, f)

    def close(self) -> None:
        with self._client_lock:
            self._closing = True  # running look-ahead jobs may not queue more
            pool = self._pool
        if pool is not None:
            # On Ctrl-C the queue may still hold many jobs: drop them, wait only for running ones.
            pool.shutdown(wait=True, cancel_futures=True)
        with self._client_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.shutdown(wait=True)  # every queued entry written (look-ahead jobs may have queued more)
        with self._client_lock:
            self._pool = None
            self._closing = False
        with self._make_lock:  # (a warm-up still making it: wait, then close it too)
            client, self._client_obj = self._client_obj, None
        if client is not None:
            client.close()

    def __enter__(self) -> IndexClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _client(self) -> Any:
        client = self._client_obj
        if client is None:
            # Its own lock: making the client takes a while, and _client_lock guards the thread pool
            # the resolver queues look-ahead jobs on.
            with self._make_lock:
                if self._client_obj is None:
                    from .http import make_client  # httpx is imported only when the network is used

                    self._client_obj = make_client()
                client = self._client_obj
        return client

    def warm_up(self) -> None:
        """Make the HTTP client (httpx's imports, the TLS context with its CA store) on a thread of
        its own while the caller does other work (a lock: the resolver's imports and marker universe):
        a cold lock's first request waited ~40 ms for it. No request is made."""
        if self.offline or self._client_obj is not None or all(_is_local(u) for u in (*self.index_urls, *self.find_links)):
            return

        from . import tls

        tls.start()  # beside httpx's imports on the thread below: OpenSSL loads the CAs without the GIL

        def make() -> None:
            try:
                self._client()
            except Exception:  # noqa: BLE001 -- the first request makes it again and reports what fails
                pass

        threading.Thread(target=make, name="pypm-http-warm", daemon=True).start()

    def _get_pool(self, *, unless_closing: bool = False) -> ThreadPoolExecutor | None:
        with self._client_lock:
            if unless_closing and self._closing:
                return None
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="pypm-index")
            return self._pool

    def _run_all(self, jobs: list[Callable[[], Any]]) -> None:
        if not jobs:
            return
        pool = self._get_pool()
        assert pool is not None
        for fut in [pool.submit(self._gated, j) for j in jobs]:
            fut.exception()  # wait; the memo keeps the outcome for the real call

    def _gated(self, job: Callable[[], T]) -> T:
        """A pool job, run when the gate lets it (pypm.inflight). No job waits for another job of
        the pool (the look-ahead's jobs only queue more; the memo waits only for work already
        running), so the gate cannot hold a job whose result a running one needs."""
        with self._in_flight:
            return job()

    def _store(self, path: Path, data: bytes | list[bytes | memoryview]) -> None:
        """Write a cache entry (now, or queued for the writer thread); a cache that cannot be
        written costs speed, not the command."""
        if self._write_behind:
            with self._client_lock:
                if self._writer is None and not self._closing:
                    self._writer = ThreadPoolExecutor(1, thread_name_prefix="pypm-cache-writer")
                writer = self._writer
            if writer is not None:
                try:
                    # Each entry still goes through a temporary file and a rename: an interrupted
                    # write leaves no half-written entry, only a temporary file.
                    writer.submit(self._write_now, path, data)
                    return
                except RuntimeError:  # shut down meanwhile: write it here
                    pass
        self._write_now(path, data)

    def _write_now(self, path: Path, data: bytes | list[bytes | memoryview]) -> None:
        try:
            _write_atomic(path, data)
        except OSError as e:
            with self._client_lock:
                first, self._cache_warned = not self._cache_warned, True
            if first:
                self._warn(f"cannot write the cache under {self.cache_dir} ({e.strerror or e}); "
                           "continuing without caching")

    def _sources_text(self) -> str:
        text = ", ".join(_redact(u) for u in self.index_urls) or "no index"
        if self.find_links:
            text += f" (nor in find-links {', '.join(self.find_links)})"
        return text

    # ------------------------------------------------------------------ project pages

    def _project_releases(self, canon: str, asked: str) -> Releases:
        found = False
        releases = Releases(canon)
        # Local find-links are listed before the index is asked (a directory scan), so that the
        # newest release's hash-less files start hashing while the page is fetched.
        self._hash_newest_ahead([f for loc in self.find_links if _is_local(loc)
                                 for f in self._listing(loc).get(canon, ())])
        sources = list(zip(self.index_urls, self._index_bases))
        pinned = self._pinned_index.get(canon)
        if pinned is not None:  # that index alone (uv's explicit index)
            sources = [(pinned, pinned if pinned.endswith("/") else pinned + "/")]
        elif self._first_index:
            # uv's order: extra indexes first (a private index named with --extra-index-url is
            # asked before the public primary), and the first that knows the project is its only
            # index: a release planted under the same name on another index is never seen.
            sources = sources[1:] + sources[:1]
        for idx, base in sources:
            if found and self._first_index:
                break
            page = self._project_page(base, canon)
            if page is None:
                continue
            found = True
            source = ("registry", idx)
            store = page.unsaved
            # One page parsed at a time: parsing holds the GIL anyway, and a big page's decoded JSON
            # is several times its size (the web stack's largest, 7 MB, is ~30 MB of objects), so
            # parsing many at once only raised the peak memory.
            with self._parse_lock:
                if _is_json(page.content_type):
                    cached = _unmarshal(page.parsed)
                    if type(cached) is list and _valid_files(cached):
                        releases.add_files_of_page(cached, page.url, source)
                    elif type(cached) is tuple and valid_span_columns(cached, len(page.body)):
                        body = page.body if type(page.body) is bytes else bytes(page.body)
                        releases.add_spans(cached, body, page.url, source)
                    else:
                        body = page.body if type(page.body) is bytes else bytes(page.body)
                        spans = json_page_spans(body, canon)
                        if spans is not None:  # the index's usual layout: each file decoded when needed
                            page.parsed = _seal(marshal.dumps(spans))
                            store = not _is_local(base)
                            releases.add_spans(spans, body, page.url, source)
                        else:
                            files = json_page_files(_json_files(body, page.url), canon)
                            page.parsed = marshal.dumps(files)
                            store = not _is_local(base)  # new, or the entry's parsed files were unreadable
                            releases.add_files_of_page(files, page.url, source)
                else:
                    releases.add_entries(_page_entries(bytes(page.body), page.content_type, page.url), source)
            if store:  # written outside the lock: the next page's parsing does not wait for the disk
                self._store(self.cache_dir / "http" / _cache_key(base + canon + "/"), page.dumps())
        for loc in self.find_links if pinned is None else ():
            link_files = self._listing(loc).get(canon, [])
            found = found or bool(link_files)
            releases.add_files(link_files)
        if not found:
            raise PackageNotFound(
                f"Package `{asked}` was not found in "
                + (f"{_redact(pinned)} (its only index: [tool.pypm.sources])" if pinned is not None
                   else self._sources_text()),
                hint="check the name's spelling, or add the index (--index-url / --extra-index-url) "
                     "or the --find-links location that has it")
        return releases

    def _hash_newest_ahead(self, files: list[DistFile]) -> None:
        """`_hash_ahead` for the newest release among local hash-less `files`, before any metadata is
        read: a guess (the resolver most often pins the newest release) that moves the hashing of a
        big find-links wheel off the end of a cold lock; a wrong one costs a hash the disk cache keeps."""
        if not self._hash_ahead_on:
            return
        newest: Version | None = None
        for f in files:
            if not f.sha256 and f.kind == "wheel":
                try:
                    v = Version(f.version)
                except InvalidVersion:
                    continue
                newest = v if newest is None or v > newest else newest
        for f in files:
            if newest is not None and not f.sha256 and Version(f.version) == newest:
                self.in_background(lambda f=f: self.file_hash(f))  # type: ignore[misc]  # mypy#15459: lambda x=x

    def _project_page(self, idx: str, canon: str) -> _Page | None:
        """The project's page on one index, or None when the index does not know the project."""
        if not _is_local(idx):
            page = self._fetch_page(idx + canon + "/", parse_json=True)
            return None if page.status in (404, 410) else page
        root = _local_path(idx)
        if not root.is_dir():
            raise IndexError_(f"index directory {root} (from {idx}) does not exist",
                              hint="check --index-url / [tool.pypm] index-url")
        d = root / canon
        if not d.is_dir():
            # PEP 503 says directories are named by the normalised name; tolerate ones that are not.
            d = next((c for c in root.iterdir() if c.is_dir() and canonicalize_name(c.name) == canon), d)
        index_html = d / "index.html"
        if index_html.is_file():
            return _Page(200, "text/html", index_html.read_bytes(), index_html.as_uri())
        if d.is_dir():  # a bare directory of files: list it like a find-links dir
            html = "".join(f'<a href="{urllib.parse.quote(p.name)}">{p.name}</a>' for p in sorted(d.iterdir()))
            return _Page(200, "text/html", html.encode(), d.as_uri() + "/")
        return None

    def _listing(self, loc: str) -> dict[str, list[DistFile]]:
        return self._listings.get(loc, lambda: self._list_find_links(loc))

    def _list_find_links(self, loc: str) -> dict[str, list[DistFile]]:
        source = ("find-links", loc)
        files: list[DistFile]
        if _is_local(loc):
            p = _local_path(loc)
            if p.is_dir():
                paths = sorted(c for c in p.iterdir() if c.is_file())
            elif p.is_file():
                paths = [p]
            else:
                # pip's behaviour: a missing find-links location is worth a warning, not a failure.
                self._warn(f"find-links location {loc} does not exist; ignoring it")
                return {}
            entries = [{"filename": c.name, "url": c.resolve().as_uri(), "sha256": None,
                        "size": c.stat().st_size, "requires_python": None, "yanked": None,
                        "metadata": (False, None), "upload_time": None} for c in paths]
            files = _dist_files(entries, source, None)
        else:
            page = self._get_page(loc)
            if page.status in (404, 410):
                self._warn(f"find-links location {_redact(loc)} was not found (HTTP {page.status}); ignoring it")
                return {}
            files = _dist_files(_page_entries(bytes(page.body), page.content_type, page.url), source, None)
        by_name: dict[str, list[DistFile]] = {}
        for f in files:
            by_name.setdefault(f.name, []).append(f)
        return by_name

    def _get_page(self, url: str) -> _Page:
        # Not memoised: both callers are (per project, per find-links location), and keeping
        # every page body for the life of the client held ~27 MB on a 60-package lock.
        return self._fetch_page(url)

    def _fetch_page(self, url: str, *, parse_json: bool = False) -> _Page:
        """GET a page through the on-disk HTTP cache (conditional requests, 304 reuse, offline).

        With `parse_json`, a new JSON page comes back with `parsed` None and is not stored: the
        caller parses it and stores it with its parsed files (`_store_page`)."""
        import time

        path = self.cache_dir / "http" / _cache_key(url)
        cached = _Page.load(path)
        if self.offline:
            if cached is None:
                raise IndexError_(f"{_redact(url)} is not in the cache; run without --offline",
                                  hint="run once with the network so the cache holds it")
            return cached
        if cached is not None and not self.refresh and cached.expires > time.time():
            return cached
        headers = {"Accept": ACCEPT}
        if cached is not None and cached.status == 200:
            if cached.etag:
                headers["If-None-Match"] = cached.etag
            if cached.last_modified:
                headers["If-Modified-Since"] = cached.last_modified
        if self.refresh:
            headers["Cache-Control"] = "max-age=0"  # also revalidate in caching proxies
        r = self._request("GET", url, headers)
        expires = time.time() + _max_age(r.headers.get("cache-control", ""))
        if r.status_code == 304 and cached is not None:
            page = _Page(cached.status, cached.content_type, cached.body, cached.url, cached.etag,
                         cached.last_modified, expires)
        elif r.status_code in (404, 410):
            page = _Page(r.status_code, "", b"", str(r.url), None, None, expires)
        elif r.status_code == 200:
            page = _Page(200, r.headers.get("content-type", "text/html"), r.content, str(r.url),
                         r.headers.get("etag"), r.headers.get("last-modified"), expires)
        else:
            raise _http_failure(r, url, "check the index URL")
        now = time.time()
        same = cached is not None and page.same_as(cached)
        if same:
            assert cached is not None
            page.parsed = cached.parsed  # made from this very body
        if parse_json and not same and page.status == 200 and _is_json(page.content_type):
            page.unsaved = True
            return page  # stored by the caller (with its parsed files, when it made them)
        if not (same and page.expires <= now and cached.expires <= now):  # type: ignore[union-attr]
            # An unchanged page that may not be reused without asking is not written again:
            # the index sends project pages without validators or max-age, so a warm lock
            # re-downloads every page, and rewriting them all (~31 MB for a 60-package lock)
            # was ~0.1 s of CPU. The entry on disk already says "ask again".
            self._store(path, page.dumps())
        return page

    def _request(self, method: str, url: str, headers: dict[str, str]) -> Any:
        """One request with retries on transient failures; returns the response for any other status."""
        from .http import RETRY_STATUS, with_retries

        client = self._client()

        def once() -> Any:
            r = self._in_flight.request(client, method, url, headers)
            if r.status_code in RETRY_STATUS:
                r.raise_for_status()
            return r

        return with_retries(_redact(url), once)

    # ------------------------------------------------------------------ metadata

    def _metadata(self, f: DistFile) -> CoreMetadata:
        path = self.cache_dir / "metadata" / (_cache_key(self._file_key(f)) + ".json")
        if not self.refresh:  # --refresh re-fetches metadata (DESIGN §3)
            try:
                fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v  # as asdict() wrote it
                                          for k, v in json.loads(path.read_bytes()).items()}
                meta = CoreMetadata(**fields)
                self._hash_ahead(f)
                return meta
            except (OSError, ValueError, TypeError, AttributeError):
                pass  # not cached (or an unreadable entry -- even valid JSON of another shape -- which is replaced)
        if self.offline and not _is_local(f.url):
            raise IndexError_(f"the metadata of {f.filename} is not in the cache; run without --offline",
                              hint="run once with the network so the cache holds it")
        meta = self._wheel_metadata(f) if f.kind == "wheel" else self._sdist_metadata(f)
        if meta.name != f.name or Version(meta.version) != Version(f.version):
            raise IntegrityError(
                f"{f.filename} from {_redact(f.url)} has metadata for {meta.name} {meta.version}, "
                f"not for {f.name} {f.version}",
                hint="the file is mislabelled; report it to the package's maintainers")
        self._store(path, json.dumps(asdict(meta), sort_keys=True).encode())
        self._hash_ahead(f)
        return meta

    def _hash_ahead(self, f: DistFile) -> None:
        """Start hashing the hash-less local files of `f`'s release in the background.

        A find-links file has no hash to read, and the lock records one: hashed only when the lock
        is written, torch's 183 MB wheel (~0.1 s of sha256) came after the whole resolution. The
        release whose metadata is read is most often the one locked; hashing it now overlaps the
        fetches of its dependencies (sha256 and reads run without the GIL). `file_hash` memoises,
        so the lock's own call waits for this one (or gets its error)."""
        if not self._hash_ahead_on or f.sha256 or not _is_local(f.url):
            return
        try:
            files = self.project_releases(f.name).files(f.version)
        except IndexError_:
            files = [f]
        for g in files:
            if not g.sha256 and _is_local(g.url):
                self.in_background(lambda g=g: self.file_hash(g))  # type: ignore[misc]  # mypy#15459: lambda x=x

    def _file_key(self, f: DistFile) -> str:
        if f.sha256:
            return f"{f.url}\0{f.sha256}"
        if _is_local(f.url):
            try:
                st = _local_path(f.url).stat()
                return f"{f.url}\0{st.st_size}\0{st.st_mtime_ns}"
            except OSError:
                pass
        return f.url

    def _wheel_metadata(self, f: DistFile) -> CoreMetadata:
        if f.has_metadata:
            data = self._fetch_optional(f.url + ".metadata")
            if data is not None:
                if f.metadata_sha256:
                    actual = hashlib.sha256(data).hexdigest()
                    if actual != f.metadata_sha256:
                        raise IntegrityError(
                            f"the metadata file of {f.filename} ({_redact(f.url)}.metadata) does not match "
                            f"the index's hash: expected sha256 {f.metadata_sha256}, got {actual}",
                            hint="the index served a corrupted file; retry later with --refresh, or tell "
                                 "the index's operators")
                return parse_core_metadata(data, f.filename)[0]
        if _is_local(f.url):
            return parse_core_metadata(_zip_metadata(_local_path(f.url), f), f.filename)[0]
        try:
            return parse_core_metadata(self._remote_wheel_member(f), f.filename)[0]
        except _NoRanges:
            pass  # the server ignores Range: read the whole wheel
        with self._download(f) as tmp:
            return parse_core_metadata(_zip_metadata(tmp, f), f.filename)[0]

    def _fetch_optional(self, url: str) -> bytes | None:
        """A small file's bytes, or None when it does not exist."""
        if _is_local(url):
            try:
                return _local_path(url).read_bytes()
            except FileNotFoundError:
                return None
        r = self._request("GET", url, {})
        if r.status_code in (404, 410):
            return None
        if r.status_code != 200:
            raise _http_failure(r, url)
        return bytes(r.content)

    def _remote_wheel_member(self, f: DistFile) -> bytes:
        """METADATA of a remote wheel through Range requests: the zip's tail, then the member."""
        from .http import RETRY_STATUS, with_retries

        client = self._client()

        def get_range(spec: str) -> tuple[bytes, int]:
            def once() -> tuple[bytes, int]:
                # Streamed, so that a server answering 200 (no Range support) costs no body.
                headers = {"Range": f"bytes={spec}", "Accept-Encoding": "identity"}
                with client.stream("GET", f.url, headers=headers) as r:
                    if r.status_code in RETRY_STATUS:
                        r.raise_for_status()
                    total = r.headers.get("content-range", "").rpartition("/")[2]
                    if r.status_code != 206 or not total.isdigit():
                        raise _NoRanges()
                    return r.read(), int(total)

            return with_retries(_redact(f.url), once)

        # A wheel up to three tails long is asked for whole (still as a range): its METADATA sits
        # before RECORD and the central directory, which often leave it out of the last 64 KiB,
        # and a second request costs more than the bytes.
        ask = f.size if f.size is not None and TAIL_BYTES < f.size <= 3 * TAIL_BYTES else TAIL_BYTES
        tail, size = get_range(f"-{ask}")
        view = _RangeFile(size, size - len(tail), tail,
                          lambda start, end: get_range(f"{start}-{end - 1}")[0])
        return _zip_metadata(view, f)

    def _sdist_metadata(self, f: DistFile) -> CoreMetadata:
        # A wheel of the same release carries the same metadata and costs one small request.
        try:
            wheels = [w for w in self.project_releases(f.name).files(f.version) if w.kind == "wheel"]
        except IndexError_:
            wheels = []
        if wheels:
            wheels.sort(key=lambda w: not w.has_metadata)
            return self.metadata(wheels[0])
        if _is_local(f.url):
            data = _sdist_pkg_info(_local_path(f.url), f)
        else:
            with self._download(f) as tmp:
                data = _sdist_pkg_info(tmp, f)
        if data is None:
            raise SdistMetadataUnsupported(
                f"{f.filename} has no PKG-INFO; building metadata from source distributions is not supported yet",
                hint=f"use a version of {f.name} that publishes wheels, or put a wheel of it in a --find-links dir")
        meta, mv, dynamic = parse_core_metadata(data, f.filename)
        try:
            old = Version(mv) < Version("2.2")
        except InvalidVersion:
            old = True
        if old or "requires-dist" in dynamic or "requires-python" in dynamic or "provides-extra" in dynamic:
            why = f"Metadata-Version {mv} is older than 2.2" if old else "its dependencies are marked Dynamic"
            raise SdistMetadataUnsupported(
                f"cannot read the dependencies of {f.filename} from its PKG-INFO ({why}); building metadata "
                "from source distributions is not supported yet",
                hint=f"use a version of {f.name} that publishes wheels, or put a wheel of it in a --find-links dir")
        return meta

    # ------------------------------------------------------------------ whole files

    def _download(self, f: DistFile) -> _TempDownload:  # kept for callers written before open_dist
        return _TempDownload(self, f)

    def _stream_to(self, f: DistFile, sink: Callable[[bytes], object], reset: Callable[[], None]) -> str:
        """Stream a remote file into `sink` (retrying from scratch); returns its sha256 hex."""
        from .http import with_retries

        if self.offline:
            raise IndexError_(f"{f.filename} is not in the cache; run without --offline",
                              hint="run once with the network so the cache holds it")
        client = self._client()

        def once() -> str:
            reset()
            h = hashlib.sha256()
            with client.stream("GET", f.url, headers={"Accept-Encoding": "identity"}) as r:
                r.raise_for_status()
                for chunk in r.iter_bytes(1 << 16):
                    h.update(chunk)
                    sink(chunk)
            return h.hexdigest()

        digest = with_retries(_redact(f.url), once)
        if f.sha256 and digest != f.sha256:
            raise IntegrityError(f"{f.filename} from {_redact(f.url)} does not match its hash: "
                                 f"expected sha256 {f.sha256}, got {digest}",
                                 hint="the download is corrupt or the index changed; retry with --refresh")
        return digest

    def _file_hash(self, f: DistFile) -> str:
        if not _is_local(f.url):
            return self._stream_to(f, lambda _chunk: None, lambda: None)
        path = _local_path(f.url)
        try:
            st = path.stat()
        except OSError as e:
            raise IndexError_(f"cannot read {path}: {e.strerror}") from None
        # Hashing a multi-hundred-MB local wheel on every lock is what this cache avoids. Keyed by
        # the file's identity as well as its size and times: a file replaced by another of the same
        # size and mtime (`cp -p`, an unpacked archive) has a new inode or ctime.
        key = f"{f.url}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{st.st_dev}"
        record = self.cache_dir / "hashes" / (_cache_key(key) + ".sha256")
        try:
            digest = record.read_text().strip()
            if len(digest) == 64 and not self.refresh:
                return digest
        except OSError:
            pass
        # Big chunks into one buffer: the read and the hashing each release the GIL, and getting it
        # back waits for the switch interval (5 ms) whenever another thread runs Python, which a lock
        # does throughout. Hashing torch's 183 MB beside a busy thread took ~2 s in 1 MB chunks,
        # ~0.35-0.45 s in 8 MB ones and ~0.34 s in 16 MB ones (0.11 s alone either way); the buffer
        # is most of a torch lock's peak RSS above 42 MB (58 MB).
        h = hashlib.sha256()
        buf = bytearray(_HASH_CHUNK)
        view = memoryview(buf)
        with path.open("rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                h.update(view[:n])
        digest = h.hexdigest()
        self._store(record, digest.encode())
        return digest
