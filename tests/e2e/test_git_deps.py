"""Git dependencies end to end: `NAME @ git+URL@REV#subdirectory=...` and `[tool.pypm.sources]
NAME = { git = URL, tag|branch|rev = ..., subdirectory = ... }`, from real repositories made with
the real git, served over HTTP on 127.0.0.1 (git's "dumb" protocol: static files) or file://;
the rest from a real index; builds in the sandbox, real venvs and runs."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
import tomllib
from pathlib import Path

import pytest

from tests.e2e.test_path_deps import lock_of, run_py, write_app, write_lib
from tests.e2e.test_sync import installed

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_NOSYSTEM": "1"}


def git(*args: str, cwd: Path) -> str:
    r = subprocess.run(["git", *args], cwd=cwd, env=_ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def make_repo(path: Path, sub: str = "") -> Path:
    """A repository whose `sub` directory holds the project `lib` 0.3.0 (value "one", needs alpha),
    committed on `main` and tagged v1."""
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    write_lib(path / sub if sub else path, "lib", "0.3.0", deps=["alpha"])
    (path / "README").write_text("not a package\n")
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "one", cwd=path)
    git("tag", "v1", cwd=path)
    return path


def commit_change(repo: Path, sub: str, version: str, value: str) -> str:
    write_lib(repo / sub if sub else repo, "lib", version, deps=["alpha"], value=value)
    git("commit", "-q", "-am", value, cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo)


class DumbHTTP:
    """A bare copy of a repository served as static files (`git update-server-info`)."""

    def __init__(self, repo: Path, where: Path) -> None:
        where.mkdir(parents=True, exist_ok=True)
        self.bare = where / "repo.git"
        git("clone", "-q", "--bare", str(repo), str(self.bare), cwd=where)
        git("update-server-info", cwd=self.bare)
        handler = functools.partial(_Quiet, directory=str(where))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/repo.git"
        self.paths: list[str] = []
        _Quiet.log = self.paths

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    log: list[str] = []

    def log_message(self, *args: object) -> None:
        _Quiet.log.append(self.path)


@pytest.fixture
def world(dists, index_server, tmp_path):
    dists.wheel("alpha", "1.0")
    return index_server(), tmp_path


def test_a_tag_over_http_is_locked_to_its_commit_built_installed_and_reused_offline(pypm, world):
    index, tmp = world
    repo = make_repo(tmp / "repo", sub="py")
    head = git("rev-parse", "HEAD", cwd=repo)
    served = DumbHTTP(repo, tmp / "srv")
    try:
        app = write_app(tmp / "app", index.url, [f"lib @ git+{served.url}@v1#subdirectory=py"])
        r = pypm("sync", cwd=app)
        assert r.returncode == 0, r.stderr
        lib = lock_of(app)["lib"]
        assert lib.source == {"git": f"{served.url}?rev=v1&subdirectory=py#{head}"} and lib.version == "0.3.0"
        assert not lib.files() and [d.name for d in lib.dependencies] == ["alpha"]
        assert not index.requests_for("/simple/lib")  # a git dependency: the index is not asked
        assert installed(app / ".venv") == {"lib": "0.3.0", "alpha": "1.0"}
        r = run_py(pypm, app, "import lib; print(lib.VALUE)")
        assert (r.returncode, r.stdout) == (0, "one\n"), r.stderr
        du = subprocess.run([str(app / ".venv" / "bin" / "python"), "-c",
                             "import importlib.metadata as m; print(m.distribution('lib').read_text('direct_url.json'))"],
                            capture_output=True, text=True, check=True)
        assert json.loads(du.stdout) == {"url": served.url, "subdirectory": "py",
                                         "vcs_info": {"vcs": "git", "commit_id": head, "requested_revision": "v1"}}
        assert pypm("lock", "--check", cwd=app).returncode == 0
        r = pypm("export", "--format", "requirements.txt", cwd=app)
        assert r.returncode == 0, r.stderr
        assert f"\nlib @ git+{served.url}@{head}#subdirectory=py\n" in r.stdout, r.stdout  # that very commit
        data = tomllib.loads(pypm("export", "--format", "pylock.toml", cwd=app).stdout)
        (entry,) = [p for p in data["packages"] if p["name"] == "lib"]
        assert entry["vcs"] == {"type": "git", "url": served.url, "requested-revision": "v1", "commit-id": head,
                                "subdirectory": "py"}
    finally:
        served.stop()
    # The repository is gone: a fresh venv still comes from the cache (the wheel built from
    # that commit), offline.
    shutil.rmtree(app / ".venv")
    r = pypm("sync", "--offline", cwd=app)
    assert r.returncode == 0, r.stderr
    r = run_py(pypm, app, "import lib; print(lib.VALUE)")
    assert (r.returncode, r.stdout) == (0, "one\n"), r.stderr


def test_a_branch_stays_pinned_until_upgraded_and_a_new_reference_relocks(pypm, world):
    index, tmp = world
    repo = make_repo(tmp / "repo")
    # a backend that writes into its source tree, as setuptools does (build/, *.egg-info): the
    # build gets a copy, and the checkout in the cache stays as git made it
    backend = repo / "_backend.py"
    backend.write_text(backend.read_text().replace(
        "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n",
        "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n"
        "    open('BUILT-HERE', 'w').close()\n"))
    git("commit", "-q", "-am", "a backend that writes", cwd=repo)
    git("tag", "-f", "v1", cwd=repo)
    first = git("rev-parse", "HEAD", cwd=repo)
    url = repo.as_uri()
    tool = f'\n[tool.pypm.sources]\nlib = {{ git = "{url}", branch = "main" }}\n'
    app = write_app(tmp / "app", index.url, ["lib"], tool)
    assert pypm("sync", cwd=app).returncode == 0
    assert lock_of(app)["lib"].source == {"git": f"{url}?branch=main#{first}"}
    checkout = pypm.cache_dir / "git" / "trees" / first
    assert (checkout / "pyproject.toml").is_file() and not (checkout / "BUILT-HERE").exists()
    second = commit_change(repo, "", "0.4.0", "two")
    # the branch moved on: the lock is still current (its inputs did not change), and a relock
    # for another reason keeps the pinned commit
    assert pypm("lock", "--check", cwd=app).returncode == 0
    text = (app / "pyproject.toml").read_text()
    (app / "pyproject.toml").write_text(text.replace('version = "1.0"', 'version = "1.1"'))
    assert pypm("lock", cwd=app).returncode == 0
    assert lock_of(app)["lib"].source == {"git": f"{url}?branch=main#{first}"}
    # --upgrade-package follows the branch
    r = pypm("lock", "--upgrade-package", "lib", cwd=app)
    assert r.returncode == 0, r.stderr
    lib = lock_of(app)["lib"]
    assert lib.source == {"git": f"{url}?branch=main#{second}"} and lib.version == "0.4.0"
    r = run_py(pypm, app, "import lib; print(lib.VALUE)")
    assert (r.returncode, r.stdout) == (0, "two\n"), r.stderr
    assert installed(app / ".venv")["lib"] == "0.4.0"
    # another reference is another input: the lock is stale, and run relocks to the tag
    (app / "pyproject.toml").write_text((app / "pyproject.toml").read_text().replace('branch = "main"', 'tag = "v1"'))
    assert pypm("lock", "--check", cwd=app).returncode != 0
    r = run_py(pypm, app, "import lib; print(lib.VALUE)")
    assert (r.returncode, r.stdout) == (0, "one\n"), r.stderr
    assert lock_of(app)["lib"].source == {"git": f"{url}?tag=v1#{first}"}


@pytest.mark.parametrize("ref, expect", [
    ("@nope", "has no rev 'nope'"),
    ("#subdirectory=missing", "has no directory 'missing'"),
])
def test_a_revision_or_directory_that_is_not_there_is_a_clear_error(pypm, world, ref, expect):
    index, tmp = world
    repo = make_repo(tmp / "repo")
    app = write_app(tmp / "app", index.url, [f"lib @ git+{repo.as_uri()}{ref}"])
    r = pypm("sync", cwd=app)
    assert r.returncode != 0 and expect in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (app / "pypm.lock").exists() and not (app / ".venv").exists()


def test_add_by_git_url_writes_the_requirement_and_remove_takes_it_away(pypm, world):
    index, tmp = world
    repo = make_repo(tmp / "repo")
    app = write_app(tmp / "app", index.url, [])
    req = f"lib @ git+{repo.as_uri()}@v1"
    r = pypm("add", req, cwd=app)
    assert r.returncode == 0, r.stderr
    assert tomllib.loads((app / "pyproject.toml").read_text())["project"]["dependencies"] == [req]
    assert installed(app / ".venv") == {"lib": "0.3.0", "alpha": "1.0"}
    r = pypm("remove", "lib", cwd=app)
    assert r.returncode == 0, r.stderr
    assert installed(app / ".venv") == {}
    # the URL alone (as uv takes it): named by the commit's pyproject.toml
    r = pypm("add", f"git+{repo.as_uri()}@v1", cwd=app)
    assert r.returncode == 0, r.stderr
    assert tomllib.loads((app / "pyproject.toml").read_text())["project"]["dependencies"] == [req]
    assert installed(app / ".venv") == {"lib": "0.3.0", "alpha": "1.0"}
    r = pypm("add", f"git+{repo.as_uri()}@v9", cwd=app)  # no such tag: said, nothing changed
    assert r.returncode == 5 and "has no rev 'v9'" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert tomllib.loads((app / "pyproject.toml").read_text())["project"]["dependencies"] == [req]


def test_pypm_x_and_a_script_take_a_git_repository_and_a_wheel_url(pypm, world, dists):
    index, tmp = world
    repo = make_repo(tmp / "repo")
    work = tmp / "work"
    work.mkdir()
    r = pypm("x", "--index-url", index.url, "--from", f"lib @ git+{repo.as_uri()}@v1",
             "python", "-c", "import lib; print(lib.VALUE)", cwd=work)
    assert (r.returncode, r.stdout) == (0, "one\n"), r.stderr
    r = pypm("x", "--index-url", index.url, "--from", f"git+{repo.as_uri()}@v1",  # (the same environment)
             "python", "-c", "import lib; print(lib.VALUE)", cwd=work)
    assert (r.returncode, r.stdout) == (0, "one\n") and "Resolved" not in r.stderr, r.stderr
    wheel = dists.wheel("gamma", "4.0")
    index.add(wheel)
    (work / "s.py").write_text(
        "# /// script\n"
        f'# dependencies = ["lib @ git+{repo.as_uri()}@v1", "gamma @ {index.file_url(wheel.name)}"]\n'
        f'# [tool.pypm]\n# index-url = "{index.url}"\n'
        "# ///\nimport gamma, lib\nprint(lib.VALUE, gamma.__name__)\n")
    r = pypm("run", "s.py", cwd=work)
    assert (r.returncode, r.stdout) == (0, "one gamma\n"), r.stderr
    # a file: URL stays refused there: the environment is not beside the script
    (work / "t.py").write_text('# /// script\n# dependencies = ["lib @ file:///tmp/lib"]\n# ///\n')
    r = pypm("run", "t.py", cwd=work)
    assert r.returncode == 3 and "a direct URL, which pypm cannot lock yet" in r.stderr, r.stderr


def test_a_repository_whose_pyproject_leaves_the_version_to_its_backend_is_locked_from_it(pypm, world):
    index, tmp = world
    repo = make_repo(tmp / "repo")
    text = (repo / "pyproject.toml").read_text().replace('version = "0.3.0"\n', 'dynamic = ["version"]\n')
    (repo / "pyproject.toml").write_text(text)
    (repo / "VERSION").write_text("0.9.0\n")  # what the in-tree backend reads
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "version from the backend", cwd=repo)
    app = write_app(tmp / "app", index.url, [f"lib @ git+{repo.as_uri()}@main"])
    r = pypm("sync", cwd=app)
    assert r.returncode == 0, r.stderr
    assert f"Reading the metadata of lib ({repo.as_uri()}?rev=main) from its build backend" in r.stderr, r.stderr
    assert "git/trees" not in r.stderr  # the repository is named, not its tree in the cache
    assert lock_of(app)["lib"].version == "0.9.0" and installed(app / ".venv")["lib"] == "0.9.0"
    # the commit's metadata is kept: locking it again does not run the backend
    (app / "pypm.lock").unlink()
    r = pypm("lock", cwd=app)
    assert r.returncode == 0 and "Reading the metadata" not in r.stderr, r.stderr
    assert lock_of(app)["lib"].version == "0.9.0"
    # --no-build: refused, naming the repository (not the checkout in the cache) and the key
    (app / "pypm.lock").unlink()
    r = pypm("lock", "--no-build", cwd=app)
    assert r.returncode == 3, r.stderr
    assert f"lib from {repo.as_uri()} (rev main): pyproject.toml: version is listed in `project.dynamic`" in r.stderr
    assert "git/trees" not in r.stderr and not (app / "pypm.lock").exists()


@pytest.mark.live
def test_live_a_version_from_git_tags_setuptools_scm(pypm, tmp_path):
    """setuptools-scm (from the default index) finds the version in the checkout's
    .git_archival.txt, which pypm writes from `git describe` since the checkout has no .git."""
    repo = tmp_path / "repo"
    (repo / "src" / "scmlib").mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=repo)
    (repo / "src" / "scmlib" / "__init__.py").write_text('VALUE = "scm"\n')
    (repo / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64", "setuptools-scm>=8"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "scmlib"\ndynamic = ["version"]\nrequires-python = ">=3.9"\n\n[tool.setuptools_scm]\n')
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "one", cwd=repo)
    git("tag", "v2.3.0", cwd=repo)
    (repo / "src" / "scmlib" / "__init__.py").write_text('VALUE = "two"\n')
    git("commit", "-q", "-am", "two", cwd=repo)
    head = git("rev-parse", "--short=7", "HEAD", cwd=repo)
    app = tmp_path / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text('[project]\nname = "app"\nversion = "1"\nrequires-python = ">=3.11"\n'
                                        f'dependencies = ["scmlib @ git+{repo.as_uri()}@main"]\n')
    r = pypm("sync", cwd=app, timeout=900)
    assert r.returncode == 0, r.stderr
    assert lock_of(app)["scmlib"].version == f"2.3.1.dev1+g{head}"  # setuptools-scm's guess-next-dev
    r = run_py(pypm, app, "import importlib.metadata as m, scmlib; print(m.version('scmlib'), scmlib.VALUE)")
    assert (r.returncode, r.stdout) == (0, f"2.3.1.dev1+g{head} two\n"), r.stderr
    shutil.rmtree(app)  # a lock against the default index never outlives the test


def test_submodules_are_checked_out_at_the_commits_the_tree_pins(pypm, world):
    """A package whose module is partly a submodule (a relative URL, nested once more): the
    checkout holds each submodule at the commit its gitlink pins, not its branch's newest."""
    index, tmp = world

    def small_repo(path: Path, files: dict[str, str]) -> Path:
        path.mkdir(parents=True)
        git("init", "-q", "-b", "main", cwd=path)
        for name, text in files.items():
            (path / name).write_text(text)
        git("add", "-A", cwd=path)
        git("commit", "-q", "-m", "first", cwd=path)
        return path

    inner = small_repo(tmp / "inner", {"__init__.py": "", "deep.py": "VALUE = 'deep pinned'\n"})
    vendored = small_repo(tmp / "vendored", {"__init__.py": "", "vmod.py": "VALUE = 'pinned'\n"})
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", "../inner", "inner", cwd=vendored)
    git("commit", "-q", "-m", "with inner", cwd=vendored)
    repo = make_repo(tmp / "repo")
    (repo / "src" / "lib" / "__init__.py").write_text(
        "from .vendor.vmod import VALUE as V\nfrom .vendor.inner.deep import VALUE as D\nVALUE = V + ' / ' + D\n")
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", "../vendored", "src/lib/vendor", cwd=repo)
    git("commit", "-q", "-am", "vendor it", cwd=repo)
    # The submodule's branch moves on; the superproject still pins the first commit.
    (vendored / "vmod.py").write_text("VALUE = 'newer, not pinned'\n")
    git("commit", "-q", "-am", "newer", cwd=vendored)
    (inner / "deep.py").write_text("VALUE = 'newer, not pinned'\n")
    git("commit", "-q", "-am", "newer", cwd=inner)

    app = write_app(tmp / "app", index.url, [f"lib @ git+file://{repo}@main"])
    r = pypm("sync", cwd=app)
    assert r.returncode == 0, r.stderr
    r = run_py(pypm, app, "import lib; print(lib.VALUE)")
    assert (r.returncode, r.stdout) == (0, "pinned / deep pinned\n"), r.stderr
    tree = pypm.cache_dir / "git" / "trees" / git("rev-parse", "HEAD", cwd=repo)
    assert (tree / "src" / "lib" / "vendor" / "inner" / "deep.py").is_file()
    assert not (tree / "src" / "lib" / "vendor" / ".git").exists()  # files only, as the superproject's


