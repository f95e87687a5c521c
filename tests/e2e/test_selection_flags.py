"""What to install, through the CLI: `sync`/`export` with --extra, --all-extras, --group, --no-dev,
--only-group, on a project locked by `pypm lock` against a real index on 127.0.0.1."""

from __future__ import annotations

import pytest

from tests.e2e.test_sync import assert_venv_exact, installed, write_project


@pytest.fixture
def project(pypm, dists, index_server, tmp_path):
    dists.wheel("alpha", "1.0", requires_dist=["beta"])
    dists.wheel("beta", "2.0")
    dists.wheel("speed", "1.0")
    dists.wheel("widget", "1.0", requires_dist=["beta"])
    dists.wheel("devtool", "3.0")
    dists.wheel("doctool", "4.0", requires_dist=["docdep"])
    dists.wheel("docdep", "1.0")
    server = index_server()
    root = write_project(tmp_path / "proj", deps=["alpha"], extras={"fast": ["speed"], "gui": ["widget"]},
                         groups={"dev": ["devtool"], "docs": ["doctool"]})
    r = pypm("lock", "--index-url", server.url, cwd=root)
    assert r.returncode == 0, r.stderr
    return root, server


BASE = {"alpha": "1.0", "beta": "2.0"}
DEV = {"devtool": "3.0"}
DOCS = {"doctool": "4.0", "docdep": "1.0"}


@pytest.mark.parametrize("flags, expected", [
    ((), {**BASE, **DEV}),
    (("--extra", "fast"), {**BASE, **DEV, "speed": "1.0"}),
    (("--all-extras",), {**BASE, **DEV, "speed": "1.0", "widget": "1.0"}),
    (("--group", "docs"), {**BASE, **DEV, **DOCS}),
    (("--no-dev", "--group", "docs", "--extra", "gui"), {**BASE, **DOCS, "widget": "1.0"}),
    (("--only-group", "docs"), DOCS),
    (("--only-group", "docs", "--only-group", "dev"), {**DOCS, **DEV}),
], ids=["default", "extra", "all-extras", "group", "no-dev+group+extra", "only-group", "two-only-groups"])
def test_sync_installs_exactly_the_selection(pypm, project, flags, expected) -> None:
    root, server = project
    r = pypm("sync", "--locked", *flags, cwd=root)
    assert r.returncode == 0, r.stderr
    assert_venv_exact(root / ".venv", expected)


def test_switching_selections_adds_and_removes_exactly(pypm, project) -> None:
    root, server = project
    pypm("sync", "--locked", "--all-extras", "--group", "docs", cwd=root, check=True)
    assert installed(root / ".venv") == {**BASE, **DEV, **DOCS, "speed": "1.0", "widget": "1.0"}
    server.clear_requests()
    pypm("sync", "--locked", "--only-group", "docs", cwd=root, check=True)
    assert_venv_exact(root / ".venv", DOCS)
    pypm("sync", "--locked", cwd=root, check=True)
    assert_venv_exact(root / ".venv", {**BASE, **DEV})
    assert [p for _, p, _ in server.requests if p.endswith(".whl")] == []  # all from the cache


def _requirements(pypm, root, *flags) -> set[str]:
    r = pypm("export", "--format", "requirements.txt", *flags, cwd=root)
    assert r.returncode == 0, r.stderr
    return {line.split("==")[0] for line in r.stdout.splitlines() if "==" in line and not line.startswith("#")}


def test_export_follows_the_same_selection_flags(pypm, project) -> None:
    root, _ = project
    assert _requirements(pypm, root) == {"alpha", "beta", "devtool"}
    assert _requirements(pypm, root, "--no-dev") == {"alpha", "beta"}
    assert _requirements(pypm, root, "--extra", "fast", "--no-dev") == {"alpha", "beta", "speed"}
    assert _requirements(pypm, root, "--all-extras") == {"alpha", "beta", "devtool", "speed", "widget"}
    assert _requirements(pypm, root, "--group", "docs") == {"alpha", "beta", "devtool", "doctool", "docdep"}
    assert _requirements(pypm, root, "--only-group", "docs") == {"doctool", "docdep"}
    r = pypm("export", "--only-group", "docs", cwd=root)  # pylock.toml
    assert r.returncode == 0, r.stderr
    names = {line.split('"')[1] for line in r.stdout.splitlines() if line.startswith("name = ")}
    assert names == {"doctool", "docdep"}, r.stdout


