"""`pypm publish`: upload wheels and sdists to an index, as `uv publish`, `poetry publish`, `pdm publish`.

The upload protocol is the one every index accepts from twine: one `multipart/form-data` POST
per file to the index's upload URL, with `:action = file_upload`, `protocol_version = 1`, the
file as `content`, its sha256 (and blake2b-256, md5) digests, and the core metadata fields read
from the file itself (a wheel's `METADATA`, an sdist's `PKG-INFO`), multi-valued fields repeated.
HTTP Basic auth: a token is sent as the password of the user `__token__`.

Everything is checked before the first byte is sent: each file's name parses as a wheel or an
sdist, its metadata is readable and names the same project and version as its file name. So a
bad `dist/` uploads nothing, rather than half a release.

With `--check-url INDEX`, files the index already has are found first (a fresh look at the
project's page, never the cache): the same file (same name, same sha256) is skipped, so a
publish that was interrupted can simply be run again; a file of the same name with other bytes
is an error before anything is uploaded (an index never lets a file be replaced).

There is no default upload URL (pypm names no registry): it comes from `--publish-url`,
`PYPM_PUBLISH_URL` or `[tool.pypm] publish-url`. Credentials come from `--token`/
`PYPM_PUBLISH_TOKEN` or `--username`/`--password` (`PYPM_PUBLISH_USERNAME`/`_PASSWORD`), or as
an index's are found (pypm.credentials): the URL itself, its user with the keyring's password,
or ~/.netrc; or, in a GitHub Actions or GitLab CI job with none of those, from trusted publishing
(`_trusted_token`); they are never printed, and never sent over plain HTTP to a host other than this
machine.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .errors import ExitCode, IndexError_, IntegrityError, ProjectError, UsageError
from .pathdeps import ARCHIVES
from .simpleapi import _redact

if TYPE_CHECKING:  # pragma: no cover
    import argparse

__all__ = ["publish_command", "Upload", "read_upload", "form_fields"]

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class Upload:
    """One file to upload, checked: its name, version, digests and metadata fields."""

    path: Path
    name: str  # canonical
    version: str
    filetype: str  # "bdist_wheel" | "sdist"
    pyversion: str  # the wheel's python tag(s), "source" for an sdist
    sha256: str
    blake2_256: str
    md5: str
    metadata: dict[str, Any]  # packaging.metadata's raw fields


def _metadata_bytes(path: Path) -> bytes:
    """A wheel's `*.dist-info/METADATA` or an sdist's top-level `PKG-INFO`."""
    import tarfile
    import zipfile

    name = path.name
    try:
        if name.endswith(".whl"):
            with zipfile.ZipFile(path) as z:
                found = [n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
                if len(found) != 1:
                    raise ProjectError(f"{path}: a wheel holds one .dist-info/METADATA; this one has {len(found)}",
                                       hint="build the wheel again")
                return z.read(found[0])
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as z:
                found = [n for n in z.namelist() if n.count("/") == 1 and n.endswith("/PKG-INFO")]
                if found:
                    return z.read(found[0])
        else:
            with tarfile.open(path, "r:*") as t:
                for m in t:
                    if m.isfile() and m.name.count("/") == 1 and m.name.endswith("/PKG-INFO"):
                        f = t.extractfile(m)
                        if f is not None:
                            return f.read()
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise ProjectError(f"{path}: cannot be read: {e}", hint="build it again") from None
    raise ProjectError(f"{path}: an sdist holds a top-level PKG-INFO; this one has none",
                       hint="build it with a PEP 517 backend (`pypm build`)")


def read_upload(path: Path) -> Upload:
    """`path` checked and described for the upload; a ProjectError says what is wrong with it."""
    from packaging.metadata import parse_email
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    from .simpleapi import parse_filename

    parsed = parse_filename(path.name)
    if parsed is None:
        raise ProjectError(f"{path}: not a wheel or sdist file name",
                           hint="upload the files a build wrote (`pypm build` puts them in dist/)")
    kind, fname, fversion = parsed
    # the wheel's python tag as its name gives it (`py3`, `py2.py3`), "source" for an sdist
    filetype, pyversion = ("bdist_wheel", path.name[:-4].split("-")[-3]) if kind == "wheel" else ("sdist", "source")
    raw, unparsed = parse_email(_metadata_bytes(path))
    name, version = raw.get("name"), raw.get("version")
    if not name or not version:
        raise ProjectError(f"{path}: its metadata has no {'Name' if not name else 'Version'}",
                           hint="build it again with a current backend")
    try:
        same = canonicalize_name(name) == fname and Version(version) == Version(fversion)
    except InvalidVersion:
        same = False
    if not same:
        raise ProjectError(f"{path}: its metadata is for {name} {version}, its file name for {fname} {fversion}",
                           hint="the file was renamed or built wrongly; build it again")
    sha, blake, md5 = hashlib.sha256(), hashlib.blake2b(digest_size=32), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            blake.update(chunk)
            md5.update(chunk)
    return Upload(path=path, name=fname, version=fversion, filetype=filetype, pyversion=pyversion,
                  sha256=sha.hexdigest(), blake2_256=blake.hexdigest(), md5=md5.hexdigest(), metadata=dict(raw))


# packaging.metadata's raw keys -> the upload form's field names, as twine and the index name them.
_SINGLE = ("metadata_version", "name", "version", "summary", "description", "description_content_type",
           "home_page", "download_url", "author", "author_email", "maintainer", "maintainer_email", "license",
           "license_expression", "requires_python")
_MULTI = {"classifiers": "classifiers", "platforms": "platform", "supported_platforms": "supported_platform",
          "requires_dist": "requires_dist", "provides_dist": "provides_dist", "obsoletes_dist": "obsoletes_dist",
          "requires_external": "requires_external", "provides_extra": "provides_extra", "dynamic": "dynamic",
          "license_files": "license_file"}


def form_fields(u: Upload) -> list[tuple[str, str]]:
    """The form of one upload (without the file): (field, value) pairs, multi-valued ones repeated."""
    m = u.metadata
    out: list[tuple[str, str]] = [(":action", "file_upload"), ("protocol_version", "1"), ("filetype", u.filetype),
                                  ("pyversion", u.pyversion), ("sha256_digest", u.sha256),
                                  ("blake2_256_digest", u.blake2_256), ("md5_digest", u.md5)]
    for key in _SINGLE:
        value = m.get(key)
        if value:
            out.append((key, str(value)))
    if m.get("keywords"):
        out.append(("keywords", ", ".join(m["keywords"])))
    for key, field in _MULTI.items():
        out += [(field, str(v)) for v in m.get(key) or ()]
    out += [("project_urls", f"{label}, {url}") for label, url in (m.get("project_urls") or {}).items()]
    return out


# --------------------------------------------------------------------------- the command

def _files(ctx: Any, given: list[str]) -> list[Path]:
    if given:
        paths = [Path(os.path.expanduser(g)) if os.path.isabs(os.path.expanduser(g))
                 else Path(ctx.directory) / g for g in given]
        for p in paths:
            if not p.is_file():
                raise UsageError(f"{p} is not a file", hint="give wheel and sdist files, or none to upload dist/*")
            if not p.name.endswith(ARCHIVES):
                raise UsageError(f"{p} is not a wheel or an sdist (.whl, .tar.gz, .zip)")
        return paths
    from .project import find_project_root

    dist = find_project_root(Path(ctx.directory)) / "dist"
    found = sorted(p for p in dist.glob("*") if p.is_file() and p.name.endswith(ARCHIVES)) if dist.is_dir() else []
    if not found:
        raise UsageError(f"no wheels or sdists in {dist}", hint="build them first with `pypm build`, or name the files")
    return found


def _setting(flag: str | None, env: str, project_value: str | None = None) -> str | None:
    return flag or os.environ.get(env) or project_value or None


def _publish_url(ctx: Any, args: argparse.Namespace) -> str:
    configured = None
    try:
        configured = ctx.project().tool.publish_url
    except ProjectError:
        pass  # publishing files needs no project; a broken one is reported by the commands that use it
    url = _setting(args.publish_url, "PYPM_PUBLISH_URL", configured)
    if not url:
        raise UsageError("no upload URL: pypm has no default index to publish to",
                         hint="give --publish-url URL (your index's upload endpoint), or set PYPM_PUBLISH_URL or "
                              "[tool.pypm] publish-url")
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UsageError(f"--publish-url {_redact(url)} is not an http(s) URL")
    return url


# Trusted publishing (the index's OpenID Connect token exchange, as `uv publish --trusted-publishing`
# and twine speak it): a CI job's identity token for the index's audience, which the index trades
# for a short-lived upload token. GitHub Actions gives a job with `permissions: id-token: write`
# two variables with which it asks for that token; GitLab CI puts the token a job's `id_tokens:`
# asks for in the variable that entry names, which for the index is <AUDIENCE>_ID_TOKEN (the
# audience upper-cased, each character but a letter, digit or underscore made `_`: PYPI_ID_TOKEN),
# the name PyPA's tools look for. TRUSTED stands for "do that exchange".
_GH_URL, _GH_TOKEN = "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
TRUSTED = ("__token__", "")
_TRUSTED_MODES = ("auto", "always", "never")
_HOW = ("in GitHub Actions, give the job `permissions: id-token: write`; in GitLab CI, give it "
        "`id_tokens: PYPI_ID_TOKEN: aud: pypi` (the index's audience)")


def _ci() -> str | None:
    """The CI service whose job this is and that can give it an identity token: "github" (the
    job may ask for one), "gitlab" (a GitLab CI job: its token, if it has one, is in a variable);
    None elsewhere."""
    if os.environ.get(_GH_URL) and os.environ.get(_GH_TOKEN):
        return "github"
    if os.environ.get("GITLAB_CI") == "true":
        return "gitlab"
    return None


def _gitlab_variable(audience: str) -> str:
    import re

    return re.sub(r"[^A-Z0-9_]", "_", audience.upper()) + "_ID_TOKEN"


def _credentials(args: argparse.Namespace, url: str) -> tuple[str, str] | None:
    """(user, password) to upload with, or TRUSTED: a token to ask the index for (_trusted_token)."""
    import urllib.parse

    token = _setting(args.token, "PYPM_PUBLISH_TOKEN")
    user = _setting(args.username, "PYPM_PUBLISH_USERNAME")
    password = _setting(args.password, "PYPM_PUBLISH_PASSWORD")
    mode = _setting(getattr(args, "trusted_publishing", None), "PYPM_TRUSTED_PUBLISHING") or "auto"
    if mode not in _TRUSTED_MODES:
        raise UsageError(f"PYPM_TRUSTED_PUBLISHING={mode!r} is not one of {', '.join(_TRUSTED_MODES)}")
    if token and (user or password):
        raise UsageError("give either a token or a username and password, not both",
                         hint="a token is sent as the password of the user __token__")
    if mode == "always" and (token or user or password):
        raise UsageError("--trusted-publishing always takes its token from the index: give no token or password")
    ci = _ci()
    parts = urllib.parse.urlsplit(url)
    auth: tuple[str, str] | None
    if token:
        auth = ("__token__", token)
    elif user or password:
        if not (user and password):
            raise UsageError("--username and --password go together (or PYPM_PUBLISH_USERNAME/_PASSWORD)")
        auth = (user, password)
    elif mode == "always":
        if ci is None:
            raise UsageError("--trusted-publishing always: this job cannot ask for an identity token "
                             f"({_GH_URL} and {_GH_TOKEN} are not set, nor GITLAB_CI)", hint=_HOW)
        auth = TRUSTED
    else:
        from .credentials import for_url, strip

        # As an index's requests find theirs (pypm.credentials): the URL's own user:password, its
        # user with the keyring's password (PYPM_KEYRING_PROVIDER), or ~/.netrc's entry for the host.
        auth = for_url(strip(url))
        if auth is None and mode == "auto" and ci is not None:
            auth = TRUSTED
        if auth is None:
            raise UsageError("no credentials to publish with",
                             hint=f"give --token (or PYPM_PUBLISH_TOKEN), or --username and --password, or put "
                                  f"them in ~/.netrc (`machine {parts.hostname} login __token__ password TOKEN`); "
                                  f"a CI job publishes without any (trusted publishing): {_HOW}")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        # A token sent in clear text is a token given away to anyone on the path.
        raise UsageError(f"{_redact(url)} is plain HTTP: pypm does not send credentials unencrypted",
                         hint="use the index's https:// upload URL")
    return auth


def _trusted_token(client: Any, url: str) -> str:
    """An upload token for `url`'s index, traded for this CI job's identity (see TRUSTED): the
    index's audience, an identity token for it from GitHub Actions (or GitLab CI's variable),
    then the index's token for that. Each step's failure says which step and what was answered."""
    import urllib.parse

    from .http import TransportError, describe_error

    parts = urllib.parse.urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    ci = _ci()
    job = ("the job has `permissions: id-token: write`" if ci == "github" else
           "the job's `id_tokens:` entry names the index's audience")

    def ask(what: str, method: str, target: str, **kw: Any) -> dict[str, Any]:
        try:
            r = client.request(method, target, follow_redirects=False, **kw)
        except TransportError as e:
            raise IndexError_(f"trusted publishing: {what} failed: {describe_error(e)}") from None
        try:
            data = r.json()
        except ValueError:
            data = None
        if r.status_code != 200 or not isinstance(data, dict):
            detail = ""
            if isinstance(data, dict):
                errors = data.get("errors") or []
                detail = "; ".join(str(e.get("description") or e.get("code") or e) if isinstance(e, dict) else str(e)
                                   for e in errors) or str(data.get("message") or "")
            raise IndexError_(f"trusted publishing: {what} failed: HTTP {r.status_code}" + (f": {detail}" if detail else ""),
                              hint="check that the index has this repository and workflow as a trusted publisher "
                                   f"of the project, and that {job}")
        return data

    audience = ask(f"asking {origin} for its audience", "GET", f"{origin}/_/oidc/audience").get("audience")
    if not isinstance(audience, str) or not audience:
        raise IndexError_(f"trusted publishing: {origin} named no audience", hint="the index may not offer it")
    if ci == "gitlab":
        variable = _gitlab_variable(audience)
        identity = os.environ.get(variable, "")
        if not identity:
            raise UsageError(f"trusted publishing: this GitLab CI job has no identity token for {origin} "
                             f"({variable} is not set)",
                             hint=f"give the job `id_tokens: {variable}: aud: {audience}` in .gitlab-ci.yml")
    else:
        request_url = os.environ[_GH_URL]
        sep = "&" if urllib.parse.urlsplit(request_url).query else "?"
        given = ask("asking GitHub Actions for an identity token", "GET",
                    f"{request_url}{sep}audience={urllib.parse.quote(audience, safe='')}",
                    headers={"Authorization": f"bearer {os.environ[_GH_TOKEN]}"}).get("value")
        if not isinstance(given, str) or not given:
            raise IndexError_("trusted publishing: GitHub Actions gave no identity token")
        identity = given
    token = ask(f"trading the identity token at {origin}", "POST", f"{origin}/_/oidc/mint-token",
                json={"token": identity}).get("token")
    if not isinstance(token, str) or not token:
        raise IndexError_(f"trusted publishing: {origin} gave no upload token")
    return token


def _on_index(check_url: str, u: Upload, ctx: Any) -> str | None:
    """The sha256 the index `check_url` lists for u's file name (fresh), or None when it has none."""
    from .config import cache_dir
    from .index import IndexClient, PackageNotFound

    client = IndexClient([check_url], [], cache_dir=cache_dir(), refresh=True, warn=lambda m: ctx.info(f"warning: {m}"))
    with client:
        try:
            files = client.project_files(u.name)
        except PackageNotFound:
            return None
        for f in files:
            if f.filename == u.path.name:
                return client.file_hash(f)
    return None


