"""End-to-end `pypm x`: a tool from a real index on 127.0.0.1, in an environment of its own, run
in the real sandbox: what it can see, write and reach, checked from the host."""

from __future__ import annotations

from pathlib import Path

import pytest

PROBE = '''\
import os, socket, sys

__version__ = "{version}"


def main():
    secret, port = sys.argv[1], int(sys.argv[2])
    print("version", __version__)
    print("cwd", os.getcwd())
    with open("out.txt", "w") as f:
        f.write("written by the tool")
    try:
        with open("pyproject.toml", "a") as f:
            f.write("# the tool was here")
        print("pyproject writable")
    except OSError:
        print("pyproject read-only")
    try:
        with open(secret) as f:
            print("secret", f.read())
    except OSError:
        print("secret hidden")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        print("net reached")
    except OSError:
        print("net blocked")
    try:
        import helper  # noqa: F401
        print("helper importable")
    except ImportError:
        print("helper missing")
'''


@pytest.fixture
def tool(dists, index_server, tmp_path, pypm):
    def probe(version: str) -> Path:
        return dists.wheel("probe-tool", version, modules={"probe_tool/__init__.py": PROBE.format(version=version)},
                           entry_points={"console_scripts": {"probe": "probe_tool:main"}})

    probe("1.0")
    dists.wheel("helper", "1.0")
    server = index_server()
    work = tmp_path / "work"
    work.mkdir()
    (work / "pyproject.toml").write_text('[project]\nname = "mine"\nversion = "1"\n')
    secret = pypm.home / "secret.txt"
    secret.write_text("s3cr3t")
    return server, work, secret, probe


def x(pypm, server, work, secret, *flags):
    r = pypm("x", "--index-url", server.url, *flags, str(secret), str(server.port), cwd=work)
    return r, dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)


