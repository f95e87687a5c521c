"""Workspaces: `[tool.pypm.workspace] members`, `{ workspace = true }` sources, one lock for every
member, and `--package` / `--all-packages` to choose what the root's .venv holds. A real index on
127.0.0.1 for the rest, members built by their in-tree backend in the sandbox."""

from __future__ import annotations

import json
import sys


import pytest

from pypm.lockfile import loads
from tests.e2e.test_path_deps import write_lib
from tests.e2e.test_sync import installed

ROOT = """\
[project]
name = "app"
version = "1.0"
requires-python = ">=3.9"
dependencies = ["plugin"]

[tool.pypm]
index-url = "{url}"
python = "{python}"

[tool.pypm.workspace]
members = ["packages/*"]
exclude = ["packages/scratch"]

[tool.pypm.sources]
plugin = {{ workspace = true }}
"""


@pytest.fixture
def ws(dists, index_server, tmp_path):
    for name, version in [("alpha", "1.0"), ("beta", "2.0"), ("gamma", "3.0")]:
        dists.wheel(name, version)
    server = index_server()
    root = tmp_path / "ws"
    root.mkdir()
    (root / "pyproject.toml").write_text(ROOT.format(url=server.url, python=sys.executable))
    write_lib(root / "packages" / "core", "core", deps=["alpha"])
    write_lib(root / "packages" / "plugin", "plugin", deps=["core", "beta"],
              tool="\n[tool.pypm.sources]\ncore = { workspace = true }\n")
    write_lib(root / "packages" / "tool", "tool", deps=["gamma"])  # a member nothing else requires
    (root / "packages" / "scratch").mkdir()  # excluded: no pyproject.toml needed
    return server, root


def test_one_lock_for_every_member_and_package_selection(pypm, ws):
    server, root = ws
    r = pypm("sync", cwd=root)
    assert r.returncode == 0, r.stderr
    lock = loads((root / "pypm.lock").read_text())
    assert lock.members == ["core", "plugin", "tool"]
    by = {p.name: p for p in lock.packages}
    assert {n: by[n].source for n in lock.members} == {n: {"editable": f"packages/{n}"} for n in lock.members}
    assert by["tool"].version == "0.3.0" and by["gamma"].version == "3.0"  # locked although the root wants neither
    assert not by["app"].dependency_groups  # the members' entry point is `members`, no group of the root's
    # the tree: the root's, then the member nothing of the root's reaches
    r = pypm("tree", "--frozen", cwd=root)
    assert r.stdout == ("app v1.0\n└── plugin v0.3.0\n    ├── beta v2.0\n    └── core v0.3.0\n        └── alpha v1.0\n"
                        "tool v0.3.0\n└── gamma v3.0\n"), r.stdout
    # the root's selection: plugin and what it needs, editable, not the member nothing requires
    assert installed(root / ".venv") == {"plugin": "0.3.0", "core": "0.3.0", "alpha": "1.0", "beta": "2.0"}
    r = pypm("run", "--", "python", "-c", "import plugin, core; print(plugin.VALUE, core.VALUE)", cwd=root)
    assert (r.returncode, r.stdout) == (0, "one one\n"), r.stderr
    # one member and its dependencies alone (the venv is made exact)
    r = pypm("sync", "--package", "tool", cwd=root)
    assert r.returncode == 0, r.stderr
    assert installed(root / ".venv") == {"tool": "0.3.0", "gamma": "3.0"}
    r = pypm("run", "--package", "tool", "--", "python", "-c", "import tool; print(tool.VALUE)", cwd=root)
    assert (r.returncode, r.stdout) == (0, "one\n"), r.stderr
    r = pypm("sync", "--all-packages", cwd=root)
    assert r.returncode == 0, r.stderr
    assert set(installed(root / ".venv")) == {"plugin", "core", "tool", "alpha", "beta", "gamma"}
    # the member's record in the venv's state: a plain sync goes back to the root's selection
    state = json.loads((root / ".venv" / ".pypm" / "state.json").read_text())
    assert state["selection"]["all-packages"] is True
    assert pypm("sync", cwd=root).returncode == 0
    assert "tool" not in installed(root / ".venv")


