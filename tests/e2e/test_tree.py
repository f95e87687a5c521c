"""End-to-end `pypm tree`: a real lock made against a real index on 127.0.0.1, drawn exactly."""

from __future__ import annotations

import pytest

from tests.e2e.test_lock import write_project


@pytest.fixture
def locked(dists, index_server, tmp_path, pypm):
    d = dists
    d.wheel("web", "1.0", requires_dist=["core>=1", 'shim; python_version < "3.11"', 'fast; extra == "speed"'],
            provides_extra=["speed"])
    d.wheel("core", "1.2", requires_dist=["util"])
    d.wheel("util", "0.5")
    d.wheel("shim", "2.0")
    d.wheel("fast", "3.0", requires_dist=["util"])
    d.wheel("ping", "1.0", requires_dist=["pong"])  # a cycle
    d.wheel("pong", "1.0", requires_dist=["ping"])
    d.wheel("lint", "6.0", requires_dist=["core"])
    server = index_server()
    project = write_project(tmp_path / "proj", ["web[speed]", "ping"], groups={"dev": ["lint"]},
                            extras={"cli": ["util"]}, build=False)
    r = pypm("lock", "--index-url", server.url, cwd=project)
    assert r.returncode == 0, r.stderr
    return project


def tree(pypm, project, *args):
    r = pypm("tree", "--frozen", *args, cwd=project)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_the_whole_tree(pypm, locked):
    assert tree(pypm, locked) == """\
proj v0.1.0
├── ping v1.0
│   └── pong v1.0
│       └── ping v1.0 (cycle)
├── web[speed] v1.0
│   ├── core v1.2
│   │   └── util v0.5
│   ├── shim v2.0 ; python_version < "3.11"
│   └── fast v3.0 (extra: speed)
│       └── util v0.5
├── util v0.5 (extra: cli)
└── lint v6.0 (group: dev)
    └── core v1.2 (*)
"""


def test_depth_no_dev_no_dedupe(pypm, locked):
    assert tree(pypm, locked, "--depth", "1", "--no-dev") == """\
proj v0.1.0
├── ping v1.0
├── web[speed] v1.0
└── util v0.5 (extra: cli)
"""
    assert tree(pypm, locked, "--no-dedupe").endswith("""\
└── lint v6.0 (group: dev)
    └── core v1.2
        └── util v0.5
""")


def test_invert_and_package(pypm, locked):
    assert tree(pypm, locked, "--invert", "--package", "util") == """\
util v0.5
├── core v1.2
│   ├── lint v6.0
│   │   └── proj v0.1.0 (group: dev)
│   └── web v1.0
│       └── proj v0.1.0
├── fast v3.0
│   └── web v1.0 (extra: speed) (*)
└── proj v0.1.0 (extra: cli)
"""
    assert tree(pypm, locked, "--package", "core") == "core v1.2\n└── util v0.5\n"
    # without --package, --invert starts from every leaf
    leaves = [line for line in tree(pypm, locked, "--invert").splitlines() if not line.startswith(("│", "├", "└", " "))]
    assert leaves == ["shim v2.0", "util v0.5"]


@pytest.mark.parametrize("args, message, code", [
    (["--package", "nope"], "--package nope: not in pypm.lock", 2),
    (["--depth", "-1"], "--depth -1: give 0 or more", 2),
])
def test_bad_flags(pypm, locked, args, message, code):
    r = pypm("tree", "--frozen", *args, cwd=locked)
    assert r.returncode == code and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_stale_lock_is_relocked_unless_locked(pypm, locked):
    path = locked / "pyproject.toml"
    path.write_text(path.read_text().replace(", 'ping'", ""))
    r = pypm("tree", "--locked", cwd=locked)
    assert r.returncode == 1, r.stderr
    assert "--locked forbids updating it" in r.stderr
    r = pypm("tree", cwd=locked)  # the index-url the lock recorded is used again
    assert r.returncode == 0, r.stderr
    assert "ping" not in r.stdout and "Resolved" in r.stderr


def test_a_forked_lock_draws_each_version_under_its_marker(pypm, dists, index_server, tmp_path):
    """The project asks for lib<2 below Python 3.12 and lib>=2 from it: the universal lock holds
    both, and the tree draws both edges, each with its own version, marker and dependencies."""
    dists.wheel("lib", "1.0", requires_dist=["old-helper"])
    dists.wheel("lib", "2.0", requires_python=">=3.12", requires_dist=["new-helper"])
    dists.wheel("old-helper", "1.0")
    dists.wheel("new-helper", "1.0")
    server = index_server()
    project = write_project(tmp_path / "proj", ['lib<2; python_version < "3.12"', 'lib>=2; python_version >= "3.12"'],
                            build=False)
    r = pypm("lock", "--index-url", server.url, cwd=project)
    assert r.returncode == 0, r.stderr
    out = tree(pypm, project)
    lines = out.splitlines()
    assert lines[0] == "proj v0.1.0"
    libs = [line for line in lines if "lib v" in line]
    assert len(libs) == 2 and any("lib v1.0 ;" in x for x in libs) and any("lib v2.0 ;" in x for x in libs), out
    assert "old-helper v1.0" in out and "new-helper v1.0" in out
    # each helper under its own lib
    assert out.index("old-helper") > out.index("lib v1.0") and out.index("new-helper") > out.index("lib v2.0")
