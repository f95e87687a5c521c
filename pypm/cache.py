"""The content-addressed wheel cache: verified, resumable downloads and an unpacked store.

Layout under the cache root (DESIGN §4):
    wheels/<sha[:2]>/<sha>/<filename>        complete, verified wheels
    wheels/<sha[:2]>/<sha>/<filename>.part   a download in progress (resumed with HTTP Range)
    unpacked/<sha[:2]>/<sha>/                the wheel's files, extracted and checked against RECORD
    unpacked/<sha[:2]>/.tmp-*                an extraction in progress (never mistaken for complete)
    locks/<sha[:2]>/<sha>.lock               one file lock per entry (many processes share a cache)
A complete entry only ever appears by an atomic rename, so whatever a killed process leaves
behind is a `.part` file or a `.tmp-*` directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence
from urllib.parse import unquote, urlparse

from .errors import ExitCode, IndexError_, InstallError, IntegrityError, LockError, PypmError, UsageError
from .fsalloc import spread_subdirs
from .lockfile import FileEntry

if TYPE_CHECKING:  # pragma: no cover
    import httpx

__all__ = ["Cache", "Fetcher", "FetcherMismatch", "cache_command", "cannot_make", "download_order"]

CHUNK = 1 << 20
# A download's bytes are written and hashed this many at a time, not per TLS record (16 kB): each
# write and each hash update releases the GIL, and during a cold sync every release means waiting
# to get it back from the unpacking and install threads. Per record, mypy's 12.6 MB (the canary's
# critical path) took 0.19-0.21 s to download inside a sync against 0.03 s alone; in 256 kB
# batches, 0.14-0.17 s (canary cold sync, A B x 12, tmpfs: 0.380 -> 0.360 s median).
WRITE_BATCH = 256 << 10
Fetcher = Callable[[str, str, Path], bool]  # (sha256, filename, dest) -> wrote dest?


@dataclass(frozen=True)
class FetcherMismatch:
    """What a fetcher delivered that did not verify (reported, then discarded)."""

    fetcher: Fetcher
    package: str
    filename: str
    expected: str
    actual: str


class _Cancelled(Exception):
    pass


# --------------------------------------------------------------------------- progress

class _Progress:
    """rich progress bars on a terminal (imported lazily); a no-op otherwise."""

    BIG = 1 << 20  # files under 1 MiB count only toward the overall bar

    def __init__(self, enabled: bool, total_bytes: int, count: int) -> None:
        self._p = None
        self._lock = threading.Lock()
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self._p = Progress(TextColumn("{task.description}", justify="right"), BarColumn(), DownloadColumn(),
                           TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
                           console=Console(stderr=True))  # stdout belongs to the command's real output
        self._p.start()
        self._overall = self._p.add_task(f"{count} file(s)", total=total_bytes or None)

    def start(self, name: str, total: int | None) -> Any:
        if self._p is None or not total or total < self.BIG:
            return None
        return self._p.add_task(name, total=total)

    def advance(self, task: Any, n: int) -> None:
        if self._p is None:
            return
        if task is not None:
            self._p.advance(task, n)
        self._p.advance(self._overall, n)

    def finish(self, task: Any) -> None:
        if self._p is not None and task is not None:
            self._p.remove_task(task)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()


# --------------------------------------------------------------------------- the cache

def _copy_hashing(src: Path, dest: Path) -> tuple[str, int]:
    """Copy `src` to `dest` and return the sha256 and size of the bytes written: one read of the
    source, hashed on a second thread while this one writes (hashlib releases the GIL). A copy
    and then a second read to hash it took ~215 ms for torch's 183 MB wheel here, this ~150 ms;
    what is hashed is what was written, whatever the source does meanwhile."""
    import queue
    import threading

    # At most two chunks wait for the hasher (~8 MB with the one written and the one hashed): with
    # eight of 4 MB the queue filled whenever hashing fell behind the writes, and a cold sync of
    # torch peaked at ~92 MB instead of ~64 MB.
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
    h = hashlib.sha256()

    def hash_them() -> None:
        while (chunk := chunks.get()) is not None:
            h.update(chunk)

    hasher = threading.Thread(target=hash_them, name="pypm-hash-copy", daemon=True)
    size = 0
    with open(src, "rb") as f, open(dest, "wb") as out:
        hasher.start()
        try:
            while chunk := f.read(2 << 20):
                chunks.put(chunk)
                out.write(chunk)
                size += len(chunk)
        finally:
            chunks.put(None)  # (on an error too: the hasher ends, and the error is raised)
            hasher.join()
    return h.hexdigest(), size


class Cache:
    """A wheel cache rooted at `root` (default: `pypm.config.cache_dir()`); thread- and process-safe.

    `base_dir` resolves relative local paths in lock URLs; `offline` forbids network access.
    """

    def __init__(self, root: Path | None = None, *, offline: bool = False, base_dir: Path | None = None,
                 client: "httpx.Client | None" = None, max_workers: int | None = None) -> None:
        if root is None:
            from .config import cache_dir

            root = cache_dir()
        self.root = Path(root)
        self.offline = offline
        self.base_dir = Path(base_dir) if base_dir else Path.cwd()
        # Downloads in parallel: two per core, at most 8. More kept more connections busy but
        # cost more in GIL hand-offs (each TLS record read releases it, and each WRITE_BATCH
        # written and hashed) than it won: 8 instead of 4 on 2 cores made a cold sync of the web
        # stack ~5% slower (measured when every record was also written and hashed on its own).
        self.max_workers = max_workers or min(8, 2 * (os.cpu_count() or 1))
        self.retry_delay = 0.1  # seconds before the first retry of a failed download; doubles each time
        self._client = client
        self._own_client = client is None
        self._client_lock = threading.Lock()
        self._verified: set[tuple[str, int, int, int]] = set()
        self._cancel = threading.Event()
        self.events: list[str] = []  # human-readable notes (discarded corrupt entries, resumes)

    # ---- paths
    def wheel_path(self, sha256: str, filename: str) -> Path:
        return self.root / "wheels" / sha256[:2] / sha256 / filename

    def unpacked_path(self, sha256: str) -> Path:
        return self.root / "unpacked" / sha256[:2] / sha256

    def downloads(self, entry: FileEntry) -> bool:
        """Would `fetch` download `entry` over the network: no copy in the cache, and a network
        URL, not a local file (a plugin fetcher may still deliver it)."""
        return _local_path(entry.url, self.base_dir) is None and not self.wheel_path(entry.sha256,
                                                                                      entry.filename).exists()

    def _lock(self, sha256: str) -> "_EntryLock":
        p = self.root / "locks" / sha256[:2] / f"{sha256}.lock"
        if not p.parent.is_dir():
            _make_fan(p.parent)
        return _EntryLock(str(p))

    @contextlib.contextmanager
    def _locked(self, sha256: str) -> Iterator[None]:
        """Hold the entry's lock; waiting for another process stays interruptible by fetch_many's cancel."""
        lock = self._lock(sha256)
        while True:
            if self._cancel.is_set():
                raise _Cancelled()
            if lock.acquire(timeout=0.25):
                break
        try:
            yield
        finally:
            lock.release()

    def close(self) -> None:
        if self._client is not None and self._own_client:
            self._client.close()
            self._client = None

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _http(self) -> "httpx.Client":
        with self._client_lock:
            if self._client is None:
                from .http import make_client

                self._client = make_client()
            return self._client

    def _note(self, msg: str) -> None:
        self.events.append(msg)

    def _make_entry_dir(self, path: Path) -> None:
        """Make the entry directory `wheels/<fan>/<sha>` if it is missing; a file in its place
        (a damaged cache: pypm only ever makes a directory there) is removed first."""
        try:
            path.mkdir(exist_ok=True)
            return
        except FileExistsError:  # something that is not a directory
            self._remove_stray(path)
        except OSError as e:
            raise cannot_make(path, e.strerror or e) from None
        try:
            path.mkdir(exist_ok=True)
        except OSError as e:
            raise cannot_make(path, e.strerror or e) from None

    def _remove_stray(self, path: Path) -> None:
        """Remove a file (or symlink) where the cache keeps an entry's directory, with a note."""
        try:
            path.unlink()
        except FileNotFoundError:
            return  # another process removed it first
        except OSError as e:
            raise cannot_make(path, f"a file is in the way and cannot be removed ({e.strerror or e})") from None
        self._note(f"removed {path}, a file where the cache keeps a directory")

    # ---- verification
    def _hash_file(self, path: Path) -> tuple[str, int]:
        h = hashlib.sha256()
        n = 0
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                n += len(chunk)
        return h.hexdigest(), n

    def _is_good(self, path: Path, entry: FileEntry) -> bool:
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        if key in self._verified:
            return True
        if entry.size is not None and st.st_size != entry.size:
            return False
        digest, _ = self._hash_file(path)
        if digest != entry.sha256:
            return False
        self._verified.add(key)
        return True

    @staticmethod
    def _check_entry(entry: FileEntry, package: str) -> None:
        fn = entry.filename
        if not fn or fn in (".", "..") or "/" in fn or "\\" in fn or "\0" in fn:
            # the filename becomes a path component in the cache: it must not walk out of it
            raise LockError(f"{package or fn}: the lock names the file {fn!r}, which is not a plain file name",
                            hint="re-create the lock with `pypm lock --refresh`")
        if not entry.has_valid_hash():
            raise IntegrityError(f"{package or entry.filename}: the lock has no valid sha256 for {entry.filename} "
                                 f"({entry.sha256!r})", hint="run `pypm lock --refresh` to fill in the hashes")

    def cached_wheel(self, entry: FileEntry) -> Path | None:
        """The verified cached wheel for `entry`, or None (a corrupt one is discarded)."""
        p = self.wheel_path(entry.sha256, entry.filename)
        if not p.exists():
            return None
        if self._is_good(p, entry):
            return p
        self._note(f"discarded corrupt cache entry {p}")
        p.unlink(missing_ok=True)
        return None

    # ---- fetch one
    def fetch(self, entry: FileEntry, *, package: str = "", fetchers: Sequence[Fetcher] = (),
              on_mismatch: Callable[[FetcherMismatch], None] | None = None,
              _progress: _Progress | None = None) -> Path:
        """The path of a verified copy of `entry` in the cache, downloading it if needed.

        Raises IntegrityError (hash/size mismatch: names package, file, expected and actual),
        IndexError_ (cannot fetch), InstallError (local file missing).
        """
        self._check_entry(entry, package)
        label = f"{package} ({entry.filename})" if package else entry.filename
        final = self.wheel_path(entry.sha256, entry.filename)
        if final.exists() and self._is_good(final, entry):
            _touch(final.parent)
            return final
        if not final.parent.is_dir():
            _make_fan(final.parent.parent)
            self._make_entry_dir(final.parent)  # wheels/<fan>/<sha>: in a block group of its own
        with self._locked(entry.sha256):
            if final.exists():  # another process may have finished it while we waited
                if self._is_good(final, entry):
                    _touch(final.parent)
                    return final
                self._note(f"discarded corrupt cache entry {final}")
                final.unlink()
            for fetcher in fetchers:
                if self._try_fetcher(fetcher, entry, package, final, on_mismatch):
                    return final
            src = _local_path(entry.url, self.base_dir)
            if src is not None:
                self._copy_local(src, entry, label, final)
            else:
                if self.offline:
                    raise IndexError_(f"{label} is not in the cache and --offline forbids downloading it",
                                      hint="run once without --offline to fill the cache")
                self._download(entry, label, final, _progress)
            _touch(final.parent)
            return final

    def _try_fetcher(self, fetcher: Fetcher, entry: FileEntry, package: str, final: Path,
                     on_mismatch: Callable[[FetcherMismatch], None] | None) -> bool:
        tmp = final.with_name(f"{entry.filename}.fetcher-{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            if not fetcher(entry.sha256, entry.filename, tmp) or not tmp.is_file():
                return False
            digest, size = self._hash_file(tmp)
            if digest != entry.sha256 or (entry.size is not None and size != entry.size):
                self._note(f"{getattr(fetcher, '__name__', fetcher)!s} delivered {entry.filename} with sha256 "
                           f"{digest}, expected {entry.sha256}: discarded")
                if on_mismatch is not None:
                    on_mismatch(FetcherMismatch(fetcher, package, entry.filename, entry.sha256, digest))
                return False
            os.replace(tmp, final)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _copy_local(self, src: Path, entry: FileEntry, label: str, final: Path) -> None:
        # Copied, not hard-linked: a later edit of the user's file must not change the cache.
        part = final.with_name(final.name + ".part")
        try:
            digest, size = _copy_hashing(src, part)
        except FileNotFoundError:
            part.unlink(missing_ok=True)
            raise InstallError(f"{label}: the locked file {src} does not exist",
                               hint="restore the file, or re-lock with `pypm lock --refresh`") from None
        except OSError as e:
            part.unlink(missing_ok=True)
            raise InstallError(f"{label}: cannot copy {src} into the cache: {e}") from None
        self._verify_part(part, entry, label, f"{src}", digest, size)
        os.replace(part, final)

    def _verify_part(self, part: Path, entry: FileEntry, label: str, origin: str,
                     digest: str | None = None, size: int | None = None) -> None:
        if digest is None or size is None:
            digest, size = self._hash_file(part)
        if entry.size is not None and size != entry.size:
            part.unlink(missing_ok=True)
            raise IntegrityError(f"{label}: size mismatch for {entry.filename} from {origin}:\n"
                                 f"    expected {entry.size} bytes, sha256 {entry.sha256}\n"
                                 f"    actual   {size} bytes, sha256 {digest}",
                                 hint="the source changed since the lock was made; if that is expected run "
                                 "`pypm lock --refresh`, otherwise do not trust this source")
        if digest != entry.sha256:
            part.unlink(missing_ok=True)
            raise IntegrityError(f"{label}: sha256 mismatch for {entry.filename} from {origin}:\n"
                                 f"    expected {entry.sha256}\n    actual   {digest}",
                                 hint="the source served different bytes than were locked; if the file was "
                                 "legitimately replaced run `pypm lock --refresh`, otherwise do not trust this source")

    # ---- HTTP download with resume
    def _download(self, entry: FileEntry, label: str, final: Path, progress: _Progress | None) -> None:
        # httpx's errors through pypm.http, which imports httpx without its CLI (never directly)
        from .http import RETRY_STATUS, DecodingError, HTTPStatusError, TransportError, describe_error, retry_after

        part = final.with_name(final.name + ".part")
        meta = final.with_name(final.name + ".part.json")
        attempts = 4
        fresh_retry_done = False
        last: BaseException | None = None
        task = progress.start(entry.filename, entry.size) if progress else None
        try:
            attempt = 0
            while attempt < attempts:
                attempt += 1
                if self._cancel.is_set():
                    raise _Cancelled()
                try:
                    resumed, digest, size = self._download_once(entry, part, meta, progress, task)
                except (TransportError, DecodingError) as e:
                    last = e  # the .part keeps what arrived; the next attempt (or run) resumes it
                    time.sleep(min(self.retry_delay * 2 ** attempt, 1.0))
                    continue
                except HTTPStatusError as e:
                    last = e
                    if e.response.status_code in RETRY_STATUS:
                        wait = retry_after(e)  # what the server asks for, else the back-off
                        time.sleep(min(self.retry_delay * 2 ** attempt, 1.0) if wait is None else wait)
                        continue
                    break
                try:
                    self._verify_part(part, entry, label, entry.url, digest, size)
                except IntegrityError:
                    meta.unlink(missing_ok=True)
                    if resumed and not fresh_retry_done:
                        # the prefix we resumed from may be stale: start once more from zero
                        fresh_retry_done = True
                        self._note(f"{label}: resumed download did not verify; downloading again from the start")
                        attempt -= 1
                        continue
                    raise
                meta.unlink(missing_ok=True)
                os.replace(part, final)
                return
        finally:
            if progress:
                progress.finish(task)
        assert last is not None
        from .credentials import hint_for
        from .simpleapi import _redact

        status = last.response.status_code if isinstance(last, HTTPStatusError) else 0
        raise IndexError_(f"cannot download {label} from {_redact(entry.url)}: {describe_error(last)}",
                          hint=hint_for(status, entry.url)
                          or "check the connection and run again: the partial download is kept and resumed")

    def _download_once(self, entry: FileEntry, part: Path, meta: Path, progress: _Progress | None,
                       task: Any) -> tuple[bool, str, int]:
        """One GET (ranged if a .part exists). Returns (resumed, sha256, size) of the full .part."""
        have = part.stat().st_size if part.exists() else 0
        if entry.size is not None and have >= entry.size:
            have = 0  # a .part as long as the file but not renamed did not verify last time: restart
        validator = None
        if have:
            try:
                saved = json.loads(meta.read_text())
            except (OSError, ValueError):
                saved = None
            validator = saved.get("validator") if isinstance(saved, dict) else None
            validator = validator if isinstance(validator, str) else None  # damaged: resume without If-Range
        # identity: Range offsets must count the file's bytes, not a compressed encoding of them
        headers = {"Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
            if validator:
                headers["If-Range"] = validator  # the server sends the whole file if it changed
        client = self._http()
        with client.stream("GET", entry.url, headers=headers) as r:
            if r.status_code == 416 and have:
                part.unlink(missing_ok=True)  # our prefix is longer than the file: start over
                meta.unlink(missing_ok=True)
                return self._download_once(entry, part, meta, progress, task)
            r.raise_for_status()
            h = hashlib.sha256()
            resumed = False
            if r.status_code == 206 and have and _range_start(r.headers.get("content-range")) == have:
                resumed = True
                self._note(f"resumed {entry.filename} at byte {have}")
                with open(part, "rb") as prefix:  # hash the prefix we already have
                    while chunk := prefix.read(CHUNK):
                        h.update(chunk)
                mode = "ab"
                size = have
            else:
                if r.status_code == 206:
                    raise _unexpected_range(entry, r)
                mode = "wb"
                size = 0
                v = r.headers.get("etag") or r.headers.get("last-modified")
                if v and not v.startswith("W/"):  # weak ETags are not valid for If-Range
                    meta.write_text(json.dumps({"validator": v, "url": entry.url}))
                else:
                    meta.unlink(missing_ok=True)
            if progress and size:
                progress.advance(task, size)
            held: list[bytes] = []  # received, not yet written (at most WRITE_BATCH bytes)
            n_held = 0
            with open(part, mode) as f:

                def flush() -> None:
                    nonlocal n_held
                    data = b"".join(held)
                    held.clear()
                    n_held = 0
                    f.write(data)
                    h.update(data)

                try:
                    for chunk in r.iter_raw():
                        if self._cancel.is_set():
                            raise _Cancelled()
                        held.append(chunk)
                        n_held += len(chunk)
                        size += len(chunk)
                        if progress:
                            progress.advance(task, len(chunk))
                        if n_held >= WRITE_BATCH:
                            flush()
                finally:
                    # Whatever ends the transfer (a dropped connection, Ctrl-C), every byte received
                    # is kept in the .part: the next attempt or run resumes from there.
                    if held:
                        flush()
        return resumed, h.hexdigest(), size

    # ---- fetch many
    def fetch_many(self, items: Iterable[tuple[str, FileEntry]], *, fetchers: Sequence[Fetcher] = (),
                   on_mismatch: Callable[[FetcherMismatch], None] | None = None, progress: bool | None = None,
                   max_workers: int | None = None,
                   on_fetched: Callable[[str, Path], None] | None = None) -> dict[str, Path]:
        """Fetch (package, FileEntry) pairs in parallel; returns {sha256: verified path}.

        The first failure cancels the rest (their .part files stay for the next run) and is raised.
        `progress`: None = bars only when stderr is a terminal. `on_fetched(sha256, path)` is
        called (on a fetching thread) as each wheel is verified, so the caller can start on it
        while others download; an exception from it fails that fetch.
        """
        todo: dict[str, tuple[str, FileEntry]] = {}
        out: dict[str, Path] = {}
        for package, entry in items:
            self._check_entry(entry, package)
            todo.setdefault(entry.sha256, (package, entry))
        need: list[tuple[str, FileEntry]] = []
        for sha, (package, entry) in todo.items():
            final = self.wheel_path(sha, entry.filename)
            if final.exists() and self._is_good(final, entry):
                _touch(final.parent)
                out[sha] = final
                if on_fetched is not None:
                    on_fetched(sha, final)
            else:
                need.append((package, entry))
        if not need:
            return out
        need = download_order(need)

        def fetch_one(e: FileEntry, package: str) -> Path:
            path = self.fetch(e, package=package, fetchers=fetchers, on_mismatch=on_mismatch, _progress=bar)
            if on_fetched is not None:
                on_fetched(e.sha256, path)
            return path

        show = sys.stderr.isatty() if progress is None else progress
        bar = _Progress(show, sum(e.size or 0 for _, e in need), len(need))
        self._cancel.clear()
        ex = ThreadPoolExecutor(max_workers=min(max_workers or self.max_workers, len(need)),
                                thread_name_prefix="pypm-fetch")
        try:
            futs = {ex.submit(fetch_one, e, p): e for p, e in need}
            done, _ = wait(futs, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                self._cancel.set()
                wait(futs)
                errs = [exc for f in futs if (exc := f.exception()) is not None and not isinstance(exc, _Cancelled)]
                # an integrity failure says more than a network one
                errs.sort(key=lambda e: 0 if isinstance(e, IntegrityError) else 1)
                raise errs[0]
            for f, e in futs.items():
                out[e.sha256] = f.result()
            return out
        except BaseException:
            self._cancel.set()  # Ctrl-C: stop the workers at their next chunk
            raise
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
            self._cancel.clear()  # the cache stays usable after a failed or interrupted batch
            bar.close()

    # ---- the unpacked store
    def unpack(self, entry: FileEntry, *, package: str = "", wheel: Path | None = None,
               fetchers: Sequence[Fetcher] = (), recheck: bool = False, workers: Any = None) -> Path:
        """The unpacked, RECORD-verified tree of `entry` (fetching the wheel first when needed).

        `recheck`: hash an existing store entry against the wheel's tree first and extract it
        again from the (sha256-verified) wheel when it differs. Sync asks for this when it repairs
        a damaged install: the damage may have been written through a hard link into the store.
        `workers`: a `pypm.extractor.Workers` to extract in (wheels below its size limit).
        """
        final = self.unpacked_path(entry.sha256)
        if final.is_dir() and (recheck or self._written_since_unpacked(final, entry.sha256)):
            with self._locked(entry.sha256):
                # A file written after this moment gets a later mtime, even from the coarse clock
                # file times come from (one tick, at most 10 ms, behind).
                checked_from = time.time_ns() - 20_000_000
                if final.is_dir() and not self._store_intact(final, entry.sha256):
                    self._note(f"the unpacked copy of {entry.filename} in the cache was modified "
                               f"(through a hard link from a venv?): extracting it again")
                    # A `.tmp-<sha>-` name: if this process dies before the rmtree, prune removes it.
                    aside = final.parent / f".tmp-{entry.sha256}-old-{os.getpid()}-{threading.get_ident()}"
                    os.rename(final, aside)  # venvs linked to the old files keep them; new installs do not
                    shutil.rmtree(aside, ignore_errors=True)
                elif final.is_dir():
                    # Every byte matched the tree: what was written since unpacking kept its bytes
                    # (a `touch`, an editor saving a file unchanged). Move the reference up to when
                    # this check began, or every later sync would hash the whole entry again (and
                    # the fresh-venv fast path, which only stats, would never take it).
                    from .wheeltree import tree_path

                    try:
                        os.utime(tree_path(self.root, entry.sha256), ns=(checked_from, checked_from))
                    except OSError:
                        pass  # a read-only cache: checked again next time
        if final.is_dir():
            _touch(final)
            return final
        if wheel is None:
            wheel = self.fetch(entry, package=package, fetchers=fetchers)
        with self._locked(entry.sha256):
            if final.is_dir():
                return final
            _make_fan(final.parent, always=True)  # the extraction directory: a block group of its own
            if os.path.lexists(final):  # not a directory: a damaged cache; the rename below would fail
                self._remove_stray(final)
            tmp = final.parent / f".tmp-{entry.sha256}-{os.getpid()}-{threading.get_ident()}"
            if tmp.exists():
                shutil.rmtree(tmp)
            try:
                from .extractor import IN_PROCESS_MIN_BYTES, make_entry

                job = (str(self.root), str(wheel), str(tmp), str(final), entry.filename, entry.sha256,
                       package or entry.filename)
                if workers is not None and workers.usable and (entry.size or 0) < IN_PROCESS_MIN_BYTES:
                    workers.make_entry(*job)  # the same work in a child process (pypm.extractor)
                elif workers is not None:
                    workers.extract_here(*job)  # here, within the sync's limit of extractions at once
                else:
                    make_entry(*job)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return final

    def _written_since_unpacked(self, final: Path, sha256: str) -> bool:
        """A file of the store entry has an mtime later than the wheel's tree file, which `unpack`
        writes after extracting: something wrote it since (an edit in a venv, through its hard
        link). One stat per file, no hashing, so every install from the store gets it; an edit
        that restored the old mtime is left to `pypm sync --reinstall`. No tree file: no verdict."""
        from .wheeltree import manifest_path, read_manifest, store_written_since

        mpath = manifest_path(final)
        return store_written_since(self.root, sha256, final, read_manifest(mpath) if mpath is not None else None)

    def _store_intact(self, final: Path, sha256: str) -> bool:
        """The store entry matches the wheel's Merkle tree (the stored one, else one computed from
        the cached wheel); False when there is nothing to compare with, so the wheel is fetched."""
        from .wheeltree import ensure_tree, store_differences

        tree = ensure_tree(self.root, sha256)
        return tree is not None and not store_differences(final, tree)

    def unpack_many(self, items: Iterable[tuple[str, FileEntry]], wheels: dict[str, Path] | None = None,
                    *, max_workers: int | None = None, recheck: Iterable[str] = ()) -> dict[str, Path]:
        """Unpack several wheels (already fetched: `wheels` maps sha256 -> path) in parallel;
        store entries whose sha256 is in `recheck` are verified first (see `unpack`)."""
        wheels = wheels or {}
        recheck = set(recheck)
        pairs = {e.sha256: (p, e) for p, e in items}
        if not pairs:
            return {}
        with ThreadPoolExecutor(max_workers=min(max_workers or 4, len(pairs))) as ex:
            futs = {sha: ex.submit(self.unpack, e, package=p, wheel=wheels.get(sha), recheck=sha in recheck)
                    for sha, (p, e) in pairs.items()}
            return {sha: f.result() for sha, f in futs.items()}

    # ---- maintenance
    def clean(self) -> None:
        """Remove everything (wheels, unpacked trees, interpreter and HTTP caches)."""
        if self.root.exists() and not self.root.is_dir():  # never delete a file PYPM_CACHE_DIR names by mistake
            raise UsageError(f"the cache directory {self.root} is not a directory",
                             hint="set PYPM_CACHE_DIR to the cache directory (or unset it for the default)")
        if self.root.exists():
            for child in self.root.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)

    def prune(self, *, max_age_days: float = 30.0, now: float | None = None) -> list[Path]:
        """Remove partial downloads, abandoned extractions, and entries unused for `max_age_days`.

        "Used" is the entry directory's mtime, touched whenever the entry is fetched or unpacked.
        An entry some process is working on (its lock is held) is skipped. Returns what was removed.
        """
        now = time.time() if now is None else now
        cutoff = now - max_age_days * 86400
        removed: list[Path] = []
        def old_files(d: Path) -> None:
            """Each file of `d` last written before the cutoff."""
            for f in sorted(d.iterdir()) if d.is_dir() and not d.is_symlink() else ():
                try:
                    if f.is_file() and not f.is_symlink() and f.stat().st_mtime < cutoff:
                        f.unlink()
                        removed.append(f)
                except OSError:
                    pass

        old_files(self.root / "syncs")  # sync recipes (pypm.syncrecipe): rewritten by every sync that changes a venv
        old_files(self.root / "edits")  # a killed add's record (pypm.editjournal): its project long gone or fixed
        old_files(self.root / "path-metadata")  # directories' metadata from their backends (pathdeps.TREE_METADATA_DIR)
        metas = self.root / "script-meta"  # scripts' blocks as read (pypm.script.META_DIR): read again when gone
        for fan in sorted(metas.iterdir()) if metas.is_dir() else ():
            old_files(fan)
        tools = self.root / "tools"  # `pypm x` environments (pypm.toolrun): touched by every run
        if tools.is_dir():
            for d in sorted(tools.iterdir()):
                try:
                    if d.is_dir() and not d.is_symlink() and d.stat().st_mtime < cutoff:
                        shutil.rmtree(d)
                        removed.append(d)
                except OSError:
                    pass
        for kind in ("wheels", "unpacked"):
            base = self.root / kind
            if not base.is_dir():
                continue
            for fan in sorted(base.iterdir()):
                if not fan.is_dir():
                    continue
                for d in sorted(fan.iterdir()):
                    stale_tmp = d.name.startswith(".tmp-")
                    sha = d.name[5:69] if stale_tmp else d.name  # .tmp-<sha>-<pid>-<thread>
                    if kind == "unpacked" and d.name.endswith(".install.json"):
                        if not (fan / d.name[:-len(".install.json")]).is_dir():
                            d.unlink(missing_ok=True)  # its entry is gone (pruned below on an earlier pass)
                        continue
                    if len(sha) != 64:
                        continue  # not ours
                    lock = self._lock(sha)  # held while an extraction or download is under way
                    if not lock.acquire(timeout=0):
                        continue
                    try:
                        if stale_tmp:
                            shutil.rmtree(d, ignore_errors=True)
                            removed.append(d)
                            continue
                        if kind == "wheels":
                            for f in d.iterdir():
                                if f.name.endswith((".part", ".part.json", ".tmp")):
                                    f.unlink(missing_ok=True)
                                    removed.append(f)
                        if d.stat().st_mtime < cutoff:
                            shutil.rmtree(d, ignore_errors=True)
                            removed.append(d)
                            if kind == "unpacked":  # the entry's install manifest goes with it
                                d.with_name(d.name + ".install.json").unlink(missing_ok=True)
                        elif kind == "wheels" and not any(d.iterdir()):
                            d.rmdir()
                    finally:
                        lock.release()
        return removed


class _EntryLock:
    """An exclusive flock(2) on a cache entry's lock file, the same lock filelock's UnixFileLock
    takes on the same file (so either excludes the other). By hand because a cold sync takes two
    per wheel (download, unpack): filelock 4's bookkeeping (fork tracking, per-path instances)
    measured ~95 us of GIL-held CPU per lock and release against ~6 us for this, 144 times on the
    web stack, while the downloads wait for the GIL. What filelock guards against is kept: no
    following a symlink planted at the lock's path (O_NOFOLLOW), no blocking on a lease
    (O_NONBLOCK), no truncating the file; a file system without flock (ENOSYS, some network file
    systems) gets filelock itself, with its fallback."""

    __slots__ = ("path", "fd", "_other")

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None
        self._other: Any = None  # the filelock.FileLock used instead where flock is missing

    def acquire(self, timeout: float) -> bool:
        """Take the lock within `timeout` seconds (0: one attempt); False if another holds it."""
        import errno
        import fcntl

        if self._other is not None:
            return self._acquire_other(timeout)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    self.fd, fd = fd, -1
                    return True
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        return False
                    time.sleep(0.05)  # filelock's poll interval
                except OSError as e:
                    if e.errno != errno.ENOSYS:
                        raise
                    from filelock import FileLock

                    self._other = FileLock(self.path)
                    return self._acquire_other(timeout)
        finally:
            if fd >= 0:
                os.close(fd)

    def _acquire_other(self, timeout: float) -> bool:
        from filelock import Timeout

        try:
            self._other.acquire(timeout=timeout)
            return True
        except Timeout:
            return False

    def release(self) -> None:
        if self._other is not None:
            self._other.release()
            return
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)  # closing the only descriptor releases the flock


def cannot_make(path: object, why: object) -> InstallError:
    return InstallError(f"cannot make the cache directory {path}: {why}",
                        hint="set PYPM_CACHE_DIR to a writable directory, or repair the cache with `pypm cache clean`")


def _make_fan(fan: Path, *, always: bool = False) -> None:
    """Make the store directory `<kind>/<fan>`, it and `<kind>` marked so that the directories
    made in them are spread over the disk's block groups (pypm.fsalloc: creating files next to
    recently deleted ones is slow). A fan directory that exists is marked only if `always`
    (unpacked/, where thousands of files are made): one ioctl per directory and process."""
    try:
        fan.parent.mkdir(parents=True, exist_ok=True)
        spread_subdirs(fan.parent)
        fan.mkdir()
    except FileExistsError as e:
        if not fan.is_dir():  # a file where the directory (or its parent) goes
            raise cannot_make(e.filename or fan, "a file is in the way") from None
        if not always:
            return
    except OSError as e:  # PYPM_CACHE_DIR names a file, no permission, ...
        raise cannot_make(e.filename or fan, e.strerror or e) from None
    spread_subdirs(fan)


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass  # a read-only cache still works; only prune's notion of "unused" suffers


def download_order(items: list[tuple[str, FileEntry]]) -> list[tuple[str, FileEntry]]:
    """The order fetch_many starts downloads in: the biggest, the smallest, the second biggest,
    the second smallest... The biggest start at once (each is a long download, and the unpacking
    after it) rather than queueing behind small ones. The small ones are not all left for the end
    either: with the connections all taken by big wheels first, the web stack's ~50 small wheels
    downloaded in the last ~200 ms, one request's latency each, and were unpacked and installed
    after every byte had arrived. Alternating, they land, unpack and install while the big ones
    still download. The web stack's cold sync, 10 rounds alternating with biggest-first, twice:
    medians 0.700 -> 0.661 s and 0.680 -> 0.654 s; the canary's 0.372 -> 0.371 s."""
    big = sorted(items, key=lambda pe: -(pe[1].size or 0))
    out = []
    i, j = 0, len(big) - 1
    while i <= j:
        out.append(big[i])
        if i != j:
            out.append(big[j])
        i, j = i + 1, j - 1
    return out


def _range_start(content_range: str | None) -> int | None:
    # "bytes 100-199/200"
    if not content_range or not content_range.startswith("bytes "):
        return None
    try:
        return int(content_range[6:].split("-", 1)[0])
    except ValueError:
        return None


def _unexpected_range(entry: FileEntry, r: Any) -> PypmError:
    return IndexError_(f"{entry.url} answered a range request with an unexpected Content-Range "
                       f"({r.headers.get('content-range')!r})", hint="run again; the partial download was discarded")


def _local_path(url: str, base_dir: Path) -> Path | None:
    """The local file a lock URL names (file:// URL or a path), or None for a network URL."""
    if url.startswith(("http://", "https://")):
        return None
    if url.startswith("file:"):
        return Path(unquote(urlparse(url).path))
    p = Path(url).expanduser()
    return p if p.is_absolute() else base_dir / p


# --------------------------------------------------------------------------- `pypm cache`

def cache_command(ctx: Any, args: Any) -> int:
    """`pypm cache dir|clean|prune [--days N]`."""
    cache = Cache()
    if args.action == "dir":
        print(cache.root)
        return ExitCode.OK
    if args.action == "clean":
        cache.clean()
        ctx.info(f"removed everything under {cache.root}")
        return ExitCode.OK
    days = 30.0 if getattr(args, "days", None) is None else float(args.days)
    if not 0 <= days < float("inf"):  # -1 or nan would silently empty the whole cache
        raise UsageError(f"--days {days:g}: must be a number of days, 0 or more",
                         hint="`pypm cache prune --days 0` removes every entry not in use; "
                              "`pypm cache clean` everything")
    removed = cache.prune(max_age_days=days)
    ctx.info(f"pruned {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} from {cache.root}")
    return ExitCode.OK