def test_a_members_new_dependency_relocks_the_workspace(pypm, ws):
    server, root = ws
    assert pypm("sync", cwd=root).returncode == 0
    write_lib(root / "packages" / "core", "core", deps=["alpha", "gamma"])
    assert pypm("lock", "--check", cwd=root).returncode == 1
    r = pypm("run", "--", "python", "-c", "import gamma", cwd=root)
    assert r.returncode == 0, r.stderr
    assert "gamma" in installed(root / ".venv")
    assert pypm("lock", "--check", cwd=root).returncode == 0
    # A member the root's selection does not hold changes: `pypm run` at the root still locks
    # again (as `lock --check` says it must), and leaves the venv as it is.
    write_lib(root / "packages" / "tool", "tool", deps=["gamma", "beta"])
    assert pypm("lock", "--check", cwd=root).returncode == 1
    r = pypm("run", "--", "python", "-c", "pass", cwd=root)
    assert r.returncode == 0, r.stderr
    assert pypm("lock", "--check", cwd=root).returncode == 0
    assert [d.name for d in {p.name: p for p in loads((root / "pypm.lock").read_text()).packages}["tool"].dependencies] \
        == ["beta", "gamma"]
    assert "tool" not in installed(root / ".venv")
    r = pypm("run", "-v", "--", "python", "-c", "pass", cwd=root)  # and then the fast path again
    assert r.returncode == 0 and "Resolved" not in r.stderr, r.stderr


@pytest.mark.parametrize("change, argv, code, message", [
    (None, ["sync", "--package", "nope"], 3, "nope is not a member of the workspace (its members: core, plugin, tool)"),
    (None, ["sync", "--package", "app"], 3, "app is the workspace's root"),
    (None, ["sync", "--package", "tool", "--all-packages"], 2, "not allowed with argument"),
    ("nopyproject", ["lock"], 3, "which has no pyproject.toml"),
    ("notmember", ["lock"], 3, "the workspace has no member other"),
    ("both", ["lock"], 3, "gives both `workspace = true` and a `path`"),
])
def test_workspace_mistakes_are_clear_errors(pypm, ws, change, argv, code, message):
    server, root = ws
    path = root / "pyproject.toml"
    if change == "nopyproject":
        (root / "packages" / "empty").mkdir()
    elif change == "notmember":
        path.write_text(path.read_text() + "other = { workspace = true }\n")
    elif change == "both":
        path.write_text(path.read_text().replace("plugin = { workspace = true }",
                                                 'plugin = { workspace = true, path = "packages/plugin" }'))
    r = pypm(*argv, cwd=root)
    assert r.returncode == code and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_export_names_each_member_as_an_editable_directory(pypm, ws):
    server, root = ws
    assert pypm("lock", cwd=root).returncode == 0
    r = pypm("export", "--all-packages", cwd=root)
    assert r.returncode == 0, r.stderr
    import tomllib

    dirs = {p["name"]: p.get("directory") for p in tomllib.loads(r.stdout)["packages"]}
    assert dirs["tool"] == {"path": "packages/tool", "editable": True} and "gamma" in dirs
    r = pypm("export", cwd=root)
    assert "tool" not in {p["name"] for p in tomllib.loads(r.stdout)["packages"]}