def publish_command(ctx: Any, args: argparse.Namespace) -> int:
    """`pypm publish [FILES]`."""
    import time

    paths = _files(ctx, list(args.files or []))
    # All checked before anything is sent; sdists first, as twine does (the first file of a new
    # release is the one an index takes the release's metadata from).
    uploads = sorted((read_upload(p) for p in paths), key=lambda u: (u.filetype != "sdist", u.path.name))
    url = _publish_url(ctx, args)
    auth = _credentials(args, url)
    check_url = args.check_url or os.environ.get("PYPM_PUBLISH_CHECK_URL")
    todo: list[Upload] = []
    for u in uploads:
        if check_url:
            have = _on_index(check_url, u, ctx)
            if have == u.sha256:
                ctx.info(f"{u.path.name} is already on {_redact(check_url)}: skipped")
                continue
            if have is not None:
                raise IntegrityError(f"{_redact(check_url)} already has a {u.path.name} with other contents "
                                     f"(sha256 {have}, this one {u.sha256})",
                                     hint="an index never replaces a file: give the release a new version")
        todo.append(u)
    if args.dry_run:
        for u in todo:
            ctx.info(f"would upload {u.path.name} ({_size(u.path)}) to {_redact(url)}"
                     + (" (with a token from trusted publishing)" if auth is TRUSTED else ""))
        return ExitCode.OK
    from .http import make_client

    started = time.monotonic()
    with make_client(max_connections=1, timeout=300.0) as client:
        if auth is TRUSTED and todo:
            auth = ("__token__", _trusted_token(client, url))
            ctx.info("Using a token from trusted publishing")
        for u in todo:
            ctx.info(f"Uploading {u.path.name} ({_size(u.path)})")
            outcome = _upload(client, url, auth, u)
            if outcome == "exists":
                if check_url and _on_index(check_url, u, ctx) == u.sha256:
                    ctx.info(f"{u.path.name} was already on the index (an earlier upload): skipped")
                    continue
                raise IndexError_(f"{_redact(url)} refused {u.path.name}: the file already exists",
                                  hint="a file cannot be replaced; give the release a new version, or pass "
                                       "--check-url INDEX to skip files uploaded before")
    if not todo:
        ctx.info(f"Nothing to publish: the index has all {len(uploads)} files already")
        return ExitCode.OK
    ctx.info(f"Published {len(todo)} file{'s' if len(todo) != 1 else ''} in {time.monotonic() - started:.2f}s"
             + (f" ({len(uploads) - len(todo)} already there)" if len(todo) != len(uploads) else ""))
    return ExitCode.OK


