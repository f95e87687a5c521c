"""The simple repository API's data, parsed: distribution file names, PEP 503 HTML and PEP 691 JSON
project pages, PEP 658 core metadata. Pure: no network, no files (the client is `pypm.index`)."""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .errors import IndexError_, IntegrityError

__all__ = ["DistFile", "CoreMetadata", "Releases", "JSON_TYPE", "json_page_files", "json_page_spans",
           "parse_filename",
           "parse_core_metadata"]

JSON_TYPE = "application/vnd.pypi.simple.v1+json"


@dataclass(frozen=True, slots=True)  # slots: a big lock holds ~100k of these (memory)
class DistFile:
    name: str  # canonical project name
    version: str  # as parsed from the filename (str(packaging Version))
    filename: str
    url: str  # absolute, without fragment; file:// for local files
    kind: str  # "wheel" | "sdist"
    sha256: str | None  # hex, from the index's hashes / URL fragment; None if unknown
    size: int | None
    requires_python: str | None
    yanked: str | None  # None if not yanked, else the reason ("" when none given)
    metadata_sha256: str | None  # PEP 658/714 core-metadata hash if the index offers the file
    has_metadata: bool  # PEP 658/714 metadata file available
    upload_time: str | None
    source: tuple[str, str]  # ("registry", index_url) | ("find-links", location)


@dataclass(frozen=True)
class CoreMetadata:
    name: str  # canonical
    version: str  # normalised
    requires_dist: tuple[str, ...]
    requires_python: str | None
    provides_extra: tuple[str, ...]


# Hand-parsed wheel names with memoised name and version normalisation, instead of
# packaging.utils.parse_wheel_filename per file: a 60-package lock reads ~64k file names, and
# building a Version and a tag set for each was a fifth of a warm lock. Same acceptance rules as
# packaging's (PEP 427 name escaping, 4 or 5 dashes, a build tag starting with a digit, a PEP 440
# version); the tags are not needed here (pypm.markers reads them from the filename).
_WHEEL_NAME = re.compile(r"^[\w\d._]*$", re.UNICODE)
_NAMES: dict[str, str | None] = {}  # wheel name part -> canonical name, None if invalid
_VERSIONS: dict[str, str | None] = {}  # version text -> normalised, None if invalid


def _wheel_name(part: str) -> str | None:
    try:
        return _NAMES[part]
    except KeyError:
        ok = "__" not in part and _WHEEL_NAME.match(part) is not None
        canon = _NAMES[part] = str(canonicalize_name(part)) if ok else None
        return canon


def _version(text: str) -> str | None:
    try:
        return _VERSIONS[text]
    except KeyError:
        try:
            norm: str | None = str(Version(text))
        except InvalidVersion:
            norm = None
        _VERSIONS[text] = norm
        return norm


def parse_filename(filename: str) -> tuple[str, str, str] | None:
    """(kind, canonical name, normalised version) of a wheel or sdist name; None for anything else."""
    if filename.endswith(".whl"):
        stem = filename[:-4]
        dashes = stem.count("-")
        if dashes != 4 and dashes != 5:
            return None
        parts = stem.split("-", dashes - 2)
        name = _wheel_name(parts[0])
        if name is None:
            return None
        if dashes == 5 and parts[2][:1] not in _DIGITS:
            return None  # a build tag starts with a digit
        version = _version(parts[1])
        return None if version is None else ("wheel", name, version)
    if filename.endswith(".tar.gz"):
        stem = filename[:-7]
    elif filename.endswith(".zip"):
        stem = filename[:-4]
    else:
        return None  # .egg, .exe, .tar.bz2, .msi ...: legacy formats nobody installs any more
    # As packaging's parse_sdist_filename (the version after the last dash; a name before it),
    # with the name and version normalisation memoised like the wheels'.
    name_part, dash, version_part = stem.rpartition("-")
    if not dash or not name_part:
        return None
    version = _version(version_part)
    return None if version is None else ("sdist", _sdist_name(name_part), version)


_SDIST_NAMES: dict[str, str] = {}


