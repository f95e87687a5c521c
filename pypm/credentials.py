"""Credentials for private indexes: taken from where the user keeps them, sent where they belong,
never written into pypm.lock or the cache.

Where they come from, for a request to scheme://host:port (a "realm", as uv and pip match them):
1. the request's own URL, when it carries `user:password@`;
2. an index or find-links URL given with them in this process (`--index-url`, `[tool.pypm]`,
   `PYPM_INDEX_URL`, ...): `strip` takes them off the URL and keeps them here;
3. the index URLs of the environment and of pip's configuration (`PYPM_INDEX_URL`,
   `PIP_INDEX_URL`, `PIP_EXTRA_INDEX_URL`, pip.conf's `index-url` and `extra-index-url`), read
   when first needed: a lock records its index URL without the password, and a later
   `pypm sync` finds it again there;
4. `~/.netrc` (or the file `NETRC` names), by host name, as curl, pip and uv read it.

Why here and not in httpx: httpx sends a URL's own `user:password@` only for that URL, and reads
no netrc unless told; pypm needs the index's credentials on its file URLs too (the lock's file
URLs carry none) and the lock must name the index without them. A lock made with
`--index-url https://user:secret@host/simple` used to record that URL, password included, in
pypm.lock's `[options]` and each package's `source`.

This module imports only the standard library: the lock's inputs use `strip` on every command.
"""

from __future__ import annotations

import os
import threading
import urllib.parse

__all__ = ["strip", "for_url", "snapshot", "restore", "hint_for"]

_Realm = tuple[str, str, int]
_lock = threading.Lock()
_known: dict[_Realm, tuple[str, str]] = {}
_configured_read = False
_configured_lock = threading.Lock()
_netrc: object = None  # netrc.netrc, False when there is none (or it cannot be read), None: not read yet
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _realm(parts: urllib.parse.SplitResult) -> _Realm | None:
    try:
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if not host:
        return None
    return parts.scheme.lower(), host, port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)


def _userinfo(parts: urllib.parse.SplitResult) -> tuple[str, str]:
    return urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password or "")


def strip(url: str) -> str:
    """`url` without `user:password@`, which is kept for requests to its realm."""
    if "@" not in url or "://" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    realm = _realm(parts)
    if realm is not None:
        with _lock:
            _known[realm] = _userinfo(parts)
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def for_url(url: str) -> tuple[str, str] | None:
    """(user, password) for a request to `url`, or None."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None or parts.password is not None:
        return _userinfo(parts)
    realm = _realm(parts)
    if realm is None:
        return None
    with _lock:
        found = _known.get(realm)
    if found is not None:
        return found
    _read_configured()
    with _lock:
        found = _known.get(realm)
    if found is not None:
        return found
    return _from_netrc(realm[1])


def snapshot() -> dict[_Realm, tuple[str, str]]:
    """What `strip` kept, for a helper process forked before it was known (pypm.fetchchild)."""
    with _lock:
        return dict(_known)


def restore(known: dict[_Realm, tuple[str, str]]) -> None:
    with _lock:
        for realm, creds in known.items():
            _known.setdefault(realm, creds)


def _read_configured() -> None:
    global _configured_read
    if _configured_read:
        return
    with _configured_lock:  # once, and no thread goes on before it is done (else its request lacks them)
        if _configured_read:
            return
        urls = [os.environ.get("PYPM_INDEX_URL", ""), os.environ.get("PIP_INDEX_URL", ""),
                *os.environ.get("PIP_EXTRA_INDEX_URL", "").split()]
        try:
            from .config import pip_config_extra_index_urls, pip_config_index_url

            urls += [pip_config_index_url() or "", *pip_config_extra_index_urls()]
        except Exception:  # noqa: BLE001 -- an unreadable pip.conf is reported where its index is used
            pass
        for u in urls:
            if u:
                strip(u)
        _configured_read = True


def _from_netrc(host: str) -> tuple[str, str] | None:
    global _netrc
    with _lock:
        if _netrc is None:
            _netrc = _load_netrc()
        rc = _netrc
    if rc is False:
        return None
    found = rc.authenticators(host)  # type: ignore[attr-defined]
    if not found:
        return None
    login, _account, password = found
    if not login and not password:
        return None
    return login or "", password or ""


def _load_netrc() -> object:
    import netrc

    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    if not os.path.isfile(path):
        return False
    try:
        return netrc.netrc(path)
    except (netrc.NetrcParseError, OSError) as e:
        import sys

        from .plugins import quiet

        # Not fatal: the index may need no credentials. If it does, its 401 says so.
        if not quiet():
            print(f"warning: cannot read {path}: {e}; its credentials are not used", file=sys.stderr)
        return False


def hint_for(status: int, url: str) -> str | None:
    """What to do about a 401 or 403 from `url` (None for any other status)."""
    if status not in (401, 403):
        return None
    host = urllib.parse.urlsplit(url).hostname or "HOST"
    sent = for_url(url) is not None
    return ((f"the credentials sent to {host} were refused: check them" if sent
             else f"{host} wants credentials")
            + f": put them in ~/.netrc (`machine {host} login USER password PASSWORD`) or in the index "
              "URL (`--index-url` or PYPM_INDEX_URL as https://USER:PASSWORD@HOST/...); "
              "pypm.lock never records them")
