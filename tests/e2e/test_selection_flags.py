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


def _foreign_dist(venv, name: str = "stray", installer: str = "pip"):
    """A distribution another installer put into the venv (as `pip install` would): a module, its
    dist-info with METADATA, INSTALLER and RECORD, and no pypm_source.json."""
    from tests.e2e.test_sync import site_packages

    sp = site_packages(venv)
    info = sp / f"{name}-1.0.dist-info"
    info.mkdir()
    (sp / f"{name}.py").write_text("VALUE = 'foreign'\n")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "INSTALLER").write_text(installer + "\n")
    (info / "RECORD").write_text(f"{name}.py,,\n{name}-1.0.dist-info/METADATA,,\n"
                                 f"{name}-1.0.dist-info/INSTALLER,,\n{name}-1.0.dist-info/RECORD,,\n")
    return sp / f"{name}.py"


def _touch_pyproject(root) -> None:
    # new bytes, same project: the next run re-syncs (state.json keeps pyproject.toml's hash)
    p = root / "pyproject.toml"
    p.write_text(p.read_text() + "\n# touched\n")


def test_run_add_and_sync_inexact_keep_what_another_installer_put_there(pypm, project) -> None:
    """As uv: a sync `pypm run`/`shell`/`add` make leaves packages another installer put into .venv
    (pip, by hand); `pypm sync`, `pypm remove` and `run --exact` remove them; `sync --inexact`
    removes nothing. The no-op checks of the exact ones must not pass a venv that holds more."""
    root, server = project
    venv = root / ".venv"
    run_ok = ("run", "--no-sandbox", "--", "python", "-c", "import stray; print(stray.VALUE)")
    pypm("sync", "--locked", cwd=root, check=True)
    module = _foreign_dist(venv)
    r = pypm(*run_ok, cwd=root)  # the state matches: no sync at all
    assert r.returncode == 0 and r.stdout == "foreign\n" and "Synced" not in r.stderr, r.stderr
    _touch_pyproject(root)
    r = pypm(*run_ok, cwd=root)  # a sync, which keeps it, and says so
    assert r.returncode == 0 and r.stdout == "foreign\n", r.stderr
    assert "Kept 1 installed package(s)" in r.stderr and "stray==1.0" in r.stderr, r.stderr
    assert installed(venv) == {**BASE, **DEV, "stray": "1.0"}
    # the bare `pypm sync` (the entry point's no-op check) is exact: it removes it
    r = pypm("sync", cwd=root)
    assert r.returncode == 0 and "nothing to do" not in r.stderr and "- stray==1.0" in r.stderr, r.stderr
    assert "stray" not in installed(venv) and not module.exists()
    # `pypm sync --extra fast` (the CLI's no-op check), after a run that kept one again
    module = _foreign_dist(venv)
    pypm("run", "--no-sandbox", "--extra", "fast", "--", "python", "-c", "pass", cwd=root, check=True)
    assert {"stray", "speed"} <= set(installed(venv))
    r = pypm("sync", "--extra", "fast", cwd=root)
    assert r.returncode == 0 and "- stray==1.0" in r.stderr, r.stderr
    assert "stray" not in installed(venv) and not module.exists()
    assert_venv_exact(venv, {**BASE, **DEV, "speed": "1.0"})
    # `run --exact` removes it though state.json says the venv is current
    pypm("sync", "--locked", cwd=root, check=True)
    module = _foreign_dist(venv)
    r = pypm("run", "--no-sandbox", "--exact", "--", "python", "-c", "pass", cwd=root)
    assert r.returncode == 0 and "stray" not in installed(venv) and not module.exists(), r.stderr
    # `add` keeps it, `remove` (exact, as uv's) removes it
    module = _foreign_dist(venv)
    r = pypm("add", "speed", cwd=root, env={"PYPM_INDEX_URL": server.url})
    assert r.returncode == 0 and "stray" in installed(venv) and module.exists(), r.stderr
    r = pypm("remove", "speed", cwd=root, env={"PYPM_INDEX_URL": server.url})
    assert r.returncode == 0 and "stray" not in installed(venv) and not module.exists(), r.stderr
    # `sync --inexact` removes nothing, pypm's own packages of a larger selection included
    pypm("sync", "--locked", "--all-extras", cwd=root, check=True)
    module = _foreign_dist(venv)
    r = pypm("sync", "--locked", "--inexact", "--dry-run", cwd=root)
    assert r.returncode == 0 and "Nothing to do" in r.stdout, r.stdout
    assert "Kept, as the selection does not ask for them: speed==1.0, stray==1.0, widget==1.0." in r.stdout
    r = pypm("sync", "--locked", "--inexact", cwd=root)
    assert r.returncode == 0 and module.exists(), r.stderr
    assert {"stray", "speed", "widget"} <= set(installed(venv))
    r = pypm("sync", "--locked", "--inexact", cwd=root)  # and is then a no-op
    assert r.returncode == 0 and "nothing to do" in r.stderr, r.stderr
    r = pypm("sync", "--locked", cwd=root)
    assert r.returncode == 0 and "stray" not in installed(venv) and "speed" not in installed(venv), r.stderr


def test_a_package_pypm_installed_is_not_kept_by_run_and_a_broken_foreign_one_goes(pypm, project) -> None:
    """What `run` keeps is only what another installer put there: a dist of pypm's own the
    selection no longer wants goes (a pypm_source.json names it), and so does a foreign dist whose
    files are gone (nothing could use it)."""
    root, server = project
    venv = root / ".venv"
    pypm("sync", "--locked", "--extra", "fast", cwd=root, check=True)
    # pypm's own `speed`, no longer asked for once the extra is gone from the project
    text = (root / "pyproject.toml").read_text()
    (root / "pyproject.toml").write_text(text.replace('fast = ["speed"]', ''))
    module = _foreign_dist(venv, "broken")
    module.unlink()  # RECORD names a file that is not there
    r = pypm("run", "--no-sandbox", "--", "python", "-c", "pass", cwd=root, env={"PYPM_INDEX_URL": server.url})
    assert r.returncode == 0, r.stderr
    assert "speed" not in installed(venv) and "broken" not in installed(venv), r.stderr
    assert "Kept" not in r.stderr, r.stderr