def _size(path: Path) -> str:
    n = float(path.stat().st_size)
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _upload(client: Any, url: str, auth: tuple[str, str] | None, u: Upload) -> str:
    """POST one file; "ok" or "exists" (the index has that file name), else an IndexError_."""
    import time

    from .http import RETRY_STATUS, TransportError, describe_error

    fields = form_fields(u)
    last = ""
    for attempt in range(3):
        with u.path.open("rb") as fh:
            try:
                # Not redirected: a POST sent on to another URL as a GET would lose the file, and the
                # credentials would go wherever the redirect pointed.
                response = client.post(url, data=_as_dict(fields), auth=auth, follow_redirects=False,
                                       files={"content": (u.path.name, fh, "application/octet-stream")})
            except TransportError as e:
                last = describe_error(e)
                time.sleep(0.5 * (2 ** attempt))
                continue
        status = response.status_code
        if 200 <= status < 300:
            return "ok"
        text = _reason(response)
        if status in (301, 302, 303, 307, 308):
            raise IndexError_(f"{_redact(url)} redirects the upload to {_redact(response.headers.get('location', '?'))}",
                              hint="give that URL as --publish-url (the upload endpoint itself, often ending in /)")
        if status in (400, 409) and "exist" in text.lower():
            return "exists"
        if status in (401, 403):
            raise IndexError_(f"{_redact(url)} refused the credentials for {u.path.name}: HTTP {status} {text}",
                              hint="check the token (or username and password), and that it may upload to this project")
        if status not in RETRY_STATUS:
            raise IndexError_(f"{_redact(url)} refused {u.path.name}: HTTP {status} {text}",
                              hint="the index says why above; fix the file or its metadata and publish again")
        last = f"HTTP {status} {text}"
        time.sleep(0.5 * (2 ** attempt))
    raise IndexError_(f"cannot upload {u.path.name} to {_redact(url)}: {last}",
                      hint="check the URL and your connection, then publish again (with --check-url INDEX, files "
                           "already uploaded are skipped)")


def _as_dict(fields: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """httpx's form: a list value is a repeated field."""
    out: dict[str, Any] = {}
    for k, v in fields:
        if k in out:
            out[k] = (out[k] if isinstance(out[k], list) else [out[k]]) + [v]
        else:
            out[k] = v
    return out


def _reason(response: Any) -> str:
    """The index's reason: the status line's phrase (where warehouse-like indexes put it), else the body's start."""
    phrase = (response.reason_phrase or "").strip()
    try:
        body = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
    except (UnicodeDecodeError, IndexError):
        body = ""
    parts = [phrase] if phrase else []
    if body and body != phrase:
        parts.append(body)
    return " - ".join(parts)
