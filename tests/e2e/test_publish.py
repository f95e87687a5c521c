"""`pypm publish` against a real upload endpoint on 127.0.0.1 (tests/support/index_server.py's
`/legacy/`, which checks the token, the digests and the names as an index does), whose index then
serves what was uploaded: the release is locked and installed from it by a second project."""

from __future__ import annotations

import shutil

import pytest

from tests.e2e.test_sync import installed

TOKEN = "pypm-test-token-0123456789"


@pytest.fixture
def release(dists, index_server, tmp_path):
    """(server, upload URL, project with dist/ holding pubpkg 1.0's sdist and wheel)."""
    dists.wheel("alpha", "1.0")
    server = index_server()
    url = server.accept_uploads(tmp_path / "uploaded", TOKEN)
    project = tmp_path / "pub"
    (project / "dist").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[project]\nname = "pubpkg"\nversion = "1.0"\n')
    build = tmp_path / "build"
    for f in (build_wheel := dists.__class__(build).wheel("pubpkg", "1.0", requires_dist=["alpha>=1", "beta; extra == 'x'"],
                                                          provides_extra=["x"]),
              dists.__class__(build).sdist("pubpkg", "1.0", requires_dist=["alpha>=1"])):
        shutil.copy(f, project / "dist" / f.name)
    assert build_wheel.name == "pubpkg-1.0-py3-none-any.whl"
    return server, url, project


def posts(server) -> int:
    return sum(1 for method, path, _ in server.requests if method == "POST")


def test_publish_uploads_dist_and_the_release_installs_from_the_index(pypm, release, tmp_path):
    server, url, project = release
    r = pypm("publish", "--publish-url", url, cwd=project, env={"PYPM_PUBLISH_TOKEN": TOKEN})
    assert r.returncode == 0, r.stderr
    assert "Published 2 files" in r.stderr and TOKEN not in r.stderr + r.stdout
    by_type = {f["filetype"][0]: f for f in server.uploads}
    wheel, sdist = by_type["bdist_wheel"], by_type["sdist"]
    assert wheel["name"] == ["pubpkg"] and wheel["version"] == ["1.0"] and wheel["pyversion"] == ["py3"]
    assert wheel["requires_dist"] == ["alpha>=1", "beta; extra == 'x'"] and wheel["provides_extra"] == ["x"]
    assert sdist["pyversion"] == ["source"] and wheel["metadata_version"] == ["2.1"]
    assert len(wheel["blake2_256_digest"][0]) == 64
    # what was published is what an index serves: a project locks and installs it from there
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    (consumer / "pyproject.toml").write_text(
        f'[project]\nname = "consumer"\nversion = "0.1"\nrequires-python = ">=3.9"\ndependencies = ["pubpkg"]\n\n'
        f'[tool.pypm]\nindex-url = "{server.url}"\n')
    r = pypm("sync", cwd=consumer)
    assert r.returncode == 0, r.stderr
    assert installed(consumer / ".venv") == {"pubpkg": "1.0", "alpha": "1.0"}