@pytest.mark.parametrize("base, url, expect", [
    ("https://host/org/lib.git", "../other.git", "https://host/org/other.git"),
    ("https://host/org/lib.git", "./sub.git", "https://host/org/lib.git/sub.git"),
    ("https://host/org/lib.git/", "../../x/y.git", "https://host/x/y.git"),
    ("file:///srv/git/lib", "../vendored", "file:///srv/git/vendored"),
    ("https://host/org/lib.git", "ssh://git@other/z.git", "ssh://git@other/z.git"),
])
def test_a_relative_submodule_url_is_taken_from_the_repositorys(base, url, expect):
    from pypm.gitsource import _submodule_url

    assert _submodule_url(base, url) == expect


@pytest.mark.parametrize("path", ["evil/x", "../outside", "file.txt"])
def test_a_submodule_path_through_a_symlink_or_out_of_the_tree_is_refused(tmp_path, monkeypatch, path):
    """A hostile tree listing (git itself cannot make one, but a crafted repository may): the
    submodule's files never land through a symlink, outside the tree or over a file."""
    from pypm import gitsource
    from pypm.errors import IndexError_

    tree = tmp_path / "tree"
    tree.mkdir()
    outside = tmp_path / "outside-dir"
    outside.mkdir()
    (tree / "evil").symlink_to(outside)
    (tree / "file.txt").write_text("a file of the tree")
    monkeypatch.setattr(gitsource, "_gitlinks", lambda db, commit, what: {path: "a" * 40})
    monkeypatch.setattr(gitsource, "_gitmodules", lambda db, commit, what: {path: "https://host/sub.git"})
    with pytest.raises(IndexError_) as e:
        gitsource._submodules(tmp_path / "db", "https://host/lib.git", "b" * 40, tmp_path, tree, "lib",
                              cache=tmp_path / "cache", offline=True, depth=1)
    assert f"submodule path {path!r}" in e.value.message
    assert list(outside.iterdir()) == [] and (tree / "file.txt").read_text() == "a file of the tree"


def test_a_tree_with_a_link_out_of_itself_is_a_clear_error(pypm, world):
    """tarfile's data filter refuses a symlink that leaves the tree: said as such, not a traceback."""
    index, tmp = world
    repo = make_repo(tmp / "repo")
    (repo / "escape").symlink_to("../../../../etc/passwd")
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "a link out", cwd=repo)
    app = write_app(tmp / "app", index.url, [f"lib @ git+file://{repo}@main"])
    r = pypm("lock", cwd=app)
    assert r.returncode == 5 and "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert "holds 'escape', which pypm does not unpack" in r.stderr, r.stderr
    assert not (app / "pypm.lock").exists()
