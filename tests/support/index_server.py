"""A real PEP 503/691/658/714 package index on 127.0.0.1, with fault injection for tests."""

from __future__ import annotations

import datetime as _dt
import email.utils
import hashlib
import html
import json
import re
import shutil
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

from .dists import sdist_metadata, wheel_metadata

__all__ = ["IndexServer", "Dist", "write_static_index", "scan_dists"]

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "text/html; charset=utf-8"
_DIST_SUFFIXES = (".whl", ".tar.gz", ".zip")


@dataclass
class Dist:
    """One file the index serves."""

    path: Path
    project: str  # canonical name
    filename: str
    sha256: str
    size: int
    requires_python: str | None
    metadata: bytes | None  # PEP 658 bytes (wheels only; None for sdists)
    upload_time: str  # ISO 8601, UTC, as PEP 700 spells it
    yanked: str | None = None  # None: not yanked; "": yanked without a reason

    @property
    def metadata_sha256(self) -> str | None:
        return hashlib.sha256(self.metadata).hexdigest() if self.metadata is not None else None


def _project_of(filename: str) -> str | None:
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[0])
        if filename.endswith((".tar.gz", ".zip")):
            return str(parse_sdist_filename(filename)[0])
    except Exception:
        return None
    return None


def _requires_python(meta: bytes | None) -> str | None:
    if meta is None:
        return None
    for line in meta.decode("utf-8", "replace").splitlines():
        if not line.strip():
            break  # end of headers
        if line.lower().startswith("requires-python:"):
            return line.split(":", 1)[1].strip()
    return None


def scan_dists(files: Iterable[Path | str]) -> list[Dist]:
    """Dist records for every wheel/sdist among `files` (directories are scanned, not recursed)."""
    paths: list[Path] = []
    for given in files:
        p = Path(given)
        if p.is_dir():
            paths += sorted(c for c in p.iterdir() if c.name.endswith(_DIST_SUFFIXES) and c.is_file())
        elif p.is_file():
            paths.append(p)
        else:
            raise FileNotFoundError(f"index file {p} does not exist")
    out: list[Dist] = []
    for p in paths:
        project = _project_of(p.name)
        if project is None:
            continue
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        size = p.stat().st_size
        if p.name.endswith(".whl"):
            meta: bytes | None = wheel_metadata(p)
            rp = _requires_python(meta)
        else:
            meta = None
            try:
                rp = _requires_python(sdist_metadata(p))
            except Exception:
                rp = None
        out.append(
            Dist(
                path=p,
                project=project,
                filename=p.name,
                sha256=h.hexdigest(),
                size=size,
                requires_python=rp,
                metadata=meta,
                upload_time=_iso(_dt.datetime.fromtimestamp(p.stat().st_mtime, _dt.timezone.utc)),
            )
        )
    return out


def _iso(t: str | _dt.datetime) -> str:
    """PEP 700's upload-time spelling; strings (e.g. "2024-01-02T03:04:05Z") pass through."""
    if isinstance(t, str):
        return t
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


@dataclass
class _Fault:
    kind: str  # "drop" | "corrupt" | "corrupt_metadata" | "fail" | "stall"
    target: str  # filename, or path prefix for "fail"
    times: int | None  # None: forever
    nbytes: int = 0
    status: int = 503
    seconds: float = 0.0
    retry_after: str | None = None


@dataclass
class _Options:
    yanked: dict[str, str] = field(default_factory=dict)
    requires_python: dict[str, str | None] = field(default_factory=dict)
    upload_time: dict[str, str] = field(default_factory=dict)
    pep658: bool = True
    json: bool = True
    relative_urls: bool = False
    auth: tuple[str, str] | None = None  # HTTP Basic (user, password) wanted for every GET/HEAD