def test_a_tool_runs_sandboxed_in_the_current_directory(pypm, tool):
    server, work, secret, _ = tool
    r, out = x(pypm, server, work, secret, "--from", "probe-tool", "probe")
    assert r.returncode == 0, r.stderr
    assert out["version"] == "1.0" and out["cwd"] == str(work.resolve())
    assert (work / "out.txt").read_text() == "written by the tool"  # the current directory is writable
    assert out["pyproject"] == "read-only" and "tool was here" not in (work / "pyproject.toml").read_text()
    assert out["secret"] == "hidden"  # the host's home is not there
    assert out["net"] == "blocked"  # no network: the index on the host's 127.0.0.1 is out of reach
    assert out["helper"] == "missing"
    assert "Resolved 1 packages" in r.stderr

    # again: the environment is current; no resolver, no request to the index
    server.clear_requests()
    r, out = x(pypm, server, work, secret, "--from", "probe-tool", "probe")
    assert r.returncode == 0, r.stderr
    assert out["version"] == "1.0" and "Resolved" not in r.stderr and "Synced" not in r.stderr
    assert server.requests == []

    # --from and --with in their plain forms are keyed without packaging (~28 ms of imports)
    r = pypm("x", "--index-url", server.url, "--from", "probe-tool", "probe", str(secret), str(server.port), cwd=work,
             env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 0 and "packaging.requirements" not in r.stderr, r.stderr

    # the sandbox's flags apply: the host's network; unsandboxed, the host's files
    r, out = x(pypm, server, work, secret, "--network", "host", "--with", "helper", "--from", "probe-tool", "probe")
    assert r.returncode == 0, r.stderr
    assert out["net"] == "reached" and out["helper"] == "importable" and out["secret"] == "hidden"
    r, out = x(pypm, server, work, secret, "--no-sandbox", "--from", "probe-tool", "probe")
    assert r.returncode == 0, r.stderr
    assert out["secret"] == "s3cr3t" and out["pyproject"] == "writable"


def test_versions_pins_and_upgrade(pypm, tool):
    server, work, secret, probe = tool
    r, out = x(pypm, server, work, secret, "--from", "probe-tool", "probe")
    assert out["version"] == "1.0", r.stderr
    server.add(probe("2.0"))
    r, out = x(pypm, server, work, secret, "--from", "probe-tool", "probe")
    assert out["version"] == "1.0", r.stderr  # the environment keeps its first resolution
    r, out = x(pypm, server, work, secret, "--upgrade", "--from", "probe-tool", "probe")
    assert out["version"] == "2.0", r.stderr
    r, out = x(pypm, server, work, secret, "--from", "probe-tool==1.0", "probe")
    assert out["version"] == "1.0", r.stderr


def test_name_at_version_and_errors(pypm, tool, dists):
    server, work, secret, _ = tool
    dists.wheel("probe", "3.0", modules={"probe/__init__.py": PROBE.format(version="3.0")},
                entry_points={"console_scripts": {"probe": "probe:main"}})
    server.add(dists.dir / "probe-3.0-py3-none-any.whl")
    r, out = x(pypm, server, work, secret, "probe@3.0")
    assert r.returncode == 0, r.stderr
    assert out["version"] == "3.0"
    r, out = x(pypm, server, work, secret, "probe")
    assert out["version"] == "3.0", r.stderr
    # NAME@latest: the newest release, as --upgrade, in the bare name's environment
    dists.wheel("probe", "3.1", modules={"probe/__init__.py": PROBE.format(version="3.1")},
                entry_points={"console_scripts": {"probe": "probe:main"}})
    server.add(dists.dir / "probe-3.1-py3-none-any.whl")
    r, out = x(pypm, server, work, secret, "probe")
    assert out["version"] == "3.0", r.stderr  # kept
    r, out = x(pypm, server, work, secret, "probe@latest")
    assert out["version"] == "3.1", r.stderr
    r, out = x(pypm, server, work, secret, "probe")
    assert out["version"] == "3.1", r.stderr

    r = pypm("x", "--index-url", server.url, "--from", "probe-tool", "nope", cwd=work)
    assert r.returncode == 2, r.stderr
    assert "nope is not a command of probe-tool" in r.stderr and "it provides: probe" in r.stderr
    r = pypm("x", "--index-url", server.url, "probe@", cwd=work)
    assert r.returncode == 2 and "give a version after @" in r.stderr, r.stderr
    r = pypm("x", "--index-url", server.url, "--from", "not valid!", "probe", cwd=work)
    assert r.returncode == 2 and "--from 'not valid!' is not a valid requirement" in r.stderr, r.stderr
    r = pypm("x", "--index-url", server.url, cwd=work)
    assert r.returncode == 2 and "`pypm x` needs a command" in r.stderr, r.stderr
    r = pypm("x", "--index-url", server.url, "no-such-tool", cwd=work)
    assert r.returncode == 5 and "no-such-tool" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_prune_removes_tool_environments_unused_for_its_days(pypm, tool):
    import os
    import time

    server, work, secret, _ = tool
    r, out = x(pypm, server, work, secret, "--from", "probe-tool", "probe")
    assert r.returncode == 0, r.stderr
    r, out = x(pypm, server, work, secret, "--from", "probe-tool==1.0", "probe")
    assert r.returncode == 0, r.stderr
    envs = sorted((pypm.cache_dir / "tools").iterdir())
    assert len(envs) == 2
    old = time.time() - 40 * 86400
    os.utime(envs[0], (old, old))
    assert pypm("cache", "prune", cwd=work).returncode == 0
    assert sorted((pypm.cache_dir / "tools").iterdir()) == envs[1:]
    # a run counts as a use: the remaining one survives a prune after it ran, even if made long ago
    os.utime(envs[1], (old, old))
    r, out = x(pypm, server, work, secret, "--from", "probe-tool==1.0" if "==" in (envs[1] / "pyproject.toml").read_text()
               else "probe-tool", "probe")
    assert r.returncode == 0, r.stderr
    assert pypm("cache", "prune", cwd=work).returncode == 0
    assert sorted((pypm.cache_dir / "tools").iterdir()) == envs[1:]


@pytest.mark.parametrize("where", ["home", "root", "cache-parent"])
def test_the_home_directory_or_what_holds_it_is_never_bound_in(pypm, tool, where):
    """From the home directory (or `/`, or a directory holding the cache) the tool would see the
    user's keys and could write into the other tools' environments: refused, exit 8."""
    server, work, secret, _ = tool
    cwd = {"home": pypm.home, "root": Path("/"), "cache-parent": work}[where]
    env = {"PYPM_CACHE_DIR": str(work / "sub" / "cache")} if where == "cache-parent" else {}
    r = pypm("x", "--index-url", server.url, "--from", "probe-tool", "probe", str(secret), "1", cwd=cwd, env=env)
    assert r.returncode == 8, r.stderr
    assert "pypm x binds the current directory into the sandbox" in r.stderr and "cd into" in r.stderr
    assert ("pypm's cache" if where == "cache-parent" else "your home directory") in r.stderr
    assert "Traceback" not in r.stderr


def test_a_current_tool_runs_from_the_entry_points_fast_path(pypm, tool, dists):
    """`pypm x TOOL` with TOOL's environment current runs without the CLI (toolrun.fast_x), as the
    CLI would have run it; what it does not handle goes to the CLI, which says what is wrong."""
    server, work, secret, _ = tool
    dists.wheel("probe", "1.0", modules={"probe/__init__.py": PROBE.format(version="1.0")},
                entry_points={"console_scripts": {"probe": "probe:main"}})
    server.add(dists.dir / "probe-1.0-py3-none-any.whl")  # (a package whose command is its name)
    env = {"PYPM_INDEX_URL": server.url, "PYTHONPROFILEIMPORTTIME": "1", "PYPM_NO_LAUNCHER": "1"}

    def run(*args, cwd=work):
        r = pypm("x", *args, cwd=cwd, env=env)
        imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
        r.stderr = "\n".join(line for line in r.stderr.splitlines() if not line.startswith("import time:"))
        out = dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
        r.imported = imported
        return ("cli" if "pypm.cli" in imported else "fast"), r, out

    how, r, out = run("probe", str(secret), str(server.port))
    assert how == "cli" and r.returncode == 0 and out["version"] == "1.0", r.stderr  # made by the CLI
    server.clear_requests()
    how, r, fast = run("probe", str(secret), str(server.port))
    assert how == "fast" and r.returncode == 0, r.stderr
    assert fast == out and fast["secret"] == "hidden" and fast["net"] == "blocked" and fast["pyproject"] == "read-only"
    assert server.requests == []
    assert "pypm.toolrun" in r.imported
    assert not {"argparse", "pypm.project", "packaging", "httpx", "tomllib", "dataclasses"} & r.imported
    how, r, out = run("--no-sandbox", "probe", str(secret), str(server.port))
    assert how == "fast" and r.returncode == 0 and out["secret"] == "s3cr3t" and out["pyproject"] == "writable", r.stderr
    how, r, out = run("--network", "host", "probe", str(secret), str(server.port))
    assert how == "fast" and r.returncode == 0 and out["net"] == "reached" and out["pyproject"] == "read-only", r.stderr
    how, r, out = run("--read-only-project", "probe", str(secret), str(server.port))  # (the probe writes out.txt)
    assert how == "fast" and r.returncode == 1 and "Read-only file system: 'out.txt'" in r.stderr, r.stderr
    # what the fast path leaves to the CLI
    how, r, _ = run("--frozen", "probe")  # not a flag of `pypm x`
    assert how == "cli" and r.returncode == 2 and "--frozen" in r.stderr, r.stderr
    how, r, out = run("--no-sandbox", "--network", "host", "probe", str(secret), str(server.port))
    assert how == "cli" and r.returncode == 0 and out["secret"] == "s3cr3t", r.stderr
    for _ in range(2):  # made the first time; a package without that command both times
        how, r, _ = run("helper")
        assert how == "cli" and r.returncode == 2 and "helper is not a command of helper" in r.stderr, r.stderr
    # from the home directory: refused there too (exit 8), before anything runs
    how, r, _ = run("probe", str(secret), str(server.port), cwd=pypm.home)
    assert how == "fast" and r.returncode == 8 and "your home directory" in r.stderr and "Traceback" not in r.stderr


def test_a_cache_directory_that_cannot_hold_the_environment_is_a_clear_error(pypm, tool, tmp_path):
    server, work, secret, _ = tool
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = pypm("x", "--index-url", server.url, "--from", "probe-tool", "probe", cwd=work, env={"PYPM_CACHE_DIR": str(blocker)})
    assert r.returncode == 7, r.stderr
    assert f"cannot make the cache directory {blocker}/tools/" in r.stderr and "set PYPM_CACHE_DIR" in r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr


def test_a_bad_sandbox_flag_is_refused_before_the_environment_is_made(pypm, tool, tmp_path):
    server, work, secret, _ = tool
    server.clear_requests()
    for flags, words in ((["--limit", "memroy=2G"], "--limit unknown limit 'memroy'"),
                         (["--bind", "not-here"], "--bind not-here: not-here does not exist")):
        r = pypm("x", "--index-url", server.url, *flags, "--from", "probe-tool", "probe", cwd=work)
        assert r.returncode == 8 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    # Refused before any lock or sync: the index was not asked, and the tool's environment
    # project (its pyproject.toml, written first) has neither a lock nor a venv.
    assert server.requests == []
    made = [p.name for d in (pypm.cache_dir / "tools").iterdir() for p in d.iterdir()]
    assert "pypm.lock" not in made and ".venv" not in made, made


def test_from_and_with_in_plain_forms_take_the_fast_path_too(pypm, tool):
    """`pypm x --from REQ [--with REQ]... CMD` with the environment current runs from the entry
    point as `pypm x TOOL` does, in the same environment the CLI made for those flags; other
    requirement forms, and a command the environment lacks, go to the CLI."""
    server, work, secret, _ = tool
    env = {"PYPM_INDEX_URL": server.url, "PYTHONPROFILEIMPORTTIME": "1", "PYPM_NO_LAUNCHER": "1"}

    def run(*args):
        r = pypm("x", *args, cwd=work, env=env)
        imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
        r.stderr = "\n".join(line for line in r.stderr.splitlines() if not line.startswith("import time:"))
        out = dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
        return ("cli" if "pypm.cli" in imported else "fast"), r, out, imported

    probe = [str(secret), str(server.port)]
    for flags in (["--from", "probe-tool"], ["--from=probe-tool==1.0", "--with", "helper"],
                  ["--with=helper==1.0", "--from", "probe-tool"]):
        how, r, made, _ = run(*flags, "probe", *probe)
        assert how == "cli" and r.returncode == 0, (flags, r.stderr)  # the environment made by the CLI
        server.clear_requests()
        how, r, out, imported = run(*flags, "probe", *probe)
        assert how == "fast" and r.returncode == 0 and out == made, (flags, r.stderr)
        assert server.requests == [] and not {"argparse", "packaging", "httpx", "tomllib"} & imported
        assert out["helper"] == ("helper importable" if any("helper" in f for f in flags) else "helper missing").split(" ", 1)[1]
    # one environment per requirement list, as the CLI keys them: three so far
    assert len(list((pypm.cache_dir / "tools").iterdir())) == 3
    how, r, _, _ = run("--from", "probe-tool>=1", "probe", *probe)  # not a plain form: the CLI
    assert how == "cli" and r.returncode == 0, r.stderr
    how, r, _, _ = run("--from", "probe-tool", "helper-cmd")  # not a command of the environment
    assert how == "cli" and r.returncode == 2 and "helper-cmd is not a command of probe-tool" in r.stderr, r.stderr
    how, r, _, _ = run("--from", "probe-tool", "../probe")  # not a plain command name
    assert how == "cli" and r.returncode != 0, r.stderr


def test_env_file_reaches_the_tool(pypm, tool):
    """`pypm x --env-file F` (as uvx's): the tool gets the file's variables, sandboxed and not; a
    missing file fails before the tool's environment is made."""
    server, work, secret, _ = tool
    (work / "vars.env").write_text("PROBE_TOKEN=from-the-file\n")
    for flags in ((), ("--no-sandbox",)):
        r = pypm("x", "--index-url", server.url, *flags, "--env-file", "vars.env", "--from", "probe-tool", "python",
                 "-c", "import os; print(os.environ.get('PROBE_TOKEN'))", cwd=work)
        assert r.returncode == 0 and r.stdout == "from-the-file\n", (flags, r.stderr)
    # PYPM_ENV_FILE, and --no-env-file, on x's fast path (the plain form, the environment current:
    # the index from PYPM_INDEX_URL) and through the CLI (--index-url), sandboxed and not
    env = {"PYPM_INDEX_URL": server.url, "PYPM_ENV_FILE": "vars.env", "PYTHONPROFILEIMPORTTIME": "1",
           "PYPM_NO_LAUNCHER": "1"}
    code = "import os; print(os.environ.get('PROBE_TOKEN'))"
    assert pypm("x", "--from", "probe-tool", "python", "-c", "pass", cwd=work, env=env).returncode == 0
    for more, out, path in (((), "from-the-file\n", "fast"), (("--no-env-file",), "None\n", "fast"),
                            (("--index-url", server.url), "from-the-file\n", "cli"),
                            (("--index-url", server.url, "--no-env-file"), "None\n", "cli")):
        for flags in ((), ("--no-sandbox",)):
            r = pypm("x", *more, *flags, "--from", "probe-tool", "python", "-c", code, cwd=work, env=env)
            imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
            assert r.returncode == 0 and r.stdout == out, (more, flags, r.stderr[-2000:])
            assert ("cli" if "pypm.cli" in imported else "fast") == path, (more, flags)
    server.clear_requests()
    r = pypm("x", "--index-url", server.url, "--env-file", "nope.env", "--from", "helper", "python", "-c", "pass",
             cwd=work)
    assert r.returncode == 2 and "--env-file nope.env: no such file" in r.stderr, r.stderr
    assert server.requests == []


def test_from_a_wheel_s_url_names_the_tool_by_its_file_name(pypm, tool, dists, index_server, tmp_path):
    """`pypm x --from https://host/probe_tool-3.0-py3-none-any.whl probe` (as uvx): the URL alone
    is `probe-tool @ URL`, locked with the file's hash; a URL that names no wheel or sdist needs
    `NAME @`, which the error says."""
    server, work, secret, probe = tool
    files = tmp_path / "files"
    files.mkdir()
    wheel = probe("3.0")
    (files / wheel.name).write_bytes(wheel.read_bytes())
    host = index_server([files])
    url = host.file_url(wheel.name)
    r, out = x(pypm, server, work, secret, "--from", url, "probe")
    assert r.returncode == 0 and out["version"] == "3.0", r.stderr
    r = pypm("x", "--index-url", server.url, "--from", host.base + "/files/", "probe", cwd=work)
    assert r.returncode == 2 and "a URL needs a name (`NAME @ URL`) unless it names a wheel or an sdist" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