def _sdist_name(part: str) -> str:
    try:
        return _SDIST_NAMES[part]
    except KeyError:
        canon = _SDIST_NAMES[part] = str(canonicalize_name(part))
        return canon


_DIGITS = frozenset("0123456789")


def parse_core_metadata(data: bytes, where: str) -> tuple[CoreMetadata, str, list[str]]:
    """(metadata, Metadata-Version, Dynamic fields) from METADATA/PKG-INFO bytes (headers only)."""
    text = data.decode("utf-8", errors="replace")
    import email.parser  # here: ~5 ms that a lock from cached metadata never needs

    msg = email.parser.HeaderParser().parsestr(text, headersonly=True)
    name, version = msg.get("Name"), msg.get("Version")
    if not name or not version:
        raise IntegrityError(f"core metadata of {where} has no Name or Version",
                             hint="the file is broken; report it to the package's maintainers")
    try:
        norm_version = str(Version(str(version).strip()))
    except InvalidVersion:
        raise IntegrityError(f"core metadata of {where} has an invalid Version {version!r}") from None
    rp = msg.get("Requires-Python")
    meta = CoreMetadata(
        name=str(canonicalize_name(str(name).strip())),
        version=norm_version,
        requires_dist=tuple(str(r).strip() for r in msg.get_all("Requires-Dist") or ()),
        requires_python=(str(rp).strip() or None) if rp is not None else None,
        provides_extra=tuple(str(e).strip() for e in msg.get_all("Provides-Extra") or ()),
    )
    dynamic = [str(d).strip().lower() for d in msg.get_all("Dynamic") or ()]
    return meta, str(msg.get("Metadata-Version") or "1.0").strip(), dynamic


def _strip_fragment(url: str) -> tuple[str, str]:
    base, _, frag = url.partition("#")
    return base, frag


def _fragment_sha256(frag: str) -> str | None:
    for part in frag.split("&"):
        algo, _, value = part.partition("=")
        if algo == "sha256" and value:
            return value.lower()
    return None


def _redact(url: str) -> str:
    """The URL without a password, for messages."""
    p = urllib.parse.urlsplit(url)
    if p.password is None:
        return url
    netloc = f"{p.username}:****@{p.hostname}" + (f":{p.port}" if p.port else "")
    return urllib.parse.urlunsplit(p._replace(netloc=netloc))


def _is_local(url: str) -> bool:
    return url.startswith("file:") or "://" not in url


def _local_path(url: str) -> Path:
    if url.startswith("file:"):
        import urllib.request  # here: ~9 ms (http.client, email, ssl) for file: URLs alone

        return Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
    return Path(url)


def _join(base: str, url: str) -> str:
    """urljoin, with the common case answered without it: an absolute http(s) URL with no query,
    params or characters urlsplit would strip comes back unchanged (urljoin was ~1 s of CPU for
    the ~64k file URLs of a 60-package lock)."""
    if (url.startswith(("https://", "http://")) and "?" not in url and ";" not in url
            and url.isprintable() and " " not in url):
        return url
    return urllib.parse.urljoin(base, url)


def _core_metadata_attr(value: Any) -> tuple[bool, str | None]:
    """PEP 658/714's core-metadata value (JSON bool/dict, HTML 'true'/'sha256=...') -> (has, sha256)."""
    if value is None or value is False:
        return False, None
    if isinstance(value, dict):
        sha = value.get("sha256")
        return True, sha.lower() if isinstance(sha, str) else None
    if isinstance(value, str):
        algo, _, digest = value.partition("=")
        return True, digest.lower() if algo == "sha256" and digest else None
    return bool(value), None