def test_sync_check_fails_unless_the_venv_is_in_sync_and_changes_nothing(pypm, project) -> None:
    """`pypm sync --check` (as uv's): the plan as --dry-run prints it, exit 1 when .venv would
    change or pypm.lock is not current, exit 0 when in sync; never a change to .venv or pypm.lock."""
    root, server = project
    venv = root / ".venv"
    lock_before = (root / "pypm.lock").read_bytes()
    r = pypm("sync", "--check", cwd=root)
    assert r.returncode == 1 and "Would install 3" in r.stdout, (r.stdout, r.stderr)
    assert f"error: {venv} does not exist" in r.stderr and "hint: run `pypm sync`" in r.stderr, r.stderr
    assert not venv.exists()
    pypm("sync", cwd=root, check=True)
    r = pypm("sync", "--check", cwd=root)
    assert r.returncode == 0 and r.stdout.startswith("Nothing to do: 3 packages"), (r.stdout, r.stderr)
    assert pypm("sync", "--check", "--extra", "fast", cwd=root).returncode == 1  # another selection
    # a package another installer put there: exact says no, --inexact says yes
    module = _foreign_dist(venv)
    r = pypm("sync", "--check", cwd=root)
    assert r.returncode == 1 and " - stray==1.0" in r.stdout and "(0 to install, 0 to replace, 1 to remove)" in r.stderr
    assert pypm("sync", "--check", "--inexact", cwd=root).returncode == 0
    assert module.exists()
    pypm("sync", cwd=root, check=True)
    assert not module.exists()
    # a damaged install
    from tests.e2e.test_sync import site_packages

    victim = site_packages(venv) / "beta" / "__init__.py"
    victim.unlink()
    r = pypm("sync", "--check", cwd=root)
    assert r.returncode == 1 and " ~ beta==2.0 (incomplete or modified install)" in r.stdout, r.stdout
    assert not victim.exists()
    pypm("sync", cwd=root, check=True)
    # a stale lock: never re-locked by a check (--frozen plans against it as it is)
    text = (root / "pyproject.toml").read_text()
    (root / "pyproject.toml").write_text(text.replace('dependencies = ["alpha"]', 'dependencies = ["alpha", "speed"]'))
    r = pypm("sync", "--check", cwd=root, env={"PYPM_INDEX_URL": server.url})
    assert r.returncode == 1 and "is out of date with pyproject.toml: .venv cannot be in sync with it" in r.stderr, r.stderr
    assert "--locked" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (root / "pypm.lock").read_bytes() == lock_before
    assert pypm("sync", "--check", "--frozen", cwd=root).returncode == 0
    assert set(installed(venv)) == {"alpha", "beta", "devtool"}


def test_no_install_package_leaves_the_named_packages_out_and_keeps_their_dependencies(pypm, project) -> None:
    """`sync --no-install-package NAME` (as uv's, for a container's dependency layer): the named
    packages are not installed, though the selection has them; their dependencies are. The venv's
    state remembers it, so the same sync again is a no-op, `sync --check` agrees and `verify` does not
    call them missing; a plain sync installs them; a name the lock lacks is refused."""
    root, server = project
    venv = root / ".venv"
    r = pypm("sync", "--locked", "--no-install-package", "Alpha", "--no-install-package", "devtool", cwd=root)
    assert r.returncode == 0, r.stderr
    assert_venv_exact(venv, {"beta": "2.0"})  # alpha's dependency stays
    r = pypm("sync", "--locked", "--no-install-package", "alpha", "--no-install-package", "devtool", cwd=root)
    assert r.returncode == 0 and "nothing to do" in r.stderr, r.stderr
    r = pypm("sync", "--check", "--no-install-package", "alpha", "--no-install-package", "devtool", cwd=root)
    assert r.returncode == 0, r.stderr
    r = pypm("verify", cwd=root)
    assert r.returncode == 0 and "missing" not in r.stdout + r.stderr, r.stdout + r.stderr
    r = pypm("sync", "--check", cwd=root)  # the default selection wants them
    assert r.returncode == 1, r.stderr
    pypm("sync", "--locked", cwd=root, check=True)
    assert_venv_exact(venv, {**BASE, **DEV})
    # an exact sync that leaves one out removes it
    pypm("sync", "--locked", "--no-install-package", "alpha", cwd=root, check=True)
    assert_venv_exact(venv, {"beta": "2.0", **DEV})
    # a name the lock does not hold: said, nothing changed
    r = pypm("sync", "--locked", "--no-install-package", "alhpa", cwd=root)
    assert r.returncode == 2 and "--no-install-package alhpa: not in pypm.lock" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert_venv_exact(venv, {"beta": "2.0", **DEV})
    # run takes it too (its sync leaves alpha out); a plain run syncs the default selection, as uv's
    r = pypm("run", "--no-install-package", "alpha", "--", "python", "-c", "import beta, devtool", cwd=root)
    assert r.returncode == 0, r.stderr
    assert installed(venv) == {"beta": "2.0", **DEV}
    r = pypm("run", "--", "python", "-c", "import alpha", cwd=root)
    assert r.returncode == 0, r.stderr
    assert installed(venv) == {**BASE, **DEV}