def test_in_a_members_directory_the_workspace_is_used_with_that_member_selected(pypm, ws):
    server, root = ws
    tool = root / "packages" / "tool"
    r = pypm("run", "--", "python", "-c", "import tool, gamma; print(tool.VALUE)", cwd=tool)
    assert (r.returncode, r.stdout) == (0, "one\n"), r.stderr
    # the root's lock and .venv, none of the member's own
    assert (root / "pypm.lock").is_file() and (root / ".venv").is_dir()
    assert not (tool / "pypm.lock").exists() and not (tool / ".venv").exists()
    assert installed(root / ".venv") == {"tool": "0.3.0", "gamma": "3.0"}
    assert pypm("lock", "--check", cwd=tool).returncode == 0
    # `pypm add` there edits the member's pyproject.toml, then locks and syncs the workspace
    r = pypm("add", "beta", cwd=tool)
    assert r.returncode == 0, r.stderr
    assert 'dependencies = [\n    "beta>=2.0",\n    "gamma",\n]' in (tool / "pyproject.toml").read_text()
    assert "beta" not in (root / "pyproject.toml").read_text()
    lock = loads((root / "pypm.lock").read_text())
    assert [d.name for d in lock.by_name("tool")[0].dependencies] == ["beta", "gamma"]
    assert installed(root / ".venv") == {"tool": "0.3.0", "gamma": "3.0", "beta": "2.0"}
    assert not (tool / "pypm.lock").exists()
    # `pypm build` there builds the member itself
    r = pypm("build", "--wheel", cwd=tool)
    assert r.returncode == 0, r.stderr
    assert (tool / "dist" / "tool-0.3.0-py3-none-any.whl").is_file()


def test_adding_a_member_by_name_writes_no_bound(pypm, ws):
    server, root = ws
    plugin = root / "packages" / "plugin"
    r = pypm("add", "tool", cwd=plugin)  # a member: the directory is its version
    assert r.returncode == 0, r.stderr
    assert 'dependencies = ["core", "beta", "tool"]' in (plugin / "pyproject.toml").read_text()
    lock = loads((root / "pypm.lock").read_text())
    assert "tool" in [d.name for d in lock.by_name("plugin")[0].dependencies]
    assert {"plugin", "tool", "gamma"} <= set(installed(root / ".venv"))


def test_run_in_a_members_directory_takes_the_fast_path_once_synced_for_it(pypm, ws):
    server, root = ws
    tool = root / "packages" / "tool"

    def run(code: str) -> tuple[set[str], str]:
        r = pypm("run", "--", "python", "-c", code, cwd=tool, env={"PYTHONPROFILEIMPORTTIME": "1"})
        assert r.returncode == 0, r.stderr
        return {ln.split("|")[-1].strip() for ln in r.stderr.splitlines() if ln.startswith("import time:")}, r.stdout

    imported, _ = run("pass")  # the first: the full path syncs the workspace's .venv for `tool`
    assert "pypm.cli" in imported
    imported, out = run("import tool, gamma; print(tool.VALUE)")
    assert "pypm.cli" not in imported and "pypm.locking" not in imported, sorted(imported)
    assert out == "one\n"
    # the member's own pyproject.toml is an input: a new dependency takes the full path again
    write_lib(tool, "tool", deps=["gamma", "alpha"])
    imported, _ = run("import alpha")
    assert "pypm.cli" in imported
    imported, _ = run("import alpha")
    assert "pypm.cli" not in imported
    # the root's own selection is another venv state: from the root, the full path again
    r = pypm("run", "--", "python", "-c", "import plugin", cwd=root)
    assert r.returncode == 0, r.stderr
    imported, _ = run("pass")
    assert "pypm.cli" in imported


