"""`pypm run --with REQ` (as uv's): packages from an environment of their own, layered over the
project's .venv for one command, sandboxed and not; a real index on 127.0.0.1, real wheels."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_path_deps import write_app
from tests.e2e.test_sync import installed

SHOW = ("import json, os, sys, lib; import addon; "
        "print(json.dumps({'lib': lib.V, 'addon': addon.V, 'exe': sys.executable, 'pp': os.environ.get('PYTHONPATH')}))")


@pytest.fixture
def world(pypm, dists, index_server, tmp_path):
    for v in ("1.0", "2.0"):
        dists.wheel("lib", v, modules={"lib/__init__.py": f"V = {v!r}\n"})
    dists.wheel("addon", "1.0", requires_dist=["lib"],
                modules={"addon/__init__.py": "V = 'addon'\ndef main():\n    import lib; print('addon-cmd sees lib', lib.V)\n"
                                              "    import only; print('and the project', only.V)\n"},
                entry_points={"console_scripts": {"addon-cmd": "addon:main"}})
    # the project's own package, and its own sitecustomize (which --with's hook must not hide)
    dists.wheel("only", "1.0", modules={"only.py": "V = 'only'\n",
                                         "sitecustomize.py": "import os\nos.environ['PROJECT_SITECUSTOMIZE'] = 'ran'\n"})
    # a .pth file with a path line and an import line, as editables and pytest-cov ship
    dists.wheel("pthpkg", "1.0", modules={"pthpkg.pth": "extra\nimport os; os.environ['PTH_RAN'] = 'yes'\n",
                                           "extra/hidden_mod.py": "V = 'hidden'\n"})
    server = index_server()
    project = write_app(tmp_path / "proj", server.url, ["lib==1.0", "only"])
    r = pypm("sync", cwd=project)
    assert r.returncode == 0, r.stderr
    return project, server


@pytest.mark.parametrize("flags", [(), ("--no-sandbox",)], ids=["sandboxed", "unsandboxed"])
def test_with_layers_packages_over_the_project_for_one_command(pypm, world, flags):
    project, server = world
    venv = project / ".venv"
    before = installed(venv)
    r = pypm("run", *flags, "--with", "addon", "--", "python", "-c", SHOW, cwd=project)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    # the project's python and pins; addon from its own environment (which resolved lib on its own)
    assert got["addon"] == "addon" and got["lib"] == "2.0" and got["exe"] == str(venv / "bin" / "python"), got
    assert installed(venv) == before, "the project's .venv was changed"
    # the environment is kept: the next run asks the index nothing
    server.clear_requests()
    r = pypm("run", *flags, "--with", "addon", "--", "addon-cmd", cwd=project)
    assert r.returncode == 0 and r.stdout == "addon-cmd sees lib 2.0\nand the project only\n", r.stderr
    assert server.requests == []
    # ... and such a run takes run's fast path: no argparse, no CLI, the same layering (the
    # launcher's replay aside: test_a_with_run_is_replayed_by_the_launcher_while_its_environment_holds)
    r = pypm("run", *flags, "--with", "addon", "--", "python", "-c", SHOW, cwd=project,
             env={"PYTHONPROFILEIMPORTTIME": "1", "PYPM_NO_LAUNCHER": "1"})
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert r.returncode == 0 and "pypm.run" in imported and "pypm.cli" not in imported, sorted(imported)
    assert json.loads(r.stdout) == got
    # a state.json from before it kept the index settings: the CLI's run adds them, then the fast path
    state_path = venv / ".pypm" / "state.json"
    state = json.loads(state_path.read_text())
    del state["tool"]["index"]
    state_path.write_text(json.dumps(state))
    for cli in (True, False):
        r = pypm("run", *flags, "--with", "addon", "--", "python", "-c", SHOW, cwd=project,
                 env={"PYTHONPROFILEIMPORTTIME": "1", "PYPM_NO_LAUNCHER": "1"})
        imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
        assert r.returncode == 0 and ("pypm.cli" in imported) == cli and json.loads(r.stdout) == got, r.stderr[-500:]
    assert json.loads(state_path.read_text())["tool"]["index"]["index-url"] == server.url
    # a pin given with --with wins over the project's
    r = pypm("run", *flags, "--with", "lib==1.0", "--with", "addon", "--", "python", "-c", SHOW, cwd=project)
    assert r.returncode == 0 and json.loads(r.stdout)["lib"] == "1.0", r.stderr
    if not flags:  # sandboxed: the environment (pypm's cache) is shown read-only
        r = pypm("run", "--with", "addon", "--", "python", "-c",
                 "import addon, os; open(os.path.join(os.path.dirname(addon.__file__), 'planted.py'), 'w')", cwd=project)
        assert r.returncode == 1 and "Read-only file system" in r.stderr, r.stderr
    # without it, nothing of it
    r = pypm("run", *flags, "--", "python", "-c", "import addon", cwd=project)
    assert r.returncode == 1 and "No module named 'addon'" in r.stderr, r.stderr


@pytest.mark.parametrize("flags", [(), ("--no-sandbox",)], ids=["sandboxed", "unsandboxed"])
def test_with_reads_the_environments_pth_files_and_keeps_the_projects_sitecustomize(pypm, world, flags):
    project, _ = world
    code = ("import os, hidden_mod, sitecustomize; "
            "print(hidden_mod.V, os.environ.get('PTH_RAN'), os.environ.get('PROJECT_SITECUSTOMIZE'))")
    r = pypm("run", *flags, "--with", "pthpkg", "--", "python", "-c", code, cwd=project)
    assert r.returncode == 0 and r.stdout == "hidden yes ran\n", r.stderr
    # the project's python alone: the project's sitecustomize, nothing of the environment
    r = pypm("run", *flags, "--", "python", "-c", "import os, sitecustomize; print(os.environ.get('PROJECT_SITECUSTOMIZE'))",
             cwd=project)
    assert r.returncode == 0 and r.stdout == "ran\n", r.stderr


def test_with_errors_and_a_script(pypm, world, tmp_path):
    project, server = world
    r = pypm("run", "--with", "not a requirement!", "--", "python", "-c", "pass", cwd=project)
    assert r.returncode == 2 and "--with" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = pypm("run", "--with", "nosuchpkg", "--", "python", "-c", "pass", cwd=project)
    assert r.returncode != 0 and "nosuchpkg" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # a PEP 723 script: --with adds to its own dependencies
    here = tmp_path / "here"
    here.mkdir()
    (here / "tool.py").write_text(f'# /// script\n# requires-python = ">=3.9"\n# dependencies = ["lib==1.0"]\n#\n'
                                  f'# [tool.pypm]\n# index-url = "{server.url}"\n# ///\n'
                                  "import addon, lib; print(addon.V, lib.V)\n")
    r = pypm("run", "--with", "addon", "tool.py", cwd=here)
    assert r.returncode == 0 and r.stdout == "addon 1.0\n", r.stderr


def test_a_with_run_is_replayed_by_the_launcher_while_its_environment_holds(pypm, world):
    """A sandboxed `run --with addon` is recorded and replayed by the launcher (keyed by the flag and
    its value), and its plan also checks the layered environment's files: once that environment is
    gone (`pypm cache clean` of it), the run is not replayed but made again through the CLI."""
    import shutil

    from tests.sandbox.test_launch import _run, _until_replayed

    project, _ = world
    code = "import addon, lib; print(addon.V, lib.V)"
    _until_replayed(pypm, project, code, "addon 2.0\n", flags=("--with", "addon"))
    launched, r = _run(pypm, project, "python", "-c", code, flags=("--with", "lib==1.0", "--with", "addon"))
    assert not launched and r.returncode == 0 and r.stdout == "addon 1.0\n", r.stderr  # other flags: another plan
    _until_replayed(pypm, project, code, "addon 2.0\n", flags=("--with", "addon"))
    envs = [e for e in (pypm.cache_dir / "tools").iterdir()
            if "run --with" in (e / "pyproject.toml").read_text() and '["addon"]' in (e / "pyproject.toml").read_text()]
    assert len(envs) == 1, envs
    # an edit of the environment's files (here --with's hook): not replayed; the CLI writes the hook again
    hook = envs[0] / ".venv" / ".pypm-layer" / "sitecustomize.py"
    hook.write_text(hook.read_text() + "import os\nos.environ['HOOK_EDITED'] = '1'\n")
    edited = code + "; import os; print(os.environ.get('HOOK_EDITED'))"
    launched, r = _run(pypm, project, "python", "-c", edited, flags=("--with", "addon"))
    assert not launched and r.returncode == 0 and r.stdout == "addon 2.0\nNone\n", r.stderr
    _until_replayed(pypm, project, code, "addon 2.0\n", flags=("--with", "addon"))
    shutil.rmtree(envs[0])  # gone (`pypm cache clean`): made again through the CLI
    launched, r = _run(pypm, project, "python", "-c", code, flags=("--with", "addon"))
    assert not launched and r.returncode == 0 and r.stdout == "addon 2.0\n", r.stderr


def test_with_a_path_builds_it_from_its_directory(pypm, world):
    """`run --with ../plugin` (as uv's): NAME from its pyproject.toml, built into the --with
    environment, which its absolute path keys; relative to where pypm runs."""
    from tests.e2e.test_path_deps import write_lib

    project, server = world
    write_lib(project.parent / "plugin", "plugin", value="built")
    code = "import plugin, lib; print(plugin.VALUE, lib.V)"
    r = pypm("run", "--with", "../plugin", "--", "python", "-c", code, cwd=project)
    assert (r.returncode, r.stdout) == (0, "built 1.0\n"), r.stderr
    (project / "sub").mkdir()
    server.clear_requests()
    r = pypm("run", "--with", "../../plugin", "--", "python", "-c", code, cwd=project / "sub")  # the same environment
    assert (r.returncode, r.stdout) == (0, "built 1.0\n") and server.requests == [], r.stderr
    r = pypm("run", "--with", "../nowhere", "--", "python", "-c", "pass", cwd=project)
    assert r.returncode == 2 and "is not a project directory, a wheel or an sdist" in r.stderr, r.stderr
    # --with-editable: its sources themselves, live, read-only in the sandbox
    r = pypm("run", "--with-editable", "../plugin", "--", "python", "-c", code, cwd=project)
    assert (r.returncode, r.stdout) == (0, "built 1.0\n"), r.stderr
    (project.parent / "plugin" / "src" / "plugin" / "__init__.py").write_text("VALUE = 'live'\n")
    r = pypm("run", "--with-editable", "../plugin", "--", "python", "-c", code, cwd=project)
    assert (r.returncode, r.stdout) == (0, "live 1.0\n"), r.stderr
    r = pypm("run", "--with-editable", "../plugin", "--", "python", "-c", "open(__import__('plugin').__file__, 'a')",
             cwd=project)
    assert r.returncode != 0 and "Read-only file system" in r.stderr, r.stderr
    r = pypm("run", "--with", "../plugin", "--", "python", "-c", code, cwd=project)  # (built: the copy of before)
    assert (r.returncode, r.stdout) == (0, "built 1.0\n"), r.stderr
    r = pypm("run", "--with-editable", "lib", "--", "python", "-c", "pass", cwd=project)
    assert r.returncode == 2 and "--with-editable lib: only a project directory can be installed editable" in r.stderr
    # --with-requirements FILE: its requirements as --with, its `-e DIR` lines as --with-editable
    (project / "extra.txt").write_text("addon  # the layered package\n-e ../plugin\n")
    (project / "sub" / "all.txt").write_text("-r ../extra.txt\n")
    r = pypm("run", "--with-requirements", "sub/all.txt", "--", "python", "-c",
             "import addon, plugin; print(addon.V, plugin.VALUE)", cwd=project)
    assert (r.returncode, r.stdout) == (0, "addon live\n"), r.stderr
