"""`pypm tool install|upgrade|uninstall|list|dir` (as uv's `uv tool`): a tool from a real index on
127.0.0.1 kept in an environment of its own, its commands in the bin directory, run in the real
sandbox (checked from the host: what the command could read, write and reach)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.test_x import tool  # noqa: F401  (the fixture)


@pytest.fixture
def world(tool, pypm):  # noqa: F811  (pytest passes test_x's fixture)
    """test_x's tool (probe-tool 1.0 with its `probe` command, helper, an index, a work directory,
    a secret in the home), and where the installs go by default."""
    server, work, secret, probe = tool
    return server, work, secret, probe, pypm.home / ".local" / "bin", pypm.home / ".local" / "share" / "pypm" / "tools"


def command(pypm, path: Path, work: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """Run an installed command as a shell would: by its path, with pypm's environment."""
    r = subprocess.run([str(path), *args], cwd=work, env=pypm.env, capture_output=True, text=True, timeout=120)
    return r, dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)


def test_install_run_upgrade_and_uninstall_a_sandboxed_tool(pypm, world):
    server, work, secret, probe, bin_dir, tools = world
    r = pypm("tool", "install", "--index-url", server.url, "probe-tool", cwd=work)
    assert r.returncode == 0, r.stderr
    assert f"Installed probe-tool 1.0: probe in {bin_dir}" in r.stderr
    assert f"warning: {bin_dir} is not on PATH" in r.stderr
    shim = bin_dir / "probe"
    assert os.access(shim, os.X_OK) and not shim.is_symlink()
    assert (tools / "probe-tool" / "pypm-tool.json").is_file()
    assert not (pypm.cache_dir / "tools").exists() or not any((pypm.cache_dir / "tools").iterdir())
    # the command runs sandboxed in the directory it is run from, without asking the index
    server.clear_requests()
    r, out = command(pypm, shim, work, str(secret), str(server.port))
    assert r.returncode == 0, r.stderr
    assert out["version"] == "1.0" and out["cwd"] == str(work.resolve())
    assert out["secret"] == "hidden" and out["net"] == "blocked" and out["pyproject"] == "read-only"
    assert (work / "out.txt").read_text() == "written by the tool"
    assert server.requests == []
    # `pypm x` by the bare name takes the installed environment (as uvx): nothing made in the cache
    r = pypm("x", "probe-tool", str(secret), str(server.port), cwd=work)  # (no command of that name)
    assert r.returncode == 2 and "probe-tool is not a command of probe-tool" in r.stderr, r.stderr
    r = pypm("x", "--from", "probe-tool", "probe", str(secret), str(server.port), cwd=work)
    assert r.returncode == 0 and "version 1.0" in r.stdout, r.stderr
    assert not (pypm.cache_dir / "tools").exists() or not any((pypm.cache_dir / "tools").iterdir())
    r = pypm("tool", "list", cwd=work)
    assert r.returncode == 0 and r.stdout == "probe-tool v1.0\n- probe\n", r.stdout
    r = pypm("tool", "list", "--show-paths", cwd=work)
    assert f"probe-tool v1.0 ({tools / 'probe-tool'})\n- probe ({shim})\n" == r.stdout
    assert pypm("tool", "dir", cwd=work).stdout == f"{tools}\n"
    assert pypm("tool", "dir", "--bin", cwd=work).stdout == f"{bin_dir}\n"
    # installing it again changes nothing
    r = pypm("tool", "install", "--index-url", server.url, "probe-tool", cwd=work)
    assert r.returncode == 0 and "Reinstalled probe-tool 1.0" in r.stderr, r.stderr
    # upgrade: the newest release, the same command
    server.add(probe("2.0"))
    r = pypm("tool", "upgrade", "probe-tool", cwd=work)
    assert r.returncode == 0 and "Upgraded probe-tool 1.0 -> 2.0" in r.stderr, r.stderr
    r, out = command(pypm, shim, work, str(secret), str(server.port))
    assert r.returncode == 0 and out["version"] == "2.0", r.stderr
    r = pypm("tool", "upgrade", "--all", cwd=work)
    assert r.returncode == 0 and "probe-tool 2.0 is the newest" in r.stderr, r.stderr
    # uninstall: the command and the environment are gone
    r = pypm("tool", "uninstall", "Probe_Tool", cwd=work)
    assert r.returncode == 0 and "Uninstalled probe-tool (probe)" in r.stderr, r.stderr
    assert not os.path.lexists(shim) and not (tools / "probe-tool").exists()
    assert pypm("tool", "list", cwd=work).stderr.strip() == "No tools installed"
    r = pypm("tool", "uninstall", "probe-tool", cwd=work)
    assert r.returncode == 2 and "probe-tool is not installed" in r.stderr, r.stderr