def test_publishing_again_skips_what_the_index_has_with_check_url_and_fails_without(pypm, release):
    server, url, project = release
    env = {"PYPM_PUBLISH_TOKEN": TOKEN}
    assert pypm("publish", "--publish-url", url, cwd=project, env=env).returncode == 0
    before = posts(server)
    r = pypm("publish", "--publish-url", url, "--check-url", server.url, cwd=project, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("already on") == 2 and posts(server) == before  # nothing sent again
    r = pypm("publish", "--publish-url", url, cwd=project, env=env)
    assert r.returncode == 5 and "the file already exists" in r.stderr and "--check-url" in r.stderr, r.stderr


def test_a_file_the_index_has_with_other_bytes_stops_before_anything_is_uploaded(pypm, release, dists, tmp_path):
    server, url, project = release
    other = dists.__class__(tmp_path / "other").wheel("pubpkg", "1.0", requires_dist=["gamma"])
    server.add(other)  # the index already has a pubpkg-1.0 wheel, with other contents
    r = pypm("publish", "--publish-url", url, "--check-url", server.url, cwd=project,
             env={"PYPM_PUBLISH_TOKEN": TOKEN})
    assert r.returncode == 6 and "with other contents" in r.stderr and "new version" in r.stderr, r.stderr
    assert posts(server) == 0


def test_bad_files_and_bad_credentials_upload_nothing(pypm, release):
    server, url, project = release
    wheel = project / "dist" / "pubpkg-1.0-py3-none-any.whl"
    renamed = project / "dist" / "pubpkg-2.0-py3-none-any.whl"
    wheel.rename(renamed)
    r = pypm("publish", "--publish-url", url, "--token", TOKEN, cwd=project)
    assert r.returncode == 3 and "its metadata is for pubpkg 1.0, its file name for pubpkg 2.0" in r.stderr, r.stderr
    assert posts(server) == 0  # the good sdist was not sent either
    renamed.rename(wheel)
    r = pypm("publish", "--publish-url", url, "--token", "wrong-token", cwd=project)
    assert r.returncode == 5 and "refused the credentials" in r.stderr and "wrong-token" not in r.stderr, r.stderr
    assert server.uploads == []


def test_credentials_from_netrc(pypm, release):
    """No flag, no variable: ~/.netrc's entry for the upload host, as twine and an index's requests read it."""
    server, url, project = release
    netrc = pypm.home / ".netrc"
    netrc.write_text(f"machine 127.0.0.1 login __token__ password {TOKEN}\n")
    netrc.chmod(0o600)
    r = pypm("publish", "--publish-url", url, cwd=project)
    assert r.returncode == 0 and "Published 2 files" in r.stderr, r.stderr
    assert TOKEN not in r.stderr + r.stdout and len(server.uploads) == 2


class _ActionsTokens:
    """GitHub Actions' identity-token endpoint, on 127.0.0.1: answers `identity` to a request
    with the job's request token, for the audience asked (recorded in `asked`)."""

    REQUEST_TOKEN = "gh-request-token-42"

    def __init__(self, identity: str) -> None:
        import http.server
        import json
        import threading
        import urllib.parse

        self.asked: list[str] = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                outer.asked.append(q.get("audience", [""])[0])
                ok = self.headers.get("Authorization") == f"bearer {outer.REQUEST_TOKEN}"
                body = json.dumps({"value": identity} if ok else {"message": "bad token"}).encode()
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.env = {"ACTIONS_ID_TOKEN_REQUEST_URL": f"http://127.0.0.1:{self.httpd.server_address[1]}/token?api-version=2.0",
                    "ACTIONS_ID_TOKEN_REQUEST_TOKEN": self.REQUEST_TOKEN}


@pytest.mark.parametrize("trusted", ["registered", "not registered"])
def test_trusted_publishing_trades_the_jobs_identity_for_an_upload_token(pypm, release, trusted):
    """In a GitHub Actions job with no credentials, the index's audience, an identity token for
    it, and the index's token for that: then the upload, with that token."""
    server, url, project = release
    server.accept_trusted_publishing("testindex", "the-jobs-identity")
    actions = _ActionsTokens("the-jobs-identity" if trusted == "registered" else "someone-elses-identity")
    try:
        r = pypm("publish", "--publish-url", url, cwd=project, env=actions.env)
    finally:
        actions.httpd.shutdown()
    assert actions.asked == ["testindex"]
    if trusted == "registered":
        assert r.returncode == 0 and "Using a token from trusted publishing" in r.stderr, r.stderr
        assert len(server.uploads) == 2 and TOKEN not in r.stderr + r.stdout
    else:
        assert r.returncode == 5 and "trusted publishing: trading the identity token" in r.stderr, r.stderr
        assert "HTTP 422: valid token, but no corresponding publisher" in r.stderr and posts(server) == 1  # the mint only
        assert server.uploads == []


def test_trusted_publishing_in_gitlab_ci_takes_the_jobs_id_token_for_the_audience(pypm, release):
    """A GitLab CI job's identity token is in the variable its `id_tokens:` entry names:
    <AUDIENCE>_ID_TOKEN for the index's audience (PYPI_ID_TOKEN for "pypi"), as PyPA's tools read it."""
    server, url, project = release
    server.accept_trusted_publishing("test-index", "the-jobs-identity")
    # no such variable: said, with the line .gitlab-ci.yml needs; nothing uploaded
    r = pypm("publish", "--publish-url", url, cwd=project, env={"GITLAB_CI": "true", "PYPI_ID_TOKEN": "x"})
    assert r.returncode == 2 and "this GitLab CI job has no identity token" in r.stderr, r.stderr
    assert "TEST_INDEX_ID_TOKEN is not set" in r.stderr and "id_tokens: TEST_INDEX_ID_TOKEN: aud: test-index" in r.stderr
    assert posts(server) == 0
    # another job's identity: the index's refusal, with a hint for GitLab
    r = pypm("publish", "--publish-url", url, cwd=project,
             env={"GITLAB_CI": "true", "TEST_INDEX_ID_TOKEN": "someone-elses-identity"})
    assert r.returncode == 5 and "HTTP 422" in r.stderr and "`id_tokens:` entry" in r.stderr, r.stderr
    assert server.uploads == []
    # its own: traded, and the upload made with the index's token
    r = pypm("publish", "--publish-url", url, cwd=project,
             env={"GITLAB_CI": "true", "TEST_INDEX_ID_TOKEN": "the-jobs-identity"})
    assert r.returncode == 0 and "Using a token from trusted publishing" in r.stderr, r.stderr
    assert len(server.uploads) == 2
    assert TOKEN not in r.stderr + r.stdout and "the-jobs-identity" not in r.stderr + r.stdout
    # --trusted-publishing always: a GitLab CI job is one that can
    r = pypm("publish", "--publish-url", url, "--trusted-publishing", "always", "--dry-run", cwd=project,
             env={"GITLAB_CI": "true"})
    assert r.returncode == 0, r.stderr


def test_trusted_publishing_modes(pypm, release):
    server, url, project = release
    # never: even in a job that could, no exchange
    r = pypm("publish", "--publish-url", url, "--trusted-publishing", "never", cwd=project,
             env={"ACTIONS_ID_TOKEN_REQUEST_URL": "http://127.0.0.1:9/x", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t"})
    assert r.returncode == 2 and "no credentials to publish with" in r.stderr, r.stderr
    # always: outside a job that can, said so; with a token too, refused
    r = pypm("publish", "--publish-url", url, "--trusted-publishing", "always", cwd=project)
    assert r.returncode == 2 and "this job cannot ask for an identity token" in r.stderr, r.stderr
    r = pypm("publish", "--publish-url", url, "--trusted-publishing", "always", "--token", TOKEN, cwd=project)
    assert r.returncode == 2 and "give no token or password" in r.stderr, r.stderr
    # auto outside a job: the usual error, which says how a job could do it
    r = pypm("publish", "--publish-url", url, cwd=project)
    assert r.returncode == 2 and "id-token: write" in r.stderr, r.stderr
    assert posts(server) == 0 and not [p for _, p, _ in server.requests if p.startswith("/_/oidc")]


@pytest.mark.parametrize("argv, env, message", [
    ([], {"PYPM_PUBLISH_TOKEN": TOKEN}, "no upload URL"),
    (["--publish-url", "http://pypm-test.invalid/legacy/"], {"PYPM_PUBLISH_TOKEN": TOKEN}, "is plain HTTP"),
    (["--publish-url", "URL"], {}, "no credentials to publish with"),
    (["--publish-url", "URL", "--token", "t", "--username", "u"], {}, "not both"),
    (["--publish-url", "URL", "--token", TOKEN, "nothing.txt"], {}, "is not a file"),
])
def test_command_line_mistakes_are_refused_before_any_request(pypm, release, argv, env, message):
    server, url, project = release
    argv = [url if a == "URL" else a for a in argv]
    r = pypm("publish", *argv, cwd=project, env=env)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert posts(server) == 0


def test_dry_run_checks_and_says_what_it_would_upload(pypm, release):
    server, url, project = release
    r = pypm("publish", "--publish-url", url, "--token", TOKEN, "--dry-run", "dist/pubpkg-1.0.tar.gz", cwd=project)
    assert r.returncode == 0 and "would upload pubpkg-1.0.tar.gz" in r.stderr, r.stderr
    assert "whl" not in r.stderr and posts(server) == 0