class IndexServer:
    """A threaded index server: `with IndexServer([wheel, sdist_dir]) as idx: idx.url`.

    Per-file options (keyed by filename): `yanked` (reason, "" for none), `requires_python`
    (overrides the file's own), `upload_time` (datetime or ISO string; default: file mtime).

    Routes: `/simple/` (project list), `/simple/<name>/` (PEP 691 JSON when the Accept header
    asks for it and json=True, else PEP 503 HTML), `/files/<filename>` (Range, ETag,
    Last-Modified), `/files/<filename>.metadata` (PEP 658/714). Index pages carry an ETag and
    Last-Modified and answer 304 to If-None-Match / If-Modified-Since.
    `requests` logs (method, path, headers) of every request; faults can be set while running.
    """

    def __init__(
        self,
        files: Iterable[Path | str] = (),
        *,
        yanked: Mapping[str, str] | None = None,
        requires_python: Mapping[str, str | None] | None = None,
        upload_time: Mapping[str, str | _dt.datetime] | None = None,
        pep658: bool = True,
        json: bool = True,
        relative_urls: bool = False,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.options = _Options(
            yanked=dict(yanked or {}),
            requires_python=dict(requires_python or {}),
            upload_time={k: _iso(v) for k, v in (upload_time or {}).items()},
            pep658=pep658,
            json=json,
            relative_urls=relative_urls,
            auth=auth,
        )
        self._lock = threading.Lock()
        self._dists: dict[str, Dist] = {}
        self._faults: list[_Fault] = []
        self._mtime = time.time()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.request_times: list[float] = []  # time.monotonic() of each entry of `requests`
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # The upload endpoint (`POST /legacy/`, as twine and `pypm publish` speak it): off until
        # `accept_uploads(dir, token)`; each accepted file is served at once.
        self.upload_dir: Path | None = None
        self.upload_token: str | None = None
        self.uploads: list[dict[str, list[str]]] = []  # the form fields of each accepted upload
        self.oidc: tuple[str, str] | None = None  # accept_trusted_publishing's (audience, identity)
        self.add(*files)

    def accept_trusted_publishing(self, audience: str, identity: str) -> None:
        """Trusted publishing, as a public index offers it: `GET /_/oidc/audience` names `audience`,
        and `POST /_/oidc/mint-token` with `{"token": identity}` answers the upload token (any
        other identity: 422 with the index's kind of error list). Needs accept_uploads."""
        self.oidc = (audience, identity)

    def accept_uploads(self, directory: Path, token: str) -> str:
        """Take uploads at `/legacy/` with HTTP Basic `__token__:<token>`; the upload URL."""
        directory.mkdir(parents=True, exist_ok=True)
        self.upload_dir, self.upload_token = directory, token
        return f"{self.base}/legacy/"

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> IndexServer:
        server = self

        class Handler(_Handler):
            index = server

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        # A short poll interval: stop() waits up to one interval, and every test stops a server.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="pypm-test-index", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> IndexServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("IndexServer is not running")
        return int(self._httpd.server_address[1])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/simple/"

    def file_url(self, filename: str) -> str:
        return f"{self.base}/files/{urllib.parse.quote(filename)}"

    # -- content ---------------------------------------------------------------------------
    def _touch(self) -> None:
        # Strictly later by >= 1 s so If-Modified-Since (second resolution) sees the change.
        self._mtime = max(time.time(), self._mtime + 1)

    def add(self, *files: Path | str) -> list[Dist]:
        """Publish more files (paths or directories) while running."""
        new = scan_dists(files)
        with self._lock:
            for d in new:
                self._dists[d.filename] = d
            self._touch()
        return new

    def remove(self, filename: str) -> None:
        with self._lock:
            del self._dists[filename]
            self._touch()

    def set_yanked(self, filename: str, reason: str | None = "") -> None:
        """Yank (reason "" = no reason) or un-yank (None) a file while running."""
        with self._lock:
            if reason is None:
                self.options.yanked.pop(filename, None)
            else:
                self.options.yanked[filename] = reason
            self._touch()

    @property
    def dists(self) -> list[Dist]:
        with self._lock:
            return [self._effective(d) for d in self._dists.values()]

    def dist(self, filename: str) -> Dist:
        with self._lock:
            return self._effective(self._dists[filename])

    def _effective(self, d: Dist) -> Dist:
        o = self.options
        rp = o.requires_python[d.filename] if d.filename in o.requires_python else d.requires_python
        ut = o.upload_time.get(d.filename, d.upload_time)
        return Dist(**{**d.__dict__, "requires_python": rp, "yanked": o.yanked.get(d.filename), "upload_time": ut})

    def projects(self) -> dict[str, list[Dist]]:
        out: dict[str, list[Dist]] = {}
        for d in sorted(self.dists, key=lambda d: d.filename):
            out.setdefault(d.project, []).append(d)
        return dict(sorted(out.items()))

    # -- faults ----------------------------------------------------------------------------
    def drop_after(self, filename: str, nbytes: int, times: int | None = 1) -> None:
        """Send headers and `nbytes` of the body of /files/<filename>, then close the socket."""
        self._add_fault(_Fault("drop", filename, times, nbytes=nbytes))

    def stall(self, filename: str, nbytes: int, seconds: float, times: int | None = 1) -> None:
        """Send headers and `nbytes` of the body of /files/<filename>, wait `seconds`, then send
        the rest: a download caught in the middle, for the kill and Ctrl-C tests."""
        self._add_fault(_Fault("stall", filename, times, nbytes=nbytes, seconds=seconds))

    def corrupt(self, filename: str, times: int | None = None) -> None:
        """Serve altered bytes of the same size for the file, still advertising the original hash."""
        self._add_fault(_Fault("corrupt", filename, times))

    def corrupt_metadata(self, filename: str, times: int | None = None) -> None:
        """Serve altered `<filename>.metadata` bytes, still advertising the original hash."""
        self._add_fault(_Fault("corrupt_metadata", filename, times))

    def fail(self, path_prefix: str, status: int = 503, times: int | None = 1, retry_after: str | None = None) -> None:
        """Answer `status` to requests whose path starts with path_prefix (e.g. "/simple/"), with a
        Retry-After header when given."""
        self._add_fault(_Fault("fail", path_prefix, times, status=status, retry_after=retry_after))

    def reset_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, kind: str, match: str) -> _Fault | None:
        with self._lock:
            for f in self._faults:
                hit = match.startswith(f.target) if kind == "fail" else match == f.target
                if f.kind == kind and hit and (f.times is None or f.times > 0):
                    if f.times is not None:
                        f.times -= 1
                    return f
        return None

    # -- request log helpers ---------------------------------------------------------------
    def requests_for(self, path_prefix: str) -> list[tuple[str, str, dict[str, str]]]:
        return [r for r in list(self.requests) if r[1].startswith(path_prefix)]

    def clear_requests(self) -> None:
        self.requests.clear()

    # -- rendering -------------------------------------------------------------------------
    def _href(self, filename: str) -> str:
        if self.options.relative_urls:
            return f"../../files/{urllib.parse.quote(filename)}"
        return self.file_url(filename)

    def render_root(self, as_json: bool) -> bytes:
        names = list(self.projects())
        if as_json:
            body = {"meta": {"api-version": "1.1"}, "projects": [{"name": n} for n in names]}
            return json.dumps(body, indent=1, sort_keys=True).encode()
        links = "".join(f'    <a href="{n}/">{n}</a>\n' for n in names)
        return f"<!DOCTYPE html>\n<html>\n  <body>\n{links}  </body>\n</html>\n".encode()

    def render_project(self, project: str, dists: list[Dist], as_json: bool) -> bytes:
        pep658 = self.options.pep658
        if as_json:
            files = []
            for d in dists:
                entry: dict[str, object] = {
                    "filename": d.filename,
                    "url": self._href(d.filename),
                    "hashes": {"sha256": d.sha256},
                    "requires-python": d.requires_python,
                    "yanked": (d.yanked or True) if d.yanked is not None else False,
                    "size": d.size,
                    "upload-time": d.upload_time,
                }
                if pep658 and d.metadata is not None:
                    meta = {"sha256": d.metadata_sha256}
                    entry["core-metadata"] = meta
                    entry["dist-info-metadata"] = meta  # PEP 714: the old key too
                files.append(entry)
            versions = sorted({_version_of(d.filename) for d in dists})
            body = {"meta": {"api-version": "1.1"}, "name": project, "files": files, "versions": versions}
            return json.dumps(body, indent=1, sort_keys=True).encode()
        rows = []
        for d in dists:
            attrs = [f'href="{html.escape(self._href(d.filename))}#sha256={d.sha256}"']
            if d.requires_python:
                attrs.append(f'data-requires-python="{html.escape(d.requires_python)}"')
            if d.yanked is not None:
                attrs.append(f'data-yanked="{html.escape(d.yanked)}"')
            if pep658 and d.metadata is not None:
                attrs.append(f'data-core-metadata="sha256={d.metadata_sha256}"')
                attrs.append(f'data-dist-info-metadata="sha256={d.metadata_sha256}"')
            rows.append(f"    <a {' '.join(attrs)}>{html.escape(d.filename)}</a><br/>\n")
        return (
            '<!DOCTYPE html>\n<html>\n  <head><meta name="pypi:repository-version" content="1.1">'
            f"<title>Links for {project}</title></head>\n  <body>\n    <h1>Links for {project}</h1>\n"
            + "".join(rows)
            + "  </body>\n</html>\n"
        ).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A parallel client opens dozens of connections at once; the default backlog of 5 would
    # drop SYNs and stall it for a second per retry.
    request_queue_size = 128