def test_install_flags_shape_the_commands(pypm, world):
    server, work, secret, _, bin_dir, tools = world
    shim = bin_dir / "probe"
    # the sandbox flags are the command's: here the host's network, and --with's package
    r = pypm("tool", "install", "--index-url", server.url, "--network", "host", "--with", "helper", "probe-tool==1.0",
             cwd=work)
    assert r.returncode == 0, r.stderr
    r, out = command(pypm, shim, work, str(secret), str(server.port))
    assert r.returncode == 0 and out["net"] == "reached" and out["helper"] == "importable", r.stderr
    assert out["secret"] == "hidden"
    # --no-sandbox: a link to the environment's own script, which runs on the host
    r = pypm("tool", "install", "--index-url", server.url, "--no-sandbox", "probe-tool", cwd=work)
    assert r.returncode == 0 and "(unsandboxed: --no-sandbox)" in r.stderr, r.stderr
    assert shim.is_symlink() and os.path.realpath(shim).startswith(str(tools / "probe-tool" / ".venv" / "bin"))
    r, out = command(pypm, shim, work, str(secret), str(server.port))
    assert r.returncode == 0 and out["secret"] == "s3cr3t" and out["helper"] == "missing", r.stderr
    assert "[unsandboxed]" in pypm("tool", "list", cwd=work).stdout
    r = pypm("tool", "install", "--no-sandbox", "--network", "host", "probe-tool", cwd=work)
    assert r.returncode == 2 and "--network with --no-sandbox" in r.stderr, r.stderr
    # a flag another action takes is refused, not ignored
    r = pypm("tool", "list", "--with", "helper", cwd=work)
    assert r.returncode == 2 and "unrecognized arguments: --with helper" in r.stderr, r.stderr


def test_a_file_pypm_did_not_put_there_is_kept_and_a_failed_install_leaves_nothing(pypm, dists, world):
    server, work, secret, _, bin_dir, tools = world
    bin_dir.mkdir(parents=True)
    mine = bin_dir / "probe"
    mine.write_text("#!/bin/sh\necho mine\n")
    r = pypm("tool", "install", "--index-url", server.url, "probe-tool", cwd=work)
    assert r.returncode == 2 and f"{mine} already exists, and pypm did not put it there" in r.stderr, r.stderr
    assert "--force" in r.stderr and "Traceback" not in r.stderr
    assert mine.read_text() == "#!/bin/sh\necho mine\n" and not (tools / "probe-tool").exists()
    r = pypm("tool", "install", "--index-url", server.url, "--force", "probe-tool", cwd=work)
    assert r.returncode == 0, r.stderr
    assert "# pypm tool: probe-tool" in mine.read_text()
    # a failed reinstall (2.0 brings a second command, and a file of the user's is in its way)
    # leaves the tool as it was: its environment synced back to 1.0, its receipt and command kept
    server.add(dists.wheel("probe-tool", "2.0", modules={"probe_tool/__init__.py": "def main(): print('two')\n"},
                           entry_points={"console_scripts": {"probe": "probe_tool:main", "probe2": "probe_tool:main"}}))
    (bin_dir / "probe2").write_text("#!/bin/sh\necho mine too\n")
    r = pypm("tool", "install", "--index-url", server.url, "probe-tool==2.0", cwd=work)
    assert r.returncode == 2 and f"{bin_dir / 'probe2'} already exists" in r.stderr, r.stderr
    sites = list((tools / "probe-tool" / ".venv").glob("lib/python*/site-packages"))
    assert [d.name for d in sites[0].glob("probe_tool-*.dist-info")] == ["probe_tool-1.0.dist-info"]
    assert pypm("tool", "list", cwd=work).stdout == "probe-tool v1.0\n- probe\n"
    assert (bin_dir / "probe2").read_text() == "#!/bin/sh\necho mine too\n"
    # a package without commands, and one the index lacks: said, nothing left behind
    r = pypm("tool", "install", "--index-url", server.url, "helper", cwd=work)
    assert r.returncode == 2 and "helper 1.0 provides no commands" in r.stderr, r.stderr
    assert not (tools / "helper").exists()
    r = pypm("tool", "install", "--index-url", server.url, "nosuchtool", cwd=work)
    assert r.returncode != 0 and "nosuchtool" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tools / "nosuchtool").exists()
    # the installed tool's environment is out of a sandboxed command's reach, even from above it
    r = pypm("x", "--from", "probe-tool", "probe", str(secret), str(server.port), cwd=pypm.home / ".local")
    assert r.returncode != 0 and "the tools pypm installed" in r.stderr, r.stderr