def test_a_member_without_build_system_is_virtual_its_dependencies_installed_not_it(pypm, ws):
    server, root = ws
    meta = root / "packages" / "meta"
    meta.mkdir()
    (meta / "pyproject.toml").write_text('[project]\nname = "meta"\nversion = "0.1"\ndependencies = ["alpha", "tool"]\n')
    r = pypm("sync", "--package", "meta", cwd=root)
    assert r.returncode == 0, r.stderr
    lock = loads((root / "pypm.lock").read_text())
    assert lock.members == ["core", "meta", "plugin", "tool"]
    assert lock.by_name("meta")[0].source == {"virtual": "packages/meta"}
    assert installed(root / ".venv") == {"alpha": "1.0", "tool": "0.3.0", "gamma": "3.0"}  # not meta itself
    # in its directory: the same selection, and the fast path once synced for it
    r = pypm("run", "--", "python", "-c", "import alpha, tool", cwd=meta, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 0 and "pypm.cli" not in r.stderr, r.stderr
    r = pypm("export", "--package", "meta", "--format", "requirements.txt", cwd=root)
    assert r.returncode == 0 and "meta" not in r.stdout and "-e ./packages/tool" in r.stdout, r.stdout
    assert pypm("verify", "--venv", cwd=root).returncode == 0
    # a path dependency (not a member) still needs a [build-system]: it is installed
    write_lib(root / "outside", "outside")
    (root / "outside" / "pyproject.toml").write_text('[project]\nname = "outside"\nversion = "1"\n')
    path = root / "pyproject.toml"
    path.write_text(path.read_text().replace('dependencies = ["plugin"]', 'dependencies = ["plugin", "outside"]')
                    + 'outside = { path = "outside" }\n')
    r = pypm("lock", cwd=root)
    assert r.returncode == 3 and "has no [build-system]" in r.stderr, r.stderr


def test_a_members_own_dependency_groups_are_locked_and_installed_with_it(pypm, ws):
    server, root = ws
    tool = root / "packages" / "tool"
    (tool / "pyproject.toml").write_text((tool / "pyproject.toml").read_text() + '\n[dependency-groups]\ndev = ["beta"]\n')
    r = pypm("sync", "--package", "tool", cwd=root)
    assert r.returncode == 0, r.stderr
    entry = loads((root / "pypm.lock").read_text()).by_name("tool")[0]
    assert {g: [d.name for d in v] for g, v in entry.dependency_groups.items()} == {"dev": ["beta"]}
    assert installed(root / ".venv") == {"tool": "0.3.0", "gamma": "3.0", "beta": "2.0"}  # dev, as uv
    r = pypm("sync", "--package", "tool", "--no-dev", cwd=root)
    assert r.returncode == 0, r.stderr
    assert installed(root / ".venv") == {"tool": "0.3.0", "gamma": "3.0"}
    r = pypm("tree", "--frozen", "--package", "tool", cwd=root)
    assert r.stdout == "tool v0.3.0\n├── gamma v3.0\n└── beta v2.0 (group: dev)\n", r.stdout
    # in its directory, as `--package tool`, and by the fast path the second time
    for _ in range(2):
        r = pypm("run", "--", "python", "-c", "import beta", cwd=tool, env={"PYTHONPROFILEIMPORTTIME": "1"})
        assert r.returncode == 0, r.stderr
    assert "pypm.cli" not in r.stderr


def test_init_inside_a_workspace_adds_the_new_project_to_its_members(pypm, ws):
    server, root = ws
    before = (root / "pyproject.toml").read_text()
    # below a `members` glob: nothing to add
    r = pypm("init", "packages/fresh", cwd=root)
    assert r.returncode == 0, r.stderr
    assert "a member of the workspace" in r.stderr and (root / "pyproject.toml").read_text() == before
    # elsewhere: its path goes into `members`, the rest of the file as it was
    r = pypm("init", "tools/lint", cwd=root)
    assert r.returncode == 0, r.stderr
    assert "added tools/lint to [tool.pypm.workspace] members" in r.stderr
    after = (root / "pyproject.toml").read_text()
    assert after == before.replace('members = ["packages/*"]', 'members = ["packages/*", "tools/lint"]')
    # a member takes the workspace's requires-python, not this interpreter's minor (as uv): its lock works
    assert 'requires-python = ">=3.9"' in (root / "tools" / "lint" / "pyproject.toml").read_text()
    r = pypm("lock", cwd=root)
    assert r.returncode == 0, r.stderr
    assert "lint" in loads((root / "pypm.lock").read_text()).members
    # excluded, or --no-workspace: not added
    r = pypm("init", "packages/scratch", cwd=root)
    assert r.returncode == 0 and (root / "pyproject.toml").read_text() == after, r.stderr
    assert "members" not in r.stderr and "a member of" not in r.stderr
    r = pypm("init", "--no-workspace", "other/x", cwd=root)
    assert r.returncode == 0 and (root / "pyproject.toml").read_text() == after, r.stderr
    # a member of that name already: refused, and nothing of the new project is left
    r = pypm("init", "--name", "core", "other/dup", cwd=root)
    assert r.returncode == 3 and "has a member named core already" in r.stderr, r.stderr
    assert not (root / "other" / "dup").exists() and (root / "pyproject.toml").read_text() == after