def _version_of(filename: str) -> str:
    if filename.endswith(".whl"):
        return str(parse_wheel_filename(filename)[1])
    return str(parse_sdist_filename(filename)[1])


def _wants_json(accept: str) -> bool:
    """True when the Accept header prefers PEP 691 JSON over HTML (q-values honoured)."""
    best_json = best_html = -1.0
    for part in accept.split(","):
        bits = [b.strip() for b in part.split(";")]
        mtype, q = bits[0].lower(), 1.0
        for b in bits[1:]:
            if b.startswith("q="):
                try:
                    q = float(b[2:])
                except ValueError:
                    q = 0.0
        if mtype == JSON_TYPE:
            best_json = max(best_json, q)
        elif mtype in ("application/vnd.pypi.simple.v1+html", "text/html", "*/*"):
            best_html = max(best_html, q)
    return best_json > 0 and best_json >= best_html


def _altered(data: bytes) -> bytes:
    if not data:
        return b"x"
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]


class _Handler(BaseHTTPRequestHandler):
    index: IndexServer
    protocol_version = "HTTP/1.1"  # keep-alive, as real indexes speak

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet: tests read `IndexServer.requests` instead

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_POST(self) -> None:
        """The legacy upload API, as an index checks it: auth, the form's digests against the
        file, name and version against the file name, and no file replaced (400, as warehouse)."""
        import base64
        import email.parser
        import email.policy

        idx = self.index
        path = urllib.parse.urlsplit(self.path).path
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with idx._lock:  # the two lists in step
            idx.requests.append((self.command, path, {k: v for k, v in self.headers.items()}))
            idx.request_times.append(time.monotonic())
        if path == "/_/oidc/mint-token" and idx.oidc is not None:
            import json

            try:
                sent = json.loads(body).get("token")
            except (ValueError, AttributeError):
                sent = None
            if sent == idx.oidc[1]:
                self._send(200, json.dumps({"success": True, "token": idx.upload_token}).encode(), "application/json",
                           head=False)
            else:
                self._send(422, json.dumps({"message": "Token request failed", "errors": [
                    {"code": "invalid-publisher", "description": "valid token, but no corresponding publisher"}]}).encode(),
                    "application/json", head=False)
            return
        if path != "/legacy/" or idx.upload_dir is None:
            self._send(404, b"not found\n", "text/plain", head=False)
            return
        want = "Basic " + base64.b64encode(f"__token__:{idx.upload_token}".encode()).decode()
        if self.headers.get("Authorization") != want:
            self._send(403, b"Invalid or non-existent authentication information.\n", "text/plain", head=False)
            return
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + self.headers.get("Content-Type", "").encode() + b"\r\n\r\n" + body)
        fields: dict[str, list[str]] = {}
        content: bytes | None = None
        filename: str | None = None
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "content":
                payload = part.get_payload(decode=True)
                content, filename = (payload if isinstance(payload, bytes) else None), part.get_filename()
            else:
                fields.setdefault(str(name), []).append(part.get_content())
        def refuse(why: str) -> None:
            self.send_response(400, why)
            self.send_header("Content-Length", "0")
            self.end_headers()
        if content is None or not filename or "/" in filename:
            return refuse("Upload payload does not have a file.")
        if fields.get(":action") != ["file_upload"] or fields.get("protocol_version") != ["1"]:
            return refuse("Invalid action or protocol version.")
        if fields.get("sha256_digest") != [hashlib.sha256(content).hexdigest()]:
            return refuse("The digest supplied does not match a digest calculated from the uploaded file.")
        project = _project_of(filename)
        if project is None or [str(canonicalize_name(n)) for n in fields.get("name", [])] != [project]:
            return refuse("Start filename for project does not match the name in the form.")
        with idx._lock:
            exists = filename in idx._dists
        if exists:
            return refuse("File already exists. See the index's help for more information.")
        target = idx.upload_dir / filename
        target.write_bytes(content)
        idx.uploads.append(fields)
        idx.add(target)
        self._send(200, b"OK\n", "text/plain", head=False)

    def _dispatch(self, head: bool) -> None:
        idx = self.index
        path = urllib.parse.urlsplit(self.path).path
        with idx._lock:  # the two lists in step
            idx.requests.append((self.command, path, {k: v for k, v in self.headers.items()}))
            idx.request_times.append(time.monotonic())
        if idx.options.auth is not None:
            import base64

            want = "Basic " + base64.b64encode(":".join(idx.options.auth).encode()).decode()
            if self.headers.get("Authorization") != want:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="test index"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        if path == "/_/oidc/audience" and idx.oidc is not None:
            import json

            self._send(200, json.dumps({"audience": idx.oidc[0]}).encode(), "application/json", head=head)
            return
        fault = idx._take_fault("fail", path)
        if fault is not None:
            if fault.retry_after is not None:
                body = b"" if head else b"injected failure\n"
                self.send_response(fault.status)
                self.send_header("Retry-After", fault.retry_after)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self._send(fault.status, b"injected failure\n", "text/plain", head=head)
            return
        try:
            if path in ("/simple", "/simple/"):
                self._index_page(idx.render_root, None, head)
            elif m := re.fullmatch(r"/simple/([^/]+)/?", path):
                self._project(urllib.parse.unquote(m.group(1)), head)
            elif m := re.fullmatch(r"/files/([^/]+)", path):
                self._file(urllib.parse.unquote(m.group(1)), head)
            else:
                self._send(404, b"not found\n", "text/plain", head=head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _project(self, name: str, head: bool) -> None:
        canon = canonicalize_name(name)
        if canon != name:
            # PEP 503: redirect non-normalized names to the canonical URL.
            self.send_response(301)
            self.send_header("Location", f"/simple/{canon}/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        dists = self.index.projects().get(canon)
        if dists is None:
            self._send(404, f"no project {name}\n".encode(), "text/plain", head=head)
            return
        self._index_page(lambda as_json: self.index.render_project(canon, dists, as_json), canon, head)

    def _index_page(self, render: Callable[[bool], bytes], project: str | None, head: bool) -> None:
        as_json = self.index.options.json and _wants_json(self.headers.get("Accept", ""))
        body = render(as_json)
        ctype = JSON_TYPE if as_json else HTML_TYPE
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        last_modified = int(self.index._mtime)
        inm = self.headers.get("If-None-Match")
        ims = self.headers.get("If-Modified-Since")
        not_modified = False
        if inm is not None:  # RFC 9110: If-None-Match wins over If-Modified-Since
            not_modified = etag in [t.strip() for t in inm.split(",")] or inm.strip() == "*"
        elif ims is not None:
            try:
                since = email.utils.parsedate_to_datetime(ims).timestamp()
                not_modified = last_modified <= since
            except (TypeError, ValueError):
                pass
        headers = {"ETag": etag, "Last-Modified": _http_date(last_modified), "Vary": "Accept", "Cache-Control": "max-age=0"}
        if not_modified:
            self.send_response(304)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            return
        self._send(200, body, ctype, head=head, headers=headers)

    def _file(self, filename: str, head: bool) -> None:
        idx = self.index
        is_meta = filename.endswith(".metadata")
        base = filename[: -len(".metadata")] if is_meta else filename
        try:
            d = idx.dist(base)
        except KeyError:
            self._send(404, f"no file {filename}\n".encode(), "text/plain", head=head)
            return
        if is_meta:
            if not idx.options.pep658 or d.metadata is None:
                self._send(404, b"no metadata file\n", "text/plain", head=head)
                return
            data = d.metadata
            if idx._take_fault("corrupt_metadata", base):
                data = _altered(data)
            self._send(200, data, "text/plain; charset=utf-8", head=head)
            return

        # Streamed from disk in chunks: a test may serve a file of hundreds of MB.
        size = d.path.stat().st_size
        corrupt = idx._take_fault("corrupt", base) is not None
        etag = f'"{d.sha256[:32]}"'
        headers = {
            "ETag": etag,
            "Last-Modified": _http_date(d.path.stat().st_mtime),
            "Accept-Ranges": "bytes",
        }
        ctype = "application/octet-stream"
        status, start, end = 200, 0, size
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if rng and (if_range is None or if_range.strip() in (etag, headers["Last-Modified"])):
            m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", rng)
            if not m or (m.group(1) == "" and m.group(2) == ""):
                self._send(416, b"bad range\n", "text/plain", head=head, headers={"Content-Range": f"bytes */{size}"})
                return
            if m.group(1) == "":  # suffix range: the last N bytes
                start, end = max(0, size - int(m.group(2))), size
            else:
                start = int(m.group(1))
                end = min(size, int(m.group(2)) + 1) if m.group(2) else size
            if start >= size or start >= end:
                self._send(416, b"range not satisfiable\n", "text/plain", head=head, headers={"Content-Range": f"bytes */{size}"})
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        drop = None if head else idx._take_fault("drop", base)
        stall = None if head else idx._take_fault("stall", base)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if head:
            return
        limit = end if drop is None else min(end, start + drop.nbytes)
        flip = size // 2 if corrupt else -1  # the one byte `corrupt` alters (same size, new hash)
        with open(d.path, "rb") as f:
            f.seek(start)
            pos = start
            while pos < limit:
                chunk = f.read(min(1 << 20, limit - pos))
                if not chunk:
                    break
                if pos <= flip < pos + len(chunk):
                    i = flip - pos
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
                if stall is not None and pos < start + stall.nbytes <= pos + len(chunk):
                    cut = start + stall.nbytes - pos
                    self.wfile.write(chunk[:cut])
                    self.wfile.flush()
                    time.sleep(stall.seconds)
                    chunk = chunk[cut:]
                self.wfile.write(chunk)
                pos += len(chunk)
        if drop is not None:
            self.wfile.flush()
            # Close abruptly: the client sees a short body on a dead connection.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _send(
        self, status: int, body: bytes, ctype: str, *, head: bool, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else None)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


def write_static_index(
    dists: Iterable[Path | str],
    dest_dir: Path | str,
    *,
    yanked: Mapping[str, str] | None = None,
    pep658: bool = True,
) -> Path:
    """Write a PEP 503 tree under dest_dir (`simple/`, `files/`) for use as a `file://` index.

    Returns the `simple/` directory: `dest.as_uri() + "/"` is the index URL. Links are relative.
    """
    dest = Path(dest_dir)
    files_dir = dest / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    server = IndexServer(dists, yanked=yanked, pep658=pep658, relative_urls=True)
    simple = dest / "simple"
    simple.mkdir(parents=True, exist_ok=True)
    (simple / "index.html").write_bytes(server.render_root(as_json=False))
    for project, ds in server.projects().items():
        pdir = simple / project
        pdir.mkdir(exist_ok=True)
        (pdir / "index.html").write_bytes(server.render_project(project, ds, as_json=False))
        for d in ds:
            target = files_dir / d.filename
            if not target.exists():
                shutil.copy2(d.path, target)
            if pep658 and d.metadata is not None:
                (files_dir / (d.filename + ".metadata")).write_bytes(d.metadata)
    return simple