def test_an_install_takes_over_a_replayed_pypm_x_of_the_same_words(pypm, world):
    """A sandboxed `pypm x --from probe-tool probe` is recorded and replayed by the launcher; after
    `pypm tool install` the same words run the installed environment (its receipt is among the
    files the plan checks), and after uninstall the cache's again."""
    server, work, secret, probe, bin_dir, tools = world

    def x() -> str:
        r = pypm("x", "--from", "probe-tool", "probe", str(secret), str(server.port), cwd=work,
                 env={"PYPM_INDEX_URL": server.url})
        assert r.returncode == 0, r.stderr
        return dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)["version"]

    for _ in range(3):  # made, then recorded (a run right after the sync may find its files too fresh)
        assert x() == "1.0"
        time.sleep(0.15)
    server.add(probe("2.0"))
    r = pypm("tool", "install", "--index-url", server.url, "probe-tool", cwd=work)
    assert r.returncode == 0 and "Installed probe-tool 2.0" in r.stderr, r.stderr
    assert x() == "2.0"
    pypm("tool", "uninstall", "probe-tool", cwd=work, check=True)
    assert x() == "1.0"


def test_a_command_the_wheel_puts_in_bin_is_a_command_too(pypm, dists, world):
    """As ruff's binary: a file in the wheel's `.data/scripts/`, not an entry point, is one of the
    tool's commands (as uv's), and runs in the sandbox."""
    server, work, _, _, bin_dir, _ = world
    server.add(dists.wheel("bintool", "1.0", data={"scripts/bintool": b"#!/bin/sh\necho bintool ran in $PYPM_SANDBOX\n"}))
    r = pypm("tool", "install", "--index-url", server.url, "bintool", cwd=work)
    assert r.returncode == 0 and "Installed bintool 1.0: bintool in" in r.stderr, r.stderr
    r, _ = command(pypm, bin_dir / "bintool", work)
    assert r.returncode == 0 and r.stdout == "bintool ran in 1\n", r.stderr


def test_tool_run_is_pypm_x(pypm, world):
    """`pypm tool run` is `pypm x` (as `uv tool run` is uvx), with x's options: an installed tool's
    environment by its bare name, the index otherwise, and x's help."""
    server, work, secret, _, _, _ = world
    r = pypm("tool", "run", "--index-url", server.url, "--from", "probe-tool", "probe", str(secret),
             str(server.port), cwd=work)
    assert r.returncode == 0 and "version 1.0" in r.stdout and "net blocked" in r.stdout, r.stderr
    assert any((pypm.cache_dir / "tools").iterdir())  # (not installed: an environment in the cache)
    pypm("tool", "install", "--index-url", server.url, "probe-tool", cwd=work, check=True)
    server.clear_requests()
    r = pypm("-q", "tool", "run", "--from", "probe-tool", "probe", str(secret), str(server.port), cwd=work)
    assert r.returncode == 0 and "version 1.0" in r.stdout and r.stderr == "", r.stderr
    assert server.requests == []
    r = pypm("tool", "run", "--help", cwd=work)
    assert r.returncode == 0 and r.stdout.startswith("usage: pypm x "), r.stdout
    r = pypm("tool", "--help", cwd=work)
    assert "run " in r.stdout and "update-shell" in r.stdout, r.stdout


