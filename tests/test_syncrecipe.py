"""The fresh-venv fast path (pypm.syncrecipe) and its kept plan (pypm.venvplan): when it is used, when not, what it builds."""

from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pypm import syncrecipe, venvplan
from pypm.fastpath import json_dumps
from tests.e2e import test_sync as _e2e_sync
from tests.e2e.test_sync import _imported, _state_without_mtimes, _venv_files, assert_venv_exact, site_packages

small = _e2e_sync.small  # the synthetic project fixture, shared

EXPECTED = {"alpha": "1.0", "beta": "2.0", "devtool": "3.0"}


def _plan_file(pypm, project: Path) -> Path:
    recipe = syncrecipe.recipe_path(str(pypm.cache_dir), project)
    return Path(syncrecipe.plan_path(recipe))


def _fresh(pypm, project: Path, *args: str) -> set[str]:
    """rm -rf .venv && pypm sync --frozen: the modules it imported."""
    return _imported(_fresh_stderr(pypm, project, *args))


def _fresh_stderr(pypm, project: Path, *args: str) -> str:
    subprocess.run(["rm", "-rf", str(project / ".venv")], check=True)
    r = pypm("sync", "--frozen", *args, cwd=project, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 0, r.stderr
    return r.stderr


def _imported_by_pypm(stderr: str) -> list[str]:
    """The modules imported once the pypm package was (-X importtime lists them as they finish)."""
    names = [line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
             if line.startswith("import time:") and line.count("|") == 2]
    return names[names.index("pypm") + 1:]


@pytest.fixture
def planned(pypm, small):
    """A project synced in full, then rebuilt once by the fast path, which kept its plan."""
    project, server, _ = small
    pypm("sync", "--frozen", cwd=project, check=True)
    venv = project / ".venv"
    full = (_venv_files(venv), _state_without_mtimes(venv))
    assert _plan_file(pypm, project).is_file()  # kept by the full sync, from the venv it built
    assert (site_packages(venv) / "alpha-1.0.dist-info" / "RECORD").stat().st_nlink == 2
    _plan_file(pypm, project).unlink()
    mods = _fresh(pypm, project)
    assert "pypm.cli" not in mods and "pypm.installer" in mods  # worked out by the first fresh venv, and kept
    assert _plan_file(pypm, project).is_file()
    return project, server, full


def test_the_kept_plan_builds_the_venv_the_full_sync_builds_importing_almost_nothing(pypm, planned) -> None:
    project, server, (files, state) = planned
    venv = project / ".venv"
    assert (_venv_files(venv), _state_without_mtimes(venv)) == (files, state)
    server.clear_requests()
    mods = _imported_by_pypm(_fresh_stderr(pypm, project))
    # what the test runner's own start-up did not import already (site-packages' .pth files)
    assert set(mods) <= {"pypm.__main__", "pypm.fastpath", "pypm.venvstate", "pypm.syncrecipe", "pypm.venvplan",
                         "pypm.fsalloc",
                         "__future__", "_sha256", "_json", "fcntl", "marshal", "_thread", "time"}, mods
    assert server.requests == []
    # The plan keeps each link list's shared destination prefix, not every destination, and each
    # entry's check lists only the files it does not link (venvplan._compact).
    plan = marshal.loads(_plan_file(pypm, project).read_bytes())
    links = [(e, s, d) for g in plan["groups"] for e, s, d in g["links"]]
    assert any(isinstance(d, str) and d.endswith("/site-packages/") for _, _, d in links), links
    # (what does not share it, as a wheel's .data files, keeps its own destinations)
    assert all(isinstance(d, str) or not any(x.endswith("/" + y) for y, x in zip(s, d)) for _, s, d in links)
    linked: dict[str, set[str]] = {e: set() for e, _, _ in links}
    for e, s, _ in links:
        linked[e].update(s)
    assert all(not set(extra) & linked.get(e, set()) for e, _, extra in plan["checks"])
    assert sorted(k for _, _, keys in venvplan._check_keys(plan) for k in keys) == sorted(
        [k for s in linked.values() for k in s] + [k for _, _, extra in plan["checks"] for k in extra])
    assert (_venv_files(venv), _state_without_mtimes(venv)) == (files, state)
    assert_venv_exact(venv, EXPECTED)
    assert not (venv / ".pypm-building").exists()
    # state.json is written as venvstate.write_state writes it, byte for byte but for mtimes
    text = (venv / ".pypm" / "state.json").read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    # the scripts are executable and the hard links are the store's files
    assert os.access(venv / "bin" / "alpha-hello", os.X_OK)
    assert (site_packages(venv) / "beta" / "__init__.py").stat().st_nlink >= 2
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "import alpha; print(alpha.A)"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "alpha beta", out.stderr
    r = pypm("verify", "--venv", cwd=project, check=True)  # every file hashed against its RECORD
    assert "everything matches" in r.stdout + r.stderr, r.stdout + r.stderr
    r = pypm("sync", "--frozen", cwd=project, check=True)
    assert "nothing to do" in r.stderr, r.stderr


def _destinations(srcs: list[str], dsts: list[str] | str) -> list[str]:
    """A plan's link destinations as a list (a plan keeps one prefix when they share it)."""
    return [dsts + s for s in srcs] if isinstance(dsts, str) else list(dsts)


@pytest.mark.parametrize("damage", ["other-writable", "other-recipe", "outside", "dotdot", "garbage", "format",
                                    "blob-name", "entry-outside-store", "entry-dotdot", "link-dst-outside",
                                    "link-dst-dotdot", "link-src-dotdot", "through-symlink",
                                    "prefix-outside", "prefix-dotdot", "prefix-no-slash", "prefix-through-symlink",
                                    "prefix-count"])
def test_a_plan_that_may_not_be_trusted_is_worked_out_again(pypm, planned, damage: str) -> None:
    project, _, (files, state) = planned
    path = _plan_file(pypm, project)
    plan = marshal.loads(path.read_bytes())
    if damage == "other-writable":
        os.chmod(path, 0o666)
    elif damage == "garbage":
        path.write_bytes(b"\x00not marshal")
    else:
        if damage == "other-recipe":
            plan["recipe-sha256"] = "0" * 64
        elif damage == "outside":
            plan["groups"][1]["files"].append(("/tmp/evil", b"x", 0o644))
        elif damage == "dotdot":
            plan["groups"][0]["dirs"].append("lib/../../../escape")
        elif damage == "format":
            plan["format"] = venvplan.PLAN_FORMAT + 1
        elif damage in ("entry-outside-store", "entry-dotdot"):
            entry, srcs, dsts = plan["groups"][0]["links"][0]
            bad = "/etc" if damage == "entry-outside-store" else entry + "/../../../.."
            plan["groups"][0]["links"][0] = (bad, srcs, dsts)
        elif damage in ("link-dst-outside", "link-dst-dotdot", "link-src-dotdot"):
            # a link's own paths (not only its entry) must stay inside the store entry and the venv
            entry, srcs, dsts = plan["groups"][1]["links"][0]
            dsts = _destinations(srcs, dsts)
            if damage == "link-src-dotdot":
                srcs = [*srcs, "../" * 12 + str(project / "pyproject.toml").lstrip("/")]
                dsts = [*dsts, "escaped-pyproject.toml"]
            else:
                srcs = [*srcs, srcs[0]]
                dsts = [*dsts, str(project.parent / "escape") if damage == "link-dst-outside" else "../escape"]
            plan["groups"][1]["links"][0] = (entry, srcs, dsts)
        elif damage.startswith("prefix-"):
            # a link list kept as one destination prefix (venvplan._compact) is checked as a whole
            [(i, entry, srcs, pre)] = [(i, e, s, d) for i, (e, s, d) in enumerate(plan["groups"][0]["links"])
                                       if isinstance(d, str)][:1]
            if damage == "prefix-outside":
                pre = str(project.parent / "escape") + "/"
            elif damage == "prefix-dotdot":
                pre = "../escape/"
            elif damage == "prefix-no-slash":  # "." + "./escape": each part harmless, together "../escape"
                pre, srcs = ".", [*srcs, "./escape"]
            elif damage == "prefix-through-symlink":  # "up" -> a directory outside, ready to take the links
                target = project.parent / "escape-target"
                for src in srcs:
                    (target / src).parent.mkdir(parents=True, exist_ok=True)
                plan["symlinks"].append((str(target), "up"))
                pre = "up/"
            else:  # a destination list that does not pair with its sources
                plan["groups"][0]["links"][i] = (entry, srcs, _destinations(srcs, pre)[:-1])
            if damage != "prefix-count":
                plan["groups"][0]["links"][i] = (entry, srcs, pre)
        elif damage == "through-symlink":  # a path below one of the plan's own symlinks (as lib64 -> lib)
            plan["symlinks"].append((str(project.parent), "up"))
            plan["groups"][0]["dirs"].append("up/escape")
        elif damage == "blob-name":
            name, d = plan["groups"][0]["blobs"][0]
            plan["groups"][0]["blobs"][0] = ("../" + name, d)
        path.write_bytes(marshal.dumps(plan))
        os.chmod(path, 0o600)
    mods = _fresh(pypm, project)
    assert "pypm.installer" in mods and "pypm.cli" not in mods  # refused, then worked out again
    assert not (project.parent / "escape").exists() and not Path("/tmp/evil").exists()
    assert not [p for p in (project.parent / "escape-target").rglob("*") if p.is_file()]
    venv = project / ".venv"
    assert (_venv_files(venv), _state_without_mtimes(venv)) == (files, state)
    assert "pypm.installer" not in _fresh(pypm, project)  # the new plan serves the next one


def test_an_interpreter_binary_that_changed_is_not_trusted_to_the_plan(pypm, planned) -> None:
    project, _, _ = planned
    path = _plan_file(pypm, project)
    plan = marshal.loads(path.read_bytes())
    exe, real, size, mtime = plan["interpreter"]
    plan["interpreter"] = [exe, real, size, mtime - 1]  # as if the binary was replaced since
    path.write_bytes(marshal.dumps(plan))
    assert "pypm.installer" in _fresh(pypm, project)
    assert marshal.loads(path.read_bytes())["interpreter"] == [exe, real, size, mtime]


def test_a_store_file_written_since_it_was_unpacked_sends_the_planned_sync_down_the_full_path(pypm, planned) -> None:
    project, _, (files, _state) = planned
    [store] = [p for p in (pypm.cache_dir / "unpacked").rglob("beta/__init__.py")]
    good = store.read_bytes()
    time.sleep(0.01)
    with open(store, "r+b") as f:
        f.write(b"X" * len(good))
    mods = _fresh(pypm, project)
    assert "pypm.cli" in mods  # the plan's check found it; the full path repaired the entry
    venv = project / ".venv"
    assert (site_packages(venv) / "beta" / "__init__.py").read_bytes() == good
    assert _venv_files(venv) == files
    # a store file that is gone: likewise
    os.unlink([p for p in (pypm.cache_dir / "unpacked").rglob("alpha/__init__.py")][0])
    assert "pypm.cli" in _fresh(pypm, project)
    assert _venv_files(venv) == files


FORKED_CHECK = """
import sys
import pypm.venvplan as v
v.FORK_CHECK_MIN = 0  # this small plan's store check forked as torch's is
start = v._start_check
def spy(checks):
    pid = start(checks)
    sys.stderr.write(f"check-pid {pid}\\n")
    return pid
v._start_check = spy
sys.argv = ["pypm", "sync", "--frozen"]
from pypm.__main__ import main
sys.exit(main())
"""


def test_a_big_plans_store_check_runs_in_a_child_and_a_written_store_file_still_stops_it(pypm, planned) -> None:
    project, _, (files, state) = planned
    venv = project / ".venv"

    def fresh() -> tuple[str, set[str]]:
        subprocess.run(["rm", "-rf", str(venv)], check=True)
        r = subprocess.run([sys.executable, "-c", FORKED_CHECK], cwd=project, capture_output=True, text=True,
                           env=dict(pypm.env, PYTHONPROFILEIMPORTTIME="1"), timeout=120)
        assert r.returncode == 0, r.stderr
        [pid] = [int(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("check-pid ")]
        assert pid > 0, r.stderr  # forked, not checked in-process
        return r.stderr, _imported(r.stderr)

    _, mods = fresh()
    assert "pypm.cli" not in mods
    assert (_venv_files(venv), _state_without_mtimes(venv)) == (files, state)
    # A store file written since it was unpacked: the child's verdict comes after the links were
    # made, and the venv they began is discarded; the full path repairs the entry and builds it.
    [store] = [p for p in (pypm.cache_dir / "unpacked").rglob("beta/__init__.py")]
    good = store.read_bytes()
    time.sleep(0.01)
    with open(store, "r+b") as f:
        f.write(b"X" * len(good))
    _, mods = fresh()
    assert "pypm.cli" in mods
    assert (site_packages(venv) / "beta" / "__init__.py").read_bytes() == good
    assert (_venv_files(venv), _state_without_mtimes(venv)) == (files, state)
    assert not list(project.glob(".venv.pypm-old-*"))


def test_a_failed_planned_build_leaves_no_venv(pypm, planned) -> None:
    """A link that cannot be made (the store file is gone after the plan's check passed... here:
    a plan naming a file the entry does not have) discards the half-built venv; the full sync follows."""
    project, _, (files, _state) = planned
    path = _plan_file(pypm, project)
    plan = marshal.loads(path.read_bytes())
    entry, srcs, dsts = plan["groups"][0]["links"][0]
    dsts = _destinations(srcs, dsts)
    plan["groups"][0]["links"][0] = (entry, [*srcs, "no-such-file.py"], [*dsts, dsts[0] + ".extra"])
    path.write_bytes(marshal.dumps(plan))
    mods = _fresh(pypm, project)
    assert "pypm.cli" in mods
    venv = project / ".venv"
    assert _venv_files(venv) == files
    assert not list(project.glob(".venv.pypm-old-*"))


def test_outside() -> None:
    ok = ["a", "a/b.py", "lib/python3.11/site-packages/x..y/z", ".pypm/state.json", "a/./b"]
    assert not venvplan._outside(ok)
    for bad in ["/etc/passwd", "..", "../x", "a/../../x", "a/..", ""]:
        assert venvplan._outside([*ok, bad]), bad


def test_values_kept_apart_agree() -> None:
    from pypm.config import cache_dir
    from pypm.venv import BUILDING_MARKER

    assert venvplan._BUILDING_MARKER == BUILDING_MARKER
    assert syncrecipe._cache_root() == str(cache_dir())


def test_json_dumps_is_json_dumps_indented() -> None:
    values = [{"b": [1, -2, {"c": None, "d": True, "e": False}], "a": "é\"\\\n\x00", "z": {}, "y": []},
              [], {}, "x", 0, [[[]]], {"k": {"k": {"k": [1]}}}]
    for v in values:
        assert json_dumps(v) == json.dumps(v, indent=2, sort_keys=True)
        # one line, as toolrun keys its environments (a difference would orphan every one made before)
        assert json_dumps(v, indent=False) == json.dumps(v, sort_keys=True)
    with pytest.raises(TypeError):
        json_dumps({1: 2})
    with pytest.raises((TypeError, ValueError)):
        json_dumps(1.5)


def _kept_copies(pypm, project: Path) -> list[Path]:
    key = _plan_file(pypm, project).name[: -len(".plan")]
    return sorted(p for p in _plan_file(pypm, project).parent.iterdir() if p.name.startswith(key + ".")
                  and p.name.endswith(".blob"))


def test_the_files_the_wheels_bring_are_linked_from_the_plans_copies_and_checked(pypm, planned) -> None:
    """RECORD, INSTALLER, REQUESTED, pypm_source.json and scripts are hard links to the plan's
    copies; a copy written since the plan was made (through a venv's link), or a store entry
    unpacked again since, makes the next fresh venv work the plan out again."""
    project, _, (files, state) = planned
    venv = project / ".venv"
    copies = _kept_copies(pypm, project)
    info = site_packages(venv) / "alpha-1.0.dist-info"
    for p in (info / "RECORD", info / "INSTALLER", info / "pypm_source.json", venv / "bin" / "alpha-hello"):
        assert p.stat().st_nlink == 2 and any(os.path.samefile(p, c) for c in copies), p
    assert not any(os.path.samefile(venv / "pyvenv.cfg", c) for c in copies)  # the user's to edit
    # the full sync's O(files) check takes every dist as installed and intact
    (venv / ".pypm" / "state.json").unlink()
    r = pypm("sync", "--frozen", cwd=project, check=True)
    assert "nothing to do" in r.stderr, r.stderr  # (the CLI: fast_sync needs state.json)
    # a copy written through a venv's link
    time.sleep(0.01)
    with open(info / "INSTALLER", "r+b") as f:
        f.write(b"evil\n")
    mods = _fresh(pypm, project)
    assert "pypm.installer" in mods and "pypm.cli" not in mods
    assert (info / "INSTALLER").read_bytes() == b"pypm\n"
    assert (_venv_files(venv), _state_without_mtimes(venv)) == (files, state)
    new = _kept_copies(pypm, project)
    assert len(new) == len(copies) and not set(new) & set(copies)  # the old copies are gone
    # a store entry unpacked again (its tree file newer than the plan)
    trees = [p for p in (pypm.cache_dir / "wheels").rglob("merkle.json")]
    assert trees
    later = time.time_ns() + 1_000_000_000
    os.utime(trees[0], ns=(later, later))
    assert "pypm.installer" in _fresh(pypm, project)


def test_forget_recipe_removes_the_recipe_its_plan_and_the_plans_copies(pypm, planned) -> None:
    project, _, _ = planned
    plan = _plan_file(pypm, project)
    key = plan.name[: -len(".plan")]
    assert len([p for p in plan.parent.iterdir() if p.name.startswith(key)]) > 3
    syncrecipe.forget_recipe(str(pypm.cache_dir), project)
    assert not [p for p in plan.parent.iterdir() if p.name.startswith(key)]
    assert "pypm.cli" in _fresh(pypm, project)  # no recipe: the full path


def test_the_planned_venvs_site_packages_spreads_its_packages(pypm, planned) -> None:
    """As the full sync's (pypm.fsalloc): each package directory in a block group of its own."""
    from tests.test_fsalloc import _topdir

    project, _, _ = planned
    sp = site_packages(project / ".venv")
    probe = project / "probe"
    probe.mkdir()
    from pypm.fsalloc import spread_subdirs

    if not spread_subdirs(probe) or not _topdir(probe):
        pytest.skip(f"the file system under {project} has no top-directory attribute (not ext4?)")
    assert _topdir(sp)


def test_the_plan_the_full_sync_keeps_serves_the_first_fresh_venv(pypm, small) -> None:
    project, _, _ = small
    pypm("sync", "--frozen", cwd=project, check=True)
    venv = project / ".venv"
    files, state = _venv_files(venv), _state_without_mtimes(venv)
    mods = _fresh(pypm, project)
    assert "pypm.installer" not in mods and "pypm.cli" not in mods
    assert (_venv_files(venv), _state_without_mtimes(venv)) == (files, state)
    # a full sync whose venv does not match what the plan would write keeps no plan
    installer = site_packages(venv) / "alpha-1.0.dist-info" / "INSTALLER"
    installer.unlink()
    installer.write_bytes(b"other\n")
    from pypm.syncrecipe import write_recipe

    recipe = json.loads(Path(syncrecipe.recipe_path(str(pypm.cache_dir), project)).read_text())
    syncrecipe.forget_recipe(str(pypm.cache_dir), project)
    write_recipe(str(pypm.cache_dir), project, recipe["state"], [tuple(w) for w in recipe["wheels"]])
    assert not _plan_file(pypm, project).exists()
    assert not _kept_copies(pypm, project)


def test_a_kept_copy_replaced_by_a_symlink_is_not_trusted(pypm, planned, tmp_path) -> None:
    """A copy that is a symlink (here to a file of the same bytes, mode and age, so only its kind
    differs) is not the plan's own file: its owner and age were the target's, and the venv would
    get a link to whatever it points at."""
    project, _, (files, state) = planned
    venv = project / ".venv"
    info = site_packages(venv) / "alpha-1.0.dist-info"
    [copy] = [c for c in _kept_copies(pypm, project) if os.path.samefile(c, info / "INSTALLER")]
    st = copy.stat()
    target = tmp_path / "elsewhere"
    target.write_bytes(copy.read_bytes())
    os.chmod(target, st.st_mode & 0o7777)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    copy.unlink()
    copy.symlink_to(target)
    mods = _fresh(pypm, project)
    assert "pypm.installer" in mods and "pypm.cli" not in mods  # refused, worked out again
    assert not os.path.samefile(info / "INSTALLER", target)
    assert (_venv_files(venv), _state_without_mtimes(venv)) == (files, state)


def _tree(venv: Path) -> dict[str, tuple]:
    """Every path under the venv but state.json: its kind, permission bits and bytes or target."""
    import hashlib
    import stat as st_

    out: dict[str, tuple] = {}
    for p in sorted(venv.rglob("*")):
        rel = str(p.relative_to(venv))
        if rel == ".pypm/state.json" or "__pycache__" in p.parts:
            continue
        s = p.lstat()
        if st_.S_ISLNK(s.st_mode):
            out[rel] = ("link", os.readlink(p))
        elif st_.S_ISDIR(s.st_mode):
            out[rel] = ("dir", oct(s.st_mode & 0o7777))
        else:
            out[rel] = ("file", oct(s.st_mode & 0o7777), hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_planned_venv_is_the_full_syncs_tree_with_its_modes(pypm, small, umask: int) -> None:
    """Every path, mode, symlink and byte (not only site-packages' and bin's contents), under the
    user's umask: the full sync's venv, the first fresh venv (plan worked out) and a later one."""
    project, _, _ = small
    old = os.umask(umask)
    try:
        pypm("sync", "--frozen", cwd=project, check=True)
        venv = project / ".venv"
        full, state = _tree(venv), _state_without_mtimes(venv)
        for _ in range(2):  # the plan the full sync kept, then the one the first fresh venv kept
            mods = _fresh(pypm, project)
            assert "pypm.cli" not in mods
            assert _tree(venv) == full
            assert _state_without_mtimes(venv) == state
            _plan_file(pypm, project).unlink()
    finally:
        os.umask(old)


def test_a_recipe_others_can_write_is_not_trusted(pypm, planned) -> None:
    """The recipe names the store entries a fresh venv is built from (the plan is made from it and
    keyed by its bytes): like the plan, it is used only when the cache user owns it and nobody
    else can write it; the full sync then writes it again."""
    project, _, (files, state) = planned
    recipe = Path(syncrecipe.recipe_path(str(pypm.cache_dir), project))
    os.chmod(recipe, 0o666)
    assert "pypm.cli" in _fresh(pypm, project)  # the full path
    venv = project / ".venv"
    assert (_venv_files(venv), _state_without_mtimes(venv)) == (files, state)
    assert not recipe.stat().st_mode & 0o022
    assert "pypm.cli" not in _fresh(pypm, project)


@pytest.mark.parametrize("which", ["plan", "recipe"])
def test_a_fifo_in_place_of_the_plan_or_recipe_does_not_hang_the_sync(pypm, planned, which: str) -> None:
    project, _, (files, state) = planned
    recipe = Path(syncrecipe.recipe_path(str(pypm.cache_dir), project))
    path = _plan_file(pypm, project) if which == "plan" else recipe
    path.unlink()
    os.mkfifo(path, 0o600)
    subprocess.run(["rm", "-rf", str(project / ".venv")], check=True)
    r = subprocess.run([sys.executable, "-m", "pypm", "sync", "--frozen"], cwd=project, env=pypm.env,
                       capture_output=True, text=True, timeout=60)  # (opened blocking: waited for a writer)
    assert r.returncode == 0, r.stderr
    venv = project / ".venv"
    assert (_venv_files(venv), _state_without_mtimes(venv)) == (files, state)


def test_ctrl_c_before_the_venv_is_built_is_reported_not_a_traceback(pypm, planned) -> None:
    """SIGINT (a real one, sent by the process to itself) while the plan is worked out: 'interrupted'
    and 130 as the CLI says it, no traceback, no venv; the next sync builds it."""
    project, _, (files, state) = planned
    _plan_file(pypm, project).unlink()
    subprocess.run(["rm", "-rf", str(project / ".venv")], check=True)
    inject = ("import os, signal, sys; import pypm.venvplan as v; real = v.make_plan\n"
              "def make_plan(*a):\n    os.kill(os.getpid(), signal.SIGINT)\n    return real(*a)\n"
              "v.make_plan = make_plan; sys.argv = ['pypm', 'sync', '--frozen']\n"
              "from pypm.__main__ import main; sys.exit(main())\n")
    r = subprocess.run([sys.executable, "-c", inject], cwd=project, env=pypm.env, capture_output=True, text=True,
                       timeout=60)
    assert (r.returncode, r.stderr.strip()) == (130, "interrupted"), r.stderr
    assert not (project / ".venv").exists()
    assert "pypm.cli" not in _fresh(pypm, project)
    venv = project / ".venv"
    assert (_venv_files(venv), _state_without_mtimes(venv)) == (files, state)


def test_the_install_plans_a_sync_made_are_reused_only_for_the_same_venv_and_store(pypm, small, tmp_path) -> None:
    """write_recipe's plan from the install plans the sync just made is the plan made from scratch;
    install plans for another venv (or from another store) are not used."""
    from pypm.installer import plan_install
    from pypm.interpreter import query_interpreter
    from pypm.venv import VenvLayout

    project, _, _ = small
    pypm("sync", "--frozen", cwd=project, check=True)
    cache = str(pypm.cache_dir)
    rpath = syncrecipe.recipe_path(cache, project)
    data = Path(rpath).read_bytes()
    recipe = json.loads(data)
    sha = __import__("hashlib").sha256(data).hexdigest()
    venv = os.path.join(os.path.realpath(project), ".venv")
    interp = query_interpreter(recipe["state"]["interpreter"]["executable"])

    def plans_for(venv_root: str, store: str) -> dict:
        layout = VenvLayout.for_interpreter(Path(venv_root), interp)
        return {s: plan_install(layout, Path(store, "unpacked", s[:2], s), wheel_filename=fn, wheel_sha256=s)
                for _, _, s, fn in recipe["wheels"]}

    scratch = venvplan.make_plan(cache, recipe, sha, venv)
    assert scratch is not None and len(recipe["wheels"]) == 3
    assert venvplan.make_plan(cache, recipe, sha, venv, known=plans_for(venv, cache)) == scratch
    other_venv = plans_for(str(tmp_path / "elsewhere" / ".venv"), cache)
    other_store = plans_for(venv, cache)
    for p in other_store.values():  # the same plans, linking from another store's entries
        p.links = [(str(tmp_path / "store") + src[len(cache):], dst) for src, dst in p.links]
    assert all(p.links for p in other_store.values())
    for known in (other_venv, other_store):
        assert venvplan.make_plan(cache, recipe, sha, venv, known=known) == scratch
