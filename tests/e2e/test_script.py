"""End-to-end `pypm run script.py` with PEP 723 inline metadata: a real index on 127.0.0.1, real
wheels, the real sandbox; what the script gets is read from its own output."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_lock import write_project

BODY = '''
import os, sys
import lib
print("lib", lib.__version__)
print("cwd", os.getcwd())
print("args", " ".join(sys.argv[1:]))
for name, path in (("sibling", os.path.join(os.path.dirname(os.path.abspath(__file__)), "sibling.txt")),
                   ("secret", sys.argv[1] if len(sys.argv) > 1 else "/nonexistent")):
    try:
        open(path).read()
        print(name, "visible")
    except OSError:
        print(name, "hidden")
'''


def script(path: Path, block: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# /// script\n" + "".join(f"# {line}\n" if line else "#\n" for line in block.splitlines())
                    + "# ///\n" + BODY)
    (path.parent / "sibling.txt").write_text("next to the script")
    return path


@pytest.fixture
def world(dists, index_server, tmp_path, pypm):
    dists.wheel("lib", "1.0")
    dists.wheel("lib", "2.0")
    server = index_server()
    secret = pypm.home / "secret.txt"
    secret.write_text("s3cr3t")
    return server, secret


def out(r) -> dict[str, str]:
    assert r.returncode == 0, r.stderr
    return dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)


def test_a_script_gets_its_own_dependencies_in_the_sandbox(pypm, world, tmp_path):
    server, secret = world
    here = tmp_path / "here"
    s = script(here / "tool.py", f'requires-python = ">=3.9"\ndependencies = ["lib<2"]\n\n'
                                 f'[tool.pypm]\nindex-url = "{server.url}"')
    r = pypm("run", "tool.py", str(secret), cwd=here)
    o = out(r)
    assert o["lib"] == "1.0" and o["cwd"] == str(here.resolve()) and o["args"] == str(secret)
    assert o["secret"] == "hidden" and o["sibling"] == "visible"  # in the sandbox; the directory is bound
    assert "Resolved 1 packages" in r.stderr

    server.clear_requests()  # again: the environment is current, nothing is asked of the index
    r = pypm("run", "tool.py", str(secret), cwd=here)
    assert out(r)["lib"] == "1.0" and "Resolved" not in r.stderr and server.requests == []

    # from elsewhere: the script file alone is shown, read-only, not its directory
    there = tmp_path / "there"
    there.mkdir()
    o = out(pypm("run", str(s), str(secret), cwd=there))
    assert o["cwd"] == str(there.resolve()) and o["sibling"] == "hidden" and o["lib"] == "1.0"
    # unsandboxed, the host's files
    assert out(pypm("run", "--no-sandbox", str(s), str(secret), cwd=there))["secret"] == "visible"


def test_in_a_project_the_script_still_uses_its_own(pypm, world, tmp_path, dists):
    """The project's environment (lib 1.0) is not the script's (lib 2.0), whichever ran before:
    the entry point's fast paths (and the launcher's recorded plans) step aside for a script."""
    server, secret = world
    project = write_project(tmp_path / "proj", ["lib<2"], build=False)
    with (project / "pyproject.toml").open("a") as f:
        f.write(f'\n[tool.pypm]\nindex-url = "{server.url}"\n')
    s = script(project / "tool.py", f'dependencies = ["lib>=2"]\n[tool.pypm]\nindex-url = "{server.url}"')
    s.with_name("plain.py").write_text(BODY)
    for _ in range(2):  # the second time from a recorded plan
        o = out(pypm("run", "python", "plain.py", cwd=project))
        assert o["lib"] == "1.0"
    for _ in range(2):
        assert out(pypm("run", "tool.py", cwd=project))["lib"] == "2.0"
        assert out(pypm("run", "-q", "--network", "none", "tool.py", cwd=project))["lib"] == "2.0"
    assert out(pypm("run", "python", "plain.py", cwd=project))["lib"] == "1.0"
    # a .py file without the block runs with the project's python, as `python plain.py` (as uv):
    # by the CLI, run's fast path and the launcher's replay alike
    # (`-q` twice: the second from the launcher's plan; `--python` is not a fast-path flag: the CLI)
    for flags in ([], ["-q"], ["-q"], ["--no-sandbox"], ["--python", "3.11"]):
        r = pypm("run", *flags, "plain.py", cwd=project)
        assert out(r)["lib"] == "1.0", (flags, r.stderr)


@pytest.mark.parametrize("block, code, message", [
    ('dependencies = ["lib"\n', 3, "is not valid TOML"),
    ('dependencies = "lib"', 3, "`dependencies` in the `# /// script` block must be an array of strings"),
    ('dependencies = ["not valid!"]', 3, "not a valid requirement"),
    ('dependencies = ["lib @ file:///tmp/lib.whl"]', 3, "a direct URL, which pypm cannot lock yet"),
    ('name = "x"', 3, "`name` in the `# /// script` block is not a PEP 723 key"),
    ('requires-python = "three"', 3, "not a version specifier"),
    ('[tool.pypm]\npython = "3.11"', 3, "`tool.pypm.python` in the `# /// script` block is not one of"),
])
def test_bad_metadata_is_an_error_naming_the_script(pypm, world, tmp_path, block, code, message):
    here = tmp_path / "here"
    script(here / "tool.py", block)
    r = pypm("run", "tool.py", cwd=here)
    assert r.returncode == code, r.stderr
    assert message in r.stderr and "tool.py" in r.stderr and "Traceback" not in r.stderr


def test_two_blocks_and_selection_flags(pypm, world, tmp_path):
    server, _ = world
    here = tmp_path / "here"
    s = script(here / "tool.py", f'dependencies = ["lib"]\n[tool.pypm]\nindex-url = "{server.url}"')
    r = pypm("run", "--extra", "x", "tool.py", cwd=here)
    assert r.returncode == 2 and "--extra: " in r.stderr and "PEP 723" in r.stderr, r.stderr
    s.write_text(s.read_text() + "# /// script\n# dependencies = []\n# ///\n")
    r = pypm("run", "tool.py", cwd=here)
    assert r.returncode == 3 and "more than one `# /// script` block" in r.stderr, r.stderr


def test_find_links_in_the_block_are_taken_from_the_scripts_directory(pypm, world, tmp_path, dists):
    import shutil

    here = tmp_path / "here"
    wheels = here / "wheels"
    wheels.mkdir(parents=True)
    shutil.copy(dists.dir / "lib-2.0-py3-none-any.whl", wheels)
    (tmp_path / "empty-index").mkdir()  # an index without lib: it comes from the find-links directory
    script(here / "tool.py", f'dependencies = ["lib"]\n[tool.pypm]\nindex-url = "{(tmp_path / "empty-index").as_uri()}"\n'
                             'find-links = ["wheels"]')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = pypm("run", str(here / "tool.py"), cwd=elsewhere)
    assert out(r)["lib"] == "2.0"


def test_add_and_remove_edit_the_scripts_block(pypm, world, tmp_path):
    server, secret = world
    here = tmp_path / "here"
    s = script(here / "tool.py", f'dependencies = []\n\n[tool.pypm]\nindex-url = "{server.url}"  # the test index')
    r = pypm("add", "--script", "tool.py", "lib", cwd=here)
    assert r.returncode == 0, r.stderr
    text = s.read_text()
    # a bound from a lock of the script's environment (the newest lib), the comment kept
    assert '# dependencies = ["lib>=2.0"]\n' in text and "# the test index" in text
    assert out(pypm("run", "tool.py", cwd=here))["lib"] == "2.0"
    r = pypm("add", "--script", "tool.py", "lib<2", cwd=here)  # replaced where it stands
    assert r.returncode == 0, r.stderr
    assert '# dependencies = ["lib<2"]\n' in s.read_text()
    assert out(pypm("run", "tool.py", cwd=here))["lib"] == "1.0"
    r = pypm("remove", "--script", "tool.py", "lib", cwd=here)
    assert r.returncode == 0, r.stderr
    assert "# dependencies = []\n" in s.read_text()
    r = pypm("remove", "--script", "tool.py", "lib", cwd=here)
    assert r.returncode == 3 and "lib is not in the dependencies of the `# /// script` block" in r.stderr, r.stderr
    r = pypm("add", "--script", "tool.py", "--dev", "lib", cwd=here)
    assert r.returncode == 2 and "not with --script" in r.stderr, r.stderr


def test_add_makes_a_block_after_the_shebang(pypm, tmp_path):
    import os
    import sys

    s = tmp_path / "new.py"
    s.write_text("#!/usr/bin/env python3\n# -*- coding: utf-8 -*-\nprint('hi')\n")
    s.chmod(0o755)
    r = pypm("add", "--script", str(s), "--frozen", "lib", "other[x]>=1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert s.read_text() == (
        "#!/usr/bin/env python3\n# -*- coding: utf-8 -*-\n# /// script\n"
        f'# requires-python = ">={sys.version_info[0]}.{sys.version_info[1]}"\n'
        '# dependencies = [\n#     "lib",\n#     "other[x]>=1",\n# ]\n# ///\n\nprint(\'hi\')\n')
    assert os.stat(s).st_mode & 0o777 == 0o755


def test_init_script_makes_a_script_that_add_and_run_take(pypm, world, tmp_path):
    server, _ = world
    here = tmp_path / "here"
    here.mkdir()
    r = pypm("init", "--script", "hello.py", "--python", "3.10", cwd=here)
    assert r.returncode == 0, r.stderr
    text = (here / "hello.py").read_text()
    assert text.startswith('# /// script\n# requires-python = ">=3.10"\n# dependencies = []\n# ///\n')
    # the block takes an index and a dependency, and the script runs with it
    s = here / "hello.py"
    s.write_text(text.replace("# dependencies = []\n", f'# dependencies = []\n# [tool.pypm]\n# index-url = "{server.url}"\n')
                 .replace('    print("Hello from hello.py!")', '    import lib\n    print("lib", lib.__version__)'))
    assert pypm("add", "--script", "hello.py", "lib<2", cwd=here).returncode == 0
    assert out(pypm("run", "hello.py", cwd=here))["lib"] == "1.0"
    for argv, code, message in [(["init", "--script", "hello.py"], 3, "already exists"),
                                (["init", "--script", "x.py", "--name", "n"], 2, "--name does not apply"),
                                (["init", "--script", "x.py", "--python", "three"], 3, "give a minor version"),
                                (["init", "--python", "3.12"], 2, "--python goes with --script")]:
        r = pypm(*argv, cwd=here)
        assert r.returncode == code and message in r.stderr, (argv, r.stderr)
    assert not (here / "x.py").exists() and not (here / "pyproject.toml").exists()


def _imported_after_pypm(stderr: str) -> set[str]:
    """The modules `-X importtime` lists once the pypm package was imported (those the test
    runner's own start-up imported already are listed before it, or not at all)."""
    names = [line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
             if line.startswith("import time:") and line.count("|") == 2]
    assert "pypm" in names, "importtime output missing"
    return set(names[names.index("pypm") + 1:])


def test_a_current_scripts_run_parses_nothing_again_and_imports_no_parser(pypm, world, tmp_path):
    server, _ = world
    here = tmp_path / "here"
    s = script(here / "tool.py", f'dependencies = ["lib<2"]\n\n[tool.pypm]\nindex-url = "{server.url}"')
    assert out(pypm("run", "--no-sandbox", "tool.py", cwd=here))["lib"] == "1.0"
    entries = list((pypm.cache_dir / "script-meta").glob("*/*.json"))
    assert len(entries) == 1 and entries[0].stat().st_mode & 0o777 == 0o600

    # Again: the block comes from the cache, the environment is found current, and the script
    # runs without tomllib, re (the block's pattern), json's decoder, pathlib, typing, OpenSSL's
    # hashlib, packaging or the CLI.
    server.clear_requests()
    r = pypm("run", "--no-sandbox", "tool.py", cwd=here, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert out(r)["lib"] == "1.0" and server.requests == []
    heavy = _imported_after_pypm(r.stderr) & {
        "tomllib", "re", "json", "json.decoder", "pathlib", "typing", "hashlib", "_hashlib", "packaging",
        "pypm.cli", "pypm.project", "pypm.lockfile", "pypm.locking", "pypm.sync", "argparse"}
    assert heavy == set(), heavy

    # An entry another user could have written (group-writable) is not trusted: read afresh
    entries[0].chmod(0o666)
    entries[0].write_text('{"meta": {"dependencies": ["lib>=2"]}}')
    assert out(pypm("run", "--no-sandbox", "tool.py", cwd=here))["lib"] == "1.0"
    # ... as an unreadable one is
    entries[0].write_text("{not json")
    entries[0].chmod(0o600)
    assert out(pypm("run", "--no-sandbox", "tool.py", cwd=here))["lib"] == "1.0"

    # A changed block is other bytes: read again, and its own environment made
    s.write_text(s.read_text().replace('"lib<2"', '"lib>=2"'))
    assert out(pypm("run", "--no-sandbox", "tool.py", cwd=here))["lib"] == "2.0"
    assert len(list((pypm.cache_dir / "script-meta").glob("*/*.json"))) == 2


def test_a_script_takes_env_file_too(pypm, world, tmp_path):
    """`pypm run --env-file F script.py`: the script's run (its own environment) gets the file's
    variables, sandboxed and not, as a project's command does."""
    server, _ = world
    here = tmp_path / "here"
    script(here / "tool.py", f'requires-python = ">=3.9"\ndependencies = ["lib<2"]\n\n'
                             f'[tool.pypm]\nindex-url = "{server.url}"')
    (here / "tool.py").write_text((here / "tool.py").read_text() + 'print("token", os.environ.get("TOKEN"))\n')
    (here / "vars.env").write_text("TOKEN=from-the-file\n")
    for flags in ((), ("--no-sandbox",)):
        o = out(pypm("run", *flags, "--env-file", "vars.env", "tool.py", cwd=here))
        assert o["token"] == "from-the-file" and o["lib"] == "1.0", (flags, o)
    o = out(pypm("run", "tool.py", cwd=here))  # and only when asked
    assert o["token"] == "None", o