def test_update_shell_puts_the_bin_directory_on_path_once(pypm, world, tmp_path):
    """`pypm tool update-shell` (as uv's): the bin directory goes on PATH in ~/.profile and the
    user's shell's files, once; a login bash then has it; a file's own lines and mode are kept;
    nothing is written when PATH has it already."""
    _, work, _, _, bin_dir, _ = world
    home = pypm.home
    (home / ".bashrc").write_text("alias ll='ls -l'")  # (no newline at its end)
    (home / ".bashrc").chmod(0o600)
    (home / ".config" / "fish").mkdir(parents=True)
    env = {"SHELL": "/bin/zsh", "PATH": "/usr/bin:/bin"}
    r = pypm("tool", "update-shell", cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    line = f'export PATH="{bin_dir}:$PATH"'
    for name in (".profile", ".bashrc", ".zshenv"):
        assert f"Added {bin_dir} to PATH in {home / name}" in r.stderr, r.stderr
        assert (home / name).read_text().endswith(f"\n# added by `pypm tool update-shell`\n{line}\n")
    assert (home / ".bashrc").read_text().startswith("alias ll='ls -l'\n\n")
    assert (home / ".bashrc").stat().st_mode & 0o777 == 0o600 and (home / ".profile").stat().st_mode & 0o777 == 0o644
    fish = home / ".config" / "fish" / "conf.d" / "pypm-tools.fish"
    assert f'contains "{bin_dir}" $PATH; or set -gx PATH "{bin_dir}" $PATH' in fish.read_text()
    assert not (home / ".bash_profile").exists()
    before = {p: p.read_text() for p in (home / ".profile", home / ".bashrc", home / ".zshenv", fish)}
    r = pypm("tool", "update-shell", cwd=work, env=env)  # again: nothing added twice
    assert r.returncode == 0 and "added to PATH in" in r.stderr and "start a new shell" in r.stderr, r.stderr
    assert {p: p.read_text() for p in before} == before
    # a login shell of bash (no ~/.bash_profile: it reads ~/.profile) has it
    r = subprocess.run(["bash", "-l", "-c", 'echo "$PATH"'], env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=30)
    assert str(bin_dir) in r.stdout.strip().split(":"), (r.stdout, r.stderr)
    # on PATH already: nothing to do, nothing written
    (home / ".profile").unlink()
    r = pypm("tool", "update-shell", cwd=work, env={"SHELL": "/bin/bash", "PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert r.returncode == 0 and f"{bin_dir} is on PATH already" in r.stderr, r.stderr
    assert not (home / ".profile").exists()


def test_a_tool_from_its_project_directory_built_or_editable(pypm, world, tmp_path):
    """`pypm tool install ./DIR` builds the tool from its directory (as uv's); `--editable` keeps its
    sources live (the sandboxed command sees them, read-only); `--reinstall` builds it again; `pypm x
    --from ./DIR` runs it from there too."""
    from tests.e2e.test_path_deps import write_lib

    server, work, _, _, bin_dir, tools = world
    src = write_lib(tmp_path / "src" / "greeter", "greeter", scripts={"greet": "greeter:main"})
    module = src / "src" / "greeter" / "__init__.py"

    def say(value: str) -> None:
        module.write_text(f"import os\nVALUE = {value!r}\n"
                          "def main():\n    print('greet', VALUE)\n"
                          "    try:\n        open(__file__, 'a').close()\n        print('sources writable')\n"
                          "    except OSError:\n        print('sources read-only')\n")

    say("one")
    shim = bin_dir / "greet"
    r = pypm("tool", "install", "--index-url", server.url, "../src/greeter", cwd=work.parent / "work")
    assert r.returncode == 0, r.stderr
    assert f"Installed greeter 0.3.0: greet in {bin_dir}" in r.stderr
    r, _ = command(pypm, shim, work)
    assert r.returncode == 0 and r.stdout.splitlines()[0] == "greet one", r.stderr
    # built into a wheel: an edit of the sources is not seen until the tool is built again
    say("two")
    assert command(pypm, shim, work)[0].stdout.splitlines()[0] == "greet one"
    r = pypm("tool", "install", "--reinstall", str(src), cwd=work)
    assert r.returncode == 0 and "Reinstalled greeter 0.3.0" in r.stderr, r.stderr
    assert command(pypm, shim, work)[0].stdout.splitlines()[0] == "greet two"
    # editable: the sources are live, and the sandboxed command sees them read-only
    r = pypm("tool", "install", "--index-url", server.url, "-e", str(src), cwd=work)
    assert r.returncode == 0, r.stderr
    say("three")
    r, _ = command(pypm, shim, work)
    assert r.returncode == 0 and r.stdout.splitlines() == ["greet three", "sources read-only"], (r.stdout, r.stderr)
    receipt = (tools / "greeter" / "pypm-tool.json").read_text()
    assert '"editable": true' in receipt and src.as_uri() in receipt
    # run again (the launcher may replay it), then its dependencies change: locked and synced again
    assert command(pypm, shim, work)[0].stdout.splitlines()[0] == "greet three"
    write_lib(src, "greeter", deps=["helper"], scripts={"greet": "greeter:main"})
    say("helped")
    module.write_text(module.read_text().replace("import os\n", "import os, helper\n"))
    r, _ = command(pypm, shim, work)
    assert r.returncode == 0 and r.stdout.splitlines()[0] == "greet helped", (r.stdout, r.stderr)
    # upgrade keeps it editable
    r = pypm("tool", "upgrade", "greeter", cwd=work)
    assert r.returncode == 0 and "greeter 0.3.0 is the newest" in r.stderr, r.stderr
    say("four")
    assert command(pypm, shim, work)[0].stdout.splitlines()[0] == "greet four"
    # `pypm x --from ./DIR`: an environment of its own in the cache, built from the directory
    r = pypm("x", "--index-url", server.url, "--from", str(src), "greet", cwd=work)
    assert r.returncode == 0 and r.stdout.splitlines()[0] == "greet four", r.stderr
    r = pypm("x", "--index-url", server.url, "--from", "../src/greeter", "greet", cwd=work)  # the same environment
    assert r.returncode == 0 and "Resolved" not in r.stderr, r.stderr
    # --with-editable: another project beside the tool, from its live sources
    plugin = write_lib(tmp_path / "src" / "plugin", "plugin", value="live")
    r = pypm("x", "--index-url", server.url, "--from", str(src), "--with-editable", str(plugin),
             "python", "-c", "import plugin; print(plugin.VALUE)", cwd=work)
    assert (r.returncode, r.stdout) == (0, "live\n"), r.stderr
    r = pypm("tool", "install", "--index-url", server.url, "--with-editable", str(plugin), "-e", str(src), cwd=work)
    assert r.returncode == 0, r.stderr
    assert json.loads((tools / "greeter" / "pypm-tool.json").read_text())["with-editable"] == ["plugin"]
    lock = (tools / "greeter" / "pypm.lock").read_text()
    assert f'source = {{ editable = "{plugin}" }}' in lock and f'source = {{ editable = "{src}" }}' in lock
    assert pypm("tool", "upgrade", "greeter", cwd=work).returncode == 0
    assert f'source = {{ editable = "{plugin}" }}' in (tools / "greeter" / "pypm.lock").read_text()
    # what cannot be: said, nothing installed
    r = pypm("tool", "install", "--index-url", server.url, "-e", "probe-tool", cwd=work)
    assert r.returncode == 2 and "--editable probe-tool: only a project directory can be installed editable" in r.stderr
    r = pypm("tool", "install", "./nowhere", cwd=work)
    assert r.returncode == 2 and f"{work / 'nowhere'} is not a project directory, a wheel or an sdist" in r.stderr
    assert not (tools / "nowhere").exists()
    r = pypm("x", "--from", "greeter @ file:src/greeter", "greet", cwd=tmp_path)
    assert r.returncode == 2 and "a relative file: URL has nothing to be relative to here" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = pypm("tool", "uninstall", "greeter", cwd=work)
    assert r.returncode == 0 and not shim.exists() and not (tools / "greeter").exists()
