"""The simple repository API's data, parsed: distribution file names, PEP 503 HTML and PEP 691 JSON
project pages, PEP 658 core metadata. Pure: no network, no files (the client is `pypm.index`)."""

from __future__ import annotations

import email.parser
import json
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterable

from packaging.utils import InvalidSdistFilename, canonicalize_name, parse_sdist_filename
from packaging.version import InvalidVersion, Version

from .errors import IndexError_, IntegrityError

__all__ = ["DistFile", "CoreMetadata", "JSON_TYPE", "parse_filename", "parse_core_metadata"]

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
    try:
        if filename.endswith((".tar.gz", ".zip")):
            sname, sversion = parse_sdist_filename(filename)
            return "sdist", str(sname), str(sversion)
    except (InvalidSdistFilename, InvalidVersion):
        return None
    return None  # .egg, .exe, .tar.bz2, .msi ...: legacy formats nobody installs any more


_DIGITS = frozenset("0123456789")


def parse_core_metadata(data: bytes, where: str) -> tuple[CoreMetadata, str, list[str]]:
    """(metadata, Metadata-Version, Dynamic fields) from METADATA/PKG-INFO bytes (headers only)."""
    text = data.decode("utf-8", errors="replace")
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


class _LinkParser(HTMLParser):
    """PEP 503 anchors with their data-* attributes, honouring <base href>."""

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


def _page_entries(body: bytes, content_type: str, page_url: str) -> list[dict[str, Any]]:
    """Raw file entries of a simple-API page (JSON or HTML), in a common shape."""
    out: list[dict[str, Any]] = []
    content_type = content_type.lower()
    if content_type.startswith(JSON_TYPE) or content_type.startswith("application/json"):
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
        for f in files:
            if not isinstance(f, dict) or "filename" not in f or "url" not in f:
                continue
            url, frag = _strip_fragment(_join(page_url, f["url"]))
            hashes = f.get("hashes") if isinstance(f.get("hashes"), dict) else {}
            meta = f.get("core-metadata", f.get("data-dist-info-metadata", f.get("dist-info-metadata")))
            yanked = f.get("yanked", False)
            out.append({
                "filename": f["filename"], "url": url,
                "sha256": (hashes.get("sha256") or _fragment_sha256(frag) or None),
                "size": f.get("size") if isinstance(f.get("size"), int) else None,
                "requires_python": f.get("requires-python") or None,
                "yanked": None if yanked is False or yanked is None else ("" if yanked is True else str(yanked)),
                "metadata": _core_metadata_attr(meta),
                "upload_time": f.get("upload-time"),
            })
        return out
    parser = _LinkParser()
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
        has_meta, meta_sha = e["metadata"]
        files.append(DistFile(
            name=name, version=version, filename=e["filename"], url=e["url"], kind=kind,
            sha256=e["sha256"], size=e["size"], requires_python=e["requires_python"],
            yanked=e["yanked"], metadata_sha256=meta_sha, has_metadata=has_meta and kind == "wheel",
            upload_time=e["upload_time"], source=source,
        ))
    return files