def _link_parser() -> Any:
    """A parser of PEP 503 anchors with their data-* attributes, honouring <base href>.

    Made on first use: html.parser (~3 ms to import) is needed for HTML pages only, and the
    default index answers in JSON."""
    from html.parser import HTMLParser

    class _LinkParser(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.base: str | None = None
            self.links: list[dict[str, str | None]] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "base" and self.base is None:
                self.base = dict(attrs).get("href")
            elif tag == "a":
                d = dict(attrs)
                if d.get("href"):
                    self.links.append(d)

    return _LinkParser()


def _is_json(content_type: str) -> bool:
    content_type = content_type.lower()
    return content_type.startswith(JSON_TYPE) or content_type.startswith("application/json")


def _json_files(body: bytes, page_url: str) -> list[Any]:
    """The `files` list of a PEP 691 JSON page (its items unchecked)."""
    try:
        data = json.loads(body)
        files = data["files"]
        api_major = str(data.get("meta", {}).get("api-version", "1.0")).split(".")[0]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise IndexError_(f"{_redact(page_url)}: malformed PEP 691 JSON page ({e})",
                          hint="the index is broken or not a simple-API index; check --index-url") from None
    if api_major != "1":  # PEP 691: a client must refuse a major version it does not know
        raise IndexError_(f"{_redact(page_url)} speaks simple-API version {api_major}.x; pypm knows 1.x",
                          hint="upgrade pypm, or use an index that serves the version 1 API")
    return files if isinstance(files, list) else []  # a dict or string held no file entries either


_ABSENT = object()


def _json_fields(f: dict[str, Any]) -> tuple[Any, ...]:
    """What pypm reads of a JSON page's file item, as a tuple: kept for every file of a page until
    its release is looked at, so only these (not the item: provenance, a second copy of the
    metadata hash...) stay in memory -- ~25 MB less for the 64k files of a 60-package lock."""
    g = f.get
    hashes = g("hashes")
    meta = g("core-metadata", _ABSENT)
    if meta is _ABSENT:
        meta = g("data-dist-info-metadata", g("dist-info-metadata"))
    return (f["filename"], f["url"], hashes.get("sha256") if isinstance(hashes, dict) else None,
            g("requires-python"), g("yanked", False), meta, g("size"), g("upload-time"))


def _json_entry(fields: tuple[Any, ...], page_url: str) -> dict[str, Any]:
    """One file of a JSON page (its `_json_fields`) in the common entry shape."""
    filename, raw_url, sha256, requires_python, yanked, meta, size, upload_time = fields
    url, frag = _strip_fragment(_join(page_url, raw_url))
    return {
        "filename": filename, "url": url,
        "sha256": (sha256 or _fragment_sha256(frag) or None),
        "size": size if isinstance(size, int) else None,
        "requires_python": requires_python or None,
        "yanked": None if yanked is False or yanked is None else ("" if yanked is True else str(yanked)),
        "metadata": _core_metadata_attr(meta),
        "upload_time": upload_time,
    }


def _page_entries(body: bytes, content_type: str, page_url: str) -> list[dict[str, Any]]:
    """Raw file entries of a simple-API page (JSON or HTML), in a common shape."""
    out: list[dict[str, Any]] = []
    if _is_json(content_type):
        files = _json_files(body, page_url)
        for f in files:
            if not isinstance(f, dict) or "filename" not in f or "url" not in f:
                continue
            out.append(_json_entry(_json_fields(f), page_url))
        return out
    parser = _link_parser()
    parser.feed(body.decode("utf-8", errors="replace"))
    base = urllib.parse.urljoin(page_url, parser.base) if parser.base else page_url
    for a in parser.links:
        href = a["href"] or ""
        url, frag = _strip_fragment(urllib.parse.urljoin(base, href))
        filename = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
        key = "data-core-metadata" if "data-core-metadata" in a else "data-dist-info-metadata"
        meta = (a[key] or "true") if key in a else None  # a bare attribute means "true"
        out.append({
            "filename": filename, "url": url, "sha256": _fragment_sha256(frag), "size": None,
            "requires_python": a.get("data-requires-python") or None,
            "yanked": (a["data-yanked"] or "") if "data-yanked" in a else None,
            "metadata": _core_metadata_attr(meta),
            "upload_time": None,
        })
    return out


def _dist_file(e: dict[str, Any], kind: str, name: str, version: str, source: tuple[str, str]) -> DistFile:
    has_meta, meta_sha = e["metadata"]
    return DistFile(
        name=name, version=version, filename=e["filename"], url=e["url"], kind=kind,
        sha256=e["sha256"], size=e["size"], requires_python=e["requires_python"],
        yanked=e["yanked"], metadata_sha256=meta_sha, has_metadata=has_meta and kind == "wheel",
        upload_time=e["upload_time"], source=source,
    )


def _dist_files(entries: Iterable[dict[str, Any]], source: tuple[str, str],
                only: str | None) -> list[DistFile]:
    files = []
    for e in entries:
        parsed = parse_filename(e["filename"])
        if parsed is None:
            continue
        kind, name, version = parsed
        if only is not None and name != only:
            continue
        files.append(_dist_file(e, kind, name, version, source))
    return files


def json_page_files(files: list[Any], name: str) -> list[tuple[str, str, tuple[Any, ...]]]:
    """(kind, version, `_json_fields`) of each file of project `name` on a PEP 691 page, in page
    order; items that are not files of it are left out. Plain tuples, strings, numbers, bools and
    dicts of them: what the HTTP cache marshals beside the page (hand-rolled loop: the hot path of
    a lock's page reading)."""
    out = []
    for f in files:
        try:
            fn = f["filename"]
            url = f["url"]
        except (TypeError, KeyError, IndexError):  # not an object, or one without those keys
            continue
        if type(fn) is not str or type(url) is not str:
            continue
        parsed = parse_filename(fn)
        if parsed is None or parsed[1] != name:
            continue
        out.append((parsed[0], parsed[2], _json_fields(f)))
    return out


# A PEP 691 page as the default index serves it: `{"files": [` then one object per file, each
# starting with its filename, separated by ", ", then the rest (meta, name, versions).
_PAGE_PREFIX = b'{"files": ['
_FILE_START = re.compile(rb'\{"filename": "([^"\\]*)"')


class _SpanPage:
    """A page body whose files `json_page_spans` found; Releases keeps each file as its start in it."""

    __slots__ = ("body", "url")

    def __init__(self, body: bytes, url: str) -> None:
        self.body, self.url = body, url

    def fields(self, start: int) -> tuple[Any, ...]:
        """The `_json_fields` of the file object at `start`, decoded now; an IndexError_ when it is
        not a file object with the name it was grouped by."""
        body = self.body
        m = _FILE_START.match(body, start)
        # The object ends where the next begins (its `{"filename"` cannot occur inside a string,
        # whose quotes are escaped); the last is decoded with the rest of the page.
        end = body.find(b'}, {"filename": "', start) if m is not None else -1
        try:
            if m is None:
                raise ValueError("no file object starts there")
            if end >= 0:
                item = json.loads(body[start : end + 1])
            else:
                item = json.loads(_PAGE_PREFIX + body[start:])["files"][0]
            if (type(item) is not dict or item.get("filename") != m.group(1).decode()
                    or type(item.get("url")) is not str):
                raise ValueError("not the file object it was grouped as")
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise IndexError_(f"{_redact(self.url)}: malformed PEP 691 JSON page (the file entry at "
                              f"byte {start}: {e})",
                              hint="the index is broken or not a simple-API index; check --index-url") from None
        return _json_fields(item)


# The files of a project on a page laid out as the default index serves it, as columns (what
# `json_page_spans` returns and the HTTP cache marshals beside the page): file names, kinds,
# normalised versions, and where each file's object starts in the body.
SpanColumns = tuple[list[str], list[str], list[str], list[int]]


def json_page_spans(body: bytes, name: str) -> SpanColumns | None:
    """The files of project `name` on a PEP 691 page laid out as the default index serves it, in
    page order; None for any other layout (the caller then parses it whole with
    `json_page_files`, which decides as before).

    Why: json.loads of the pages of a 60-package lock (28 MB, 64k files) and making a tuple of
    every file were ~0.2 s of a cold lock's CPU, and a resolution looks at one or two releases of
    most projects. Here the files are found by their `{"filename": "` (C-speed regex), grouped by
    the name alone, and each object is decoded when its release is asked for. Sound for the
    layout it accepts: the body must start with the files array, every "filename" key must begin
    a file object and every object but the first must follow its predecessor's `}, ` (both
    counted), and the page's tail (last file, meta, name, versions) must parse, with the API
    version checked as for any page. A truncated or garbled page fails those checks and is parsed
    whole, which reports it; an object that is not the file it was grouped as is reported when
    its release is built (`_SpanPage.fields`)."""
    if not body.startswith(_PAGE_PREFIX):
        return None
    matches = list(_FILE_START.finditer(body))
    n = len(matches)
    if (not n or matches[0].start() != len(_PAGE_PREFIX) or n != body.count(b'"filename"')
            or n - 1 != body.count(b'}, {"filename": "')):
        return None
    last = matches[-1].start()
    if body.find(b"[", len(_PAGE_PREFIX), last) != -1:
        # A list inside a file object (a key clients do not know) could hold objects that start
        # with "filename" after a `}, `, counted above as files of the page: the whole parse
        # decides. (A "[" in a string only costs that page the whole parse.)
        return None
    try:
        tail = json.loads(_PAGE_PREFIX + body[last:])
        files, meta = tail["files"], tail.get("meta", {})
        api_major = str(meta.get("api-version", "1.0")).split(".")[0]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if type(files) is not list or len(files) != 1 or api_major != "1":
        return None  # (another API version: the whole parse raises the error that names it)
    fns: list[str] = []
    kinds: list[str] = []
    versions: list[str] = []
    starts: list[int] = []
    try:
        for m in matches:
            fn = m.group(1).decode()
            parsed = parse_filename(fn)
            if parsed is None or parsed[1] != name:
                continue
            fns.append(fn)
            kinds.append(parsed[0])
            versions.append(parsed[2])
            starts.append(m.start())
    except UnicodeDecodeError:
        return None
    return fns, kinds, versions, starts


def valid_span_columns(cols: Any, body_size: int) -> bool:
    """Whether `cols` (unmarshalled from the cache) has SpanColumns' shape for a body of this size."""
    if type(cols) is not tuple or len(cols) != 4 or not all(type(c) is list for c in cols):
        return False
    fns, kinds, versions, starts = cols
    n = len(fns)
    if not (len(kinds) == len(versions) == len(starts) == n):
        return False
    # (A start that is wrong but in range is caught when its file is decoded: _SpanPage.fields.)
    return n == 0 or (all(type(x) is str for x in fns) and all(k in ("wheel", "sdist") for k in kinds)
                      and all(type(v) is str for v in versions) and all(type(x) is int for x in starts)
                      and min(starts) >= 0 and max(starts) < body_size)


# What Releases keeps of a file until its release is asked for: its position among the project's
# files, its kind, what it was read from (a PEP 691 item's `_json_fields` or its start in the page
# body, an entry dict of an HTML page, or a DistFile of a find-links listing), the page's URL (JSON
# items; the `_SpanPage` for a start) and the source.
_RawFile = tuple[int, str, Any, Any, tuple[str, str]]


class Releases:
    """A project's files from all its sources, grouped by release (normalised version text); a
    release's DistFiles are built the first time it is asked for.

    Why lazily: the pages of a 60-package lock list ~64k files of every release ever made, and a
    resolution looks at one or two releases of most projects; making an entry and a DistFile of
    every file was ~0.4 s of a warm lock's CPU. Grouping costs one (memoised) file-name parse per
    file. A repeated file name keeps its first occurrence (the first source wins), as before.
    """

    def __init__(self, name: str) -> None:
        self.name = name  # canonical
        self._raw: dict[str, list[_RawFile]] = {}  # version text -> files, in the order served
        self._built: dict[str, list[DistFile]] = {}
        self._order: list[tuple[Version, list[str]]] | None = None
        self._seen: set[str] = set()
        self._count = 0
        self._lock = threading.Lock()  # two threads building one release would make two objects per file

    def add_json(self, files: list[Any], page_url: str, source: tuple[str, str]) -> None:
        """The `files` of a PEP 691 page."""
        self.add_files_of_page(json_page_files(files, self.name), page_url, source)

    def add_files_of_page(self, files: list[Any], page_url: str, source: tuple[str, str]) -> None:
        """A PEP 691 page's files as `json_page_files` gives them (perhaps from the HTTP cache)."""
        self._group(((fields[0], version, kind, fields, page_url) for kind, version, fields in files), source)

    def add_spans(self, cols: SpanColumns, body: bytes, page_url: str, source: tuple[str, str]) -> None:
        """A PEP 691 page's files as `json_page_spans` gives them (each decoded when built)."""
        page = _SpanPage(body, page_url)
        self._group(((fn, version, kind, start, page) for fn, kind, version, start in zip(*cols)), source)

    def _group(self, rows: Iterable[tuple[str, str, Any, Any, Any]], source: tuple[str, str]) -> None:
        """Files (name, version, kind, where, page) grouped by version in page order; a file name
        already seen (on an earlier page or index) is skipped."""
        raw, seen, pos = self._raw, self._seen, self._count
        for fn, version, kind, where, page in rows:
            if fn in seen:
                continue
            seen.add(fn)
            group = raw.get(version)
            if group is None:
                group = raw[version] = []
            group.append((pos, kind, where, page, source))
            pos += 1
        self._count = pos

    def add_entries(self, entries: Iterable[dict[str, Any]], source: tuple[str, str]) -> None:
        """Entries in the common shape (`_page_entries` of an HTML page)."""
        for e in entries:
            fn = e["filename"]
            parsed = parse_filename(fn) if fn not in self._seen else None
            if parsed is None or parsed[1] != self.name:
                continue
            self._seen.add(fn)
            self._raw.setdefault(parsed[2], []).append((self._count, parsed[0], e, "", source))
            self._count += 1

    def add_files(self, files: Iterable[DistFile]) -> None:
        """Files already built (a find-links listing's, or a test finder's)."""
        for f in files:
            if f.filename in self._seen:
                continue
            self._seen.add(f.filename)
            self._raw.setdefault(f.version, []).append((self._count, f.kind, f, "", f.source))
            self._count += 1

    def versions(self) -> list[str]:
        """Every release's version text, in the order first served."""
        return list(self._raw)

    def newest_first(self) -> list[tuple[Version, list[str]]]:
        """Every release's version, newest first, with its texts in the order served (texts that
        parse equal, as "1.0" and "1.0.0", are one version, keyed by the first); computed once."""
        hit = self._order
        if hit is None:
            with self._lock:
                if self._order is None:
                    groups: dict[Version, list[str]] = {}
                    for text in self._raw:
                        try:
                            v = Version(text)
                        except InvalidVersion:
                            continue
                        groups.setdefault(v, []).append(text)
                    self._order = sorted(groups.items(), key=lambda vt: vt[0], reverse=True)
                hit = self._order
        return hit

    def files(self, version: str) -> list[DistFile]:
        """The release's files, in the order served (built on the first call)."""
        hit = self._built.get(version)
        if hit is None:
            with self._lock:
                hit = self._built.get(version)
                if hit is None:
                    hit = self._built[version] = [self._build(version, r) for r in self._raw.get(version, ())]
        return hit

    def files_of(self, versions: Iterable[str]) -> list[DistFile]:
        """The files of several releases (texts of one version, as "1.0" and "1.0.0"), in the order served."""
        texts = list(versions)
        if len(texts) == 1:
            return list(self.files(texts[0]))
        pairs = [(r[0], f) for v in texts for r, f in zip(self._raw.get(v, ()), self.files(v))]
        pairs.sort(key=lambda pf: pf[0])
        return [f for _, f in pairs]

    def all_files(self) -> list[DistFile]:
        """Every file of every release, in the order served."""
        return self.files_of(self._raw) if self._raw else []

    def _build(self, version: str, r: _RawFile) -> DistFile:
        _, kind, item, page_url, source = r
        if isinstance(item, DistFile):
            return item
        if type(item) is int:  # a file's start in a page body (add_spans)
            page = page_url
            item, page_url = page.fields(item), page.url
        e = _json_entry(item, page_url) if page_url else item
        return _dist_file(e, kind, self.name, version, source)