def test_unknown_only_group_is_named_and_nothing_changes(pypm, project) -> None:
    root, _ = project
    r = pypm("sync", "--locked", "--only-group", "nosuch", cwd=root)
    assert r.returncode == 2 and "nosuch" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (root / ".venv").exists()
    r = pypm("export", "--only-group", "nosuch", cwd=root)
    assert r.returncode == 2 and "nosuch" in r.stderr, r.stderr


def test_run_uses_a_venv_synced_for_more_and_exact_makes_it_the_same(pypm, project) -> None:
    """`pypm run` (and shell) leave a .venv synced with more extras or groups as it is, as `uv run`
    does; a selection it does not hold is added to what the venv holds; --exact syncs exactly."""
    root, server = project
    venv = root / ".venv"
    everything = {**BASE, **DEV, **DOCS, "speed": "1.0", "widget": "1.0"}
    pypm("sync", "--locked", "--all-extras", "--group", "docs", cwd=root, check=True)
    for flags in ((), ("--no-dev",), ("--extra", "gui"), ("--group", "docs"), ("--only-group", "dev")):
        r = pypm("run", "--no-sandbox", *flags, "--", "python", "-c", "print('ran')", cwd=root)
        assert r.returncode == 0 and r.stdout == "ran\n" and "Synced" not in r.stderr, (flags, r.stderr)
        assert installed(venv) == everything, flags
    r = pypm("run", "--no-sandbox", "--exact", "--", "python", "-c", "print('ran')", cwd=root)
    assert r.returncode == 0 and r.stdout == "ran\n", r.stderr
    assert_venv_exact(venv, {**BASE, **DEV})
    r = pypm("run", "--no-sandbox", "--extra", "fast", "--", "python", "-c", "print('ran')", cwd=root)
    assert r.returncode == 0, r.stderr  # not held: synced
    assert_venv_exact(venv, {**BASE, **DEV, "speed": "1.0"})
    r = pypm("run", "--no-sandbox", "--", "python", "-c", "print('ran')", cwd=root)  # (the fast path, now)
    assert r.returncode == 0 and "Synced" not in r.stderr, r.stderr
    assert_venv_exact(venv, {**BASE, **DEV, "speed": "1.0"})
    # a selection not held is added to the one the venv was synced for, not put in its place
    r = pypm("run", "--no-sandbox", "--extra", "gui", "--group", "docs", "--", "python", "-c", "pass", cwd=root)
    assert r.returncode == 0, r.stderr
    assert_venv_exact(venv, everything)
    # `pypm sync` is exact
    pypm("sync", "--locked", "--extra", "gui", cwd=root, check=True)
    assert_venv_exact(venv, {**BASE, **DEV, "widget": "1.0"})


def test_add_and_remove_keep_the_selection_the_venv_was_synced_for(pypm, project) -> None:
    """The sync `pypm add`/`remove` make keeps the extras and groups .venv was synced for (the
    ones the project still declares); what the new lock no longer holds goes."""
    root, server = project
    venv = root / ".venv"
    pypm("sync", "--locked", "--extra", "gui", "--group", "docs", cwd=root, check=True)
    r = pypm("add", "speed", cwd=root, env={"PYPM_INDEX_URL": server.url})
    assert r.returncode == 0, r.stderr
    assert_venv_exact(venv, {**BASE, **DEV, **DOCS, "widget": "1.0", "speed": "1.0"})
    r = pypm("remove", "speed", cwd=root, env={"PYPM_INDEX_URL": server.url})
    assert r.returncode == 0, r.stderr
    assert_venv_exact(venv, {**BASE, **DEV, **DOCS, "widget": "1.0"})
    # an extra the project no longer declares is not asked for again
    text = (root / "pyproject.toml").read_text()
    (root / "pyproject.toml").write_text(text.replace('gui = ["widget"]', ''))
    r = pypm("run", "--no-sandbox", "--", "python", "-c", "pass", cwd=root, env={"PYPM_INDEX_URL": server.url})
    assert r.returncode == 0, r.stderr
    assert_venv_exact(venv, {**BASE, **DEV, **DOCS})
