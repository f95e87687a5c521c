"""A private index that wants HTTP Basic credentials for its pages and its files (a real index on
127.0.0.1): credentials from the index URL, the environment or ~/.netrc, sent to that host only,
and never written into pypm.lock or the cache."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.e2e.test_lock import write_project

USER, PASSWORD = "ci-bot", "s3cret-Pa55"
WANT = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.fixture
def private(dists, index_server):
    dists.wheel("alpha", "1.0", requires_dist=["beta"])
    dists.wheel("beta", "2.0")
    return index_server(auth=(USER, PASSWORD))


def _with_password(url: str) -> str:
    return url.replace("http://", f"http://{USER}:{PASSWORD}@")


def _nothing_holds_the_password(*roots: Path) -> None:
    for root in roots:
        for p in root.rglob("*"):
            if p.is_file():
                assert PASSWORD.encode() not in p.read_bytes(), f"{p} holds the password"


def test_credentials_in_the_index_url_are_used_and_never_recorded(pypm, private, tmp_path: Path) -> None:
    proj = write_project(tmp_path / "proj", ["alpha"], build=False)
    r = pypm("lock", "--index-url", _with_password(private.url), cwd=proj)
    assert r.returncode == 0, r.stderr
    text = (proj / "pypm.lock").read_text()
    assert f'index-url = "{private.url}"' in text  # recorded, without user:password@
    assert f'source = {{ registry = "{private.url}" }}' in text
    assert PASSWORD not in r.stderr + r.stdout
    # the metadata files on the same host were asked with the credentials too
    assert all(h.get("Authorization") == WANT for _, _, h in private.requests)
    assert any(p.endswith(".metadata") for _, p, _ in private.requests)

    # A later sync finds them where the user keeps them: here the environment's index URL.
    r = pypm("sync", cwd=proj, env={"PYPM_INDEX_URL": _with_password(private.url)})
    assert r.returncode == 0, r.stderr
    assert (proj / ".venv").is_dir()
    assert any(p.endswith("beta-2.0-py3-none-any.whl") for _, p, _ in private.requests)
    _nothing_holds_the_password(proj, pypm.cache_dir)


def test_credentials_from_netrc(pypm, private, tmp_path: Path) -> None:
    netrc = pypm.home / ".netrc"
    netrc.write_text(f"machine 127.0.0.1\n  login {USER}\n  password {PASSWORD}\n")
    netrc.chmod(0o600)
    proj = write_project(tmp_path / "proj", ["alpha"], build=False)
    r = pypm("lock", "--index-url", private.url, cwd=proj)
    assert r.returncode == 0, r.stderr
    r = pypm("sync", cwd=proj)  # the downloads too (a process of their own)
    assert r.returncode == 0, r.stderr
    assert private.requests and all(h.get("Authorization") == WANT for _, _, h in private.requests)
    _nothing_holds_the_password(proj, pypm.cache_dir)


def test_missing_or_wrong_credentials_say_where_to_put_them(pypm, private, tmp_path: Path) -> None:
    proj = write_project(tmp_path / "proj", ["alpha"], build=False)
    r = pypm("lock", "--index-url", private.url, cwd=proj)
    assert r.returncode == 5 and "Traceback" not in r.stderr
    assert "HTTP 401" in r.stderr and "127.0.0.1 wants credentials" in r.stderr and ".netrc" in r.stderr, r.stderr

    wrong = private.url.replace("http://", f"http://{USER}:not-it@")
    r = pypm("lock", "--index-url", wrong, cwd=proj)
    assert r.returncode == 5 and "were refused" in r.stderr, r.stderr
    assert "not-it" not in r.stderr
    assert not (proj / "pypm.lock").exists()


def test_a_netrc_entry_for_another_host_is_not_sent(pypm, dists, index_server, tmp_path: Path) -> None:
    dists.wheel("alpha", "1.0")
    public = index_server()
    netrc = pypm.home / ".netrc"
    netrc.write_text(f"machine private.example\n  login {USER}\n  password {PASSWORD}\n")
    netrc.chmod(0o600)
    proj = write_project(tmp_path / "proj", ["alpha"], build=False)
    assert pypm("lock", "--index-url", public.url, cwd=proj).returncode == 0
    assert public.requests and not any("Authorization" in h for _, _, h in public.requests)


def test_pypm_x_from_a_private_index(pypm, dists, index_server, tmp_path: Path) -> None:
    dists.wheel("hello-tool", "1.0", modules={"hello_tool/__init__.py": "def main():\n    print('hello from the tool')\n"},
                entry_points={"console_scripts": {"hello": "hello_tool:main"}})
    private = index_server(auth=(USER, PASSWORD))
    work = tmp_path / "work"
    work.mkdir()
    r = pypm("x", "--index-url", _with_password(private.url), "--from", "hello-tool", "hello", cwd=work)
    assert r.returncode == 0, r.stderr
    assert "hello from the tool" in r.stdout
    _nothing_holds_the_password(pypm.cache_dir)  # the tool's environment is keyed and written without it


def test_an_index_source_with_credentials(pypm, dists, index_server, tmp_path: Path) -> None:
    """`[tool.pypm.sources] alpha = { index = "https://USER:PASSWORD@..." }`: used for that package's
    requests; neither recorded nor hashed (another password leaves the lock current)."""
    dists.wheel("alpha", "1.0")
    public = index_server()
    private = index_server(auth=(USER, PASSWORD))
    proj = write_project(tmp_path / "proj", ["alpha"], build=False)
    base = (proj / "pyproject.toml").read_text()
    (proj / "pyproject.toml").write_text(
        base + f'\n[tool.pypm]\nindex-url = "{public.url}"\n'
        f'\n[tool.pypm.sources]\nalpha = {{ index = "{_with_password(private.url)}" }}\n')
    r = pypm("lock", cwd=proj)
    assert r.returncode == 0, r.stderr
    assert f'source = {{ registry = "{private.url}" }}' in (proj / "pypm.lock").read_text()
    assert all(h.get("Authorization") == WANT for _, _, h in private.requests) and private.requests
    text = (proj / "pyproject.toml").read_text()
    (proj / "pyproject.toml").write_text(text.replace(PASSWORD, "rotated-Pa55"))
    r = pypm("lock", "--check", cwd=proj)
    assert r.returncode == 0, r.stderr
    _nothing_holds_the_password(pypm.cache_dir)
    assert PASSWORD not in (proj / "pypm.lock").read_text()


def _fake_keyring(tmp_path: Path, services: list[str]) -> tuple[dict[str, str], Path]:
    """A `keyring` command on PATH that knows PASSWORD for USER under `services` and logs each call
    (the keyring is the user's program: pypm's side is what is tested)."""
    import os
    import sys

    bindir = tmp_path / "keyring-bin"
    bindir.mkdir()
    log = tmp_path / "keyring.log"
    exe = bindir / "keyring"
    exe.write_text(f"#!{sys.executable}\n"
                   "import sys\n"
                   f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
                   f"if sys.argv[1:2] == ['get'] and sys.argv[2] in {services!r} and sys.argv[3] == {USER!r}:\n"
                   f"    print({PASSWORD!r})\n"
                   "else:\n"
                   "    sys.exit(1)\n")
    exe.chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}, log


@pytest.mark.parametrize("service", ["url", "host"])
def test_a_user_without_a_password_gets_it_from_the_keyring(pypm, private, tmp_path: Path, service) -> None:
    with_user = private.url.replace("http://", f"http://{USER}@")
    host = private.url.split("/")[2]
    env, log = _fake_keyring(tmp_path, [private.url if service == "url" else host])
    proj = write_project(tmp_path / "proj", ["alpha"], build=False)

    # Not asked unless told: the 401's hint says how
    r = pypm("lock", "--index-url", with_user, cwd=proj, env=env)
    assert r.returncode == 5 and "PYPM_KEYRING_PROVIDER=subprocess" in r.stderr, r.stderr
    assert not log.exists()

    private.clear_requests()
    env["PYPM_KEYRING_PROVIDER"] = "subprocess"
    r = pypm("lock", "--index-url", with_user, cwd=proj, env=env)
    assert r.returncode == 0, r.stderr
    # asked once (the index URL as given, without the user, then the host), whatever the number of requests
    calls = log.read_text().splitlines()
    assert calls == [f"get {private.url} {USER}"] + ([f"get {host} {USER}"] if service == "host" else []), calls
    assert len(private.requests) > 2 and all(h.get("Authorization") == WANT for _, _, h in private.requests)
    assert f'index-url = "{private.url}"' in (proj / "pypm.lock").read_text()

    # sync's downloads (a process of its own) get it too; the user comes from the environment's index URL
    r = pypm("sync", cwd=proj, env={**env, "PYPM_INDEX_URL": with_user})
    assert r.returncode == 0, r.stderr
    assert any(p.endswith("beta-2.0-py3-none-any.whl") for _, p, _ in private.requests)
    _nothing_holds_the_password(proj, pypm.cache_dir)


def test_the_keyring_with_nothing_for_the_user_and_a_bad_provider(pypm, private, tmp_path: Path) -> None:
    with_user = private.url.replace("http://", f"http://{USER}@")
    env, log = _fake_keyring(tmp_path, [])
    proj = write_project(tmp_path / "proj", ["alpha"], build=False)
    r = pypm("lock", "--index-url", with_user, cwd=proj, env={**env, "PYPM_KEYRING_PROVIDER": "subprocess"})
    assert r.returncode == 5 and "keyring was asked" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(log.read_text().splitlines()) == 2  # the URL, then the host; once

    r = pypm("lock", "--index-url", with_user, cwd=proj, env={**env, "PYPM_KEYRING_PROVIDER": "yes"})
    assert r.returncode == 2 and "PYPM_KEYRING_PROVIDER='yes' is not one of subprocess, disabled" in r.stderr, r.stderr


def test_the_keyring_for_the_projects_own_index_url_in_lock_and_sync(pypm, private, tmp_path: Path) -> None:
    """[tool.pypm] index-url names the user; the keyring knows the password under that URL. The
    sync's download process, forked before the URL was read, is handed the URL with the user."""
    with_user = private.url.replace("http://", f"http://{USER}@")
    env, log = _fake_keyring(tmp_path, [private.url])
    env["PYPM_KEYRING_PROVIDER"] = "subprocess"
    proj = write_project(tmp_path / "proj", ["alpha"], build=False)
    with (proj / "pyproject.toml").open("a") as f:
        f.write(f'\n[tool.pypm]\nindex-url = "{with_user}"\n')
    r = pypm("lock", cwd=proj, env=env)
    assert r.returncode == 0, r.stderr
    r = pypm("sync", cwd=proj, env=env)
    assert r.returncode == 0, r.stderr
    assert any(p.endswith("beta-2.0-py3-none-any.whl") for _, p, _ in private.requests)
    assert all(h.get("Authorization") == WANT for _, _, h in private.requests)
    assert set(log.read_text().splitlines()) == {f"get {private.url} {USER}"}
    _nothing_holds_the_password(proj, pypm.cache_dir)
