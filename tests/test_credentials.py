"""pypm.credentials: which credentials go with which request."""

from __future__ import annotations

import pytest

from pypm import credentials


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    monkeypatch.setattr(credentials, "_known", {})
    monkeypatch.setattr(credentials, "_configured_read", False)
    monkeypatch.setattr(credentials, "_netrc", None)
    for k in ("PYPM_INDEX_URL", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NETRC", raising=False)


def test_strip_keeps_them_for_the_realm_only() -> None:
    assert credentials.strip("https://me:p%40ss@Index.Example/simple/") == "https://Index.Example/simple/"
    assert credentials.for_url("https://index.example/files/a.whl") == ("me", "p@ss")
    assert credentials.for_url("https://index.example:443/x") == ("me", "p@ss")
    assert credentials.for_url("https://index.example:8443/x") is None  # another port
    assert credentials.for_url("http://index.example/x") is None  # another scheme
    assert credentials.for_url("https://cdn.example/x") is None  # another host
    assert credentials.strip("https://index.example/simple/") == "https://index.example/simple/"
    assert credentials.strip("/local/dir") == "/local/dir"


def test_a_url_s_own_credentials_come_first() -> None:
    credentials.strip("https://me:one@index.example/simple/")
    assert credentials.for_url("https://you:two@index.example/simple/") == ("you", "two")


def test_the_environment_s_index_url_is_read_when_needed(monkeypatch) -> None:
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "https://a.example/simple https://bot:tok@b.example/simple")
    assert credentials.for_url("https://b.example/files/x.whl") == ("bot", "tok")
    assert credentials.for_url("https://a.example/files/x.whl") is None


def test_pip_conf_index_url_and_extra_index_url(tmp_path, monkeypatch) -> None:
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://me:one@a.example/simple\n"
                    "extra-index-url =\n    https://b.example/simple\n    https://bot:tok@c.example/simple\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    assert credentials.for_url("https://a.example/files/x.whl") == ("me", "one")
    assert credentials.for_url("https://c.example/files/x.whl") == ("bot", "tok")
    assert credentials.for_url("https://b.example/files/x.whl") is None


def test_netrc_by_host_and_its_default(tmp_path, monkeypatch) -> None:
    rc = tmp_path / "rc"
    rc.write_text("machine index.example login me password pw\ndefault login anon password guest\n")
    rc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(rc))
    assert credentials.for_url("https://index.example/simple/") == ("me", "pw")
    assert credentials.for_url("https://other.example/simple/") == ("anon", "guest")


def test_an_unreadable_netrc_is_a_warning_not_a_failure(tmp_path, monkeypatch, capsys) -> None:
    rc = tmp_path / "rc"
    rc.write_text("machine index.example login me password pw\nbogus entry\n")
    monkeypatch.setenv("NETRC", str(rc))
    assert credentials.for_url("https://index.example/simple/") is None
    assert f"cannot read {rc}" in capsys.readouterr().err


def test_the_hint_says_whether_credentials_were_sent() -> None:
    assert credentials.hint_for(404, "https://index.example/") is None
    assert "index.example wants credentials" in (credentials.hint_for(401, "https://index.example/simple/") or "")
    credentials.strip("https://me:pw@index.example/simple/")
    hint = credentials.hint_for(403, "https://index.example/simple/") or ""
    assert "were refused" in hint and "pw" not in hint.replace("password", "")
