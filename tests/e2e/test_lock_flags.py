"""`pypm lock` flags through the CLI against a real index on 127.0.0.1: --prerelease, --exclude-newer,
--no-build, --no-binary, --extra-index-url, --offline, --refresh."""

from __future__ import annotations

import re
import sys

from pypm.lockfile import loads
from tests.e2e.test_lock import one, write_project


def _lock(pypm, project, *args, env=None):
    return pypm("lock", *args, cwd=project, env=env)


def _fails_cleanly(r, code, *needles):
    assert r.returncode == code, (r.returncode, r.stderr)
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


def test_prerelease_modes(pypm, dists, index_server, tmp_path):
    dists.wheel("lib", "1.0")
    dists.wheel("lib", "2.0b1")
    dists.wheel("betaonly", "1.0a1")
    server = index_server()
    project = write_project(tmp_path / "p", ["lib"], build=False)

    assert _lock(pypm, project, "--index-url", server.url).returncode == 0
    assert one((project / "pypm.lock").read_text(), "lib").version == "1.0"  # default: no pre-releases
    # As in uv, a changed pre-release mode re-resolves but keeps the existing pins...
    r = _lock(pypm, project, "--index-url", server.url, "--prerelease", "allow")
    assert r.returncode == 0, r.stderr
    text = (project / "pypm.lock").read_text()
    assert one(text, "lib").version == "1.0" and loads(text).options["prerelease"] == "allow"
    # ... and lets the package move when asked to.
    r = _lock(pypm, project, "--index-url", server.url, "--prerelease", "allow", "--upgrade-package", "lib")
    assert r.returncode == 0, r.stderr
    assert one((project / "pypm.lock").read_text(), "lib").version == "2.0b1"

    # explicit: only a requirement that names a pre-release may pick one.
    write_project(project, ["lib>=2.0b1"], build=False)
    r = _lock(pypm, project, "--index-url", server.url, "--prerelease", "explicit")
    assert r.returncode == 0, r.stderr
    assert one((project / "pypm.lock").read_text(), "lib").version == "2.0b1"

    # A project that has only pre-releases: if-necessary takes one, disallow explains why not.
    write_project(project, ["betaonly"], build=False)
    before = (project / "pypm.lock").read_bytes()
    r = _lock(pypm, project, "--index-url", server.url, "--prerelease", "disallow")
    assert r.returncode != 0 and "betaonly" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (project / "pypm.lock").read_bytes() == before
    r = _lock(pypm, project, "--index-url", server.url, "--prerelease", "if-necessary")
    assert r.returncode == 0, r.stderr
    assert one((project / "pypm.lock").read_text(), "betaonly").version == "1.0a1"

    r = _lock(pypm, project, "--index-url", server.url, "--prerelease", "sometimes")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_exclude_newer_ignores_later_uploads_and_is_recorded(pypm, dists, index_server, tmp_path):
    old, new = dists.wheel("lib", "1.0"), dists.wheel("lib", "2.0")
    server = index_server(upload_time={old.name: "2023-03-01T00:00:00Z", new.name: "2025-03-01T00:00:00Z"})
    project = write_project(tmp_path / "p", ["lib"], build=False)

    r = _lock(pypm, project, "--index-url", server.url, "--exclude-newer", "2024-01-01")
    assert r.returncode == 0, r.stderr
    text = (project / "pypm.lock").read_text()
    assert one(text, "lib").version == "1.0"
    assert loads(text).options["exclude-newer"] == "2024-01-01"
    assert [f.filename for f in one(text, "lib").files()] == [old.name]
    # Bare --check (as CI runs it) re-uses the recorded cut-off, so the lock is current.
    r = _lock(pypm, project, "--check")
    assert r.returncode == 0, r.stderr

    r = _lock(pypm, project, "--index-url", server.url, "--exclude-newer", "2026-01-01T00:00:00Z", "--upgrade")
    assert r.returncode == 0, r.stderr
    assert one((project / "pypm.lock").read_text(), "lib").version == "2.0"

    # Nothing old enough: a clear resolution error that names the cut-off, and the lock is kept.
    before = (project / "pypm.lock").read_bytes()
    r = _lock(pypm, project, "--index-url", server.url, "--exclude-newer", "2020-01-01")
    assert r.returncode != 0 and "lib" in r.stderr and "exclude-newer" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and (project / "pypm.lock").read_bytes() == before

    r = _lock(pypm, project, "--index-url", server.url, "--exclude-newer", "last tuesday")
    _fails_cleanly(r, 2, "'last tuesday'", "hint:")
    assert (project / "pypm.lock").read_bytes() == before


def test_no_build_and_no_binary(pypm, dists, index_server, tmp_path):
    mixed_whl = dists.wheel("mixed", "1.0")
    mixed_sdist = dists.sdist("mixed", "1.0", build_requires=())
    dists.sdist("srconly", "1.0", build_requires=())
    dists.wheel("whlonly", "1.0")
    server = index_server()
    project = write_project(tmp_path / "p", ["mixed"], build=False)

    r = _lock(pypm, project, "--index-url", server.url)
    assert r.returncode == 0, r.stderr
    m = one((project / "pypm.lock").read_text(), "mixed")
    assert m.sdist is not None and [w.filename for w in m.wheels] == [mixed_whl.name]  # default: both pinned

    r = _lock(pypm, project, "--index-url", server.url, "--no-build")
    assert r.returncode == 0, r.stderr
    text = (project / "pypm.lock").read_text()
    m = one(text, "mixed")
    assert m.sdist is None and [w.filename for w in m.wheels] == [mixed_whl.name]
    assert loads(text).options.get("no-build") is True

    r = _lock(pypm, project, "--index-url", server.url, "--no-binary")
    assert r.returncode == 0, r.stderr
    text = (project / "pypm.lock").read_text()
    m = one(text, "mixed")
    assert m.wheels == [] and m.sdist is not None and m.sdist.filename == mixed_sdist.name
    assert loads(text).options.get("no-binary") is True

    # the build set of an sdist is locked with wheels all the same: a build installs wheels only
    # (locked as sdists, the build tools could not be installed: `--no-binary` was unusable)
    tool_whl = dists.wheel("buildtool", "1.0")
    dists.sdist("buildtool", "1.0", build_requires=())
    dists.sdist("needsbuild", "1.0", build_requires=("buildtool",))
    server.add(*dists.files())
    write_project(project, ["mixed", "needsbuild"], build=False)
    r = _lock(pypm, project, "--index-url", server.url, "--no-binary")
    assert r.returncode == 0, r.stderr
    text = (project / "pypm.lock").read_text()
    assert one(text, "needsbuild").wheels == [] and [d.name for d in one(text, "needsbuild").build_dependencies] == [
        "buildtool"]
    assert [w.filename for w in one(text, "buildtool").wheels] == [tool_whl.name]
    write_project(project, ["mixed"], build=False)
    r = _lock(pypm, project, "--index-url", server.url, "--no-binary")
    assert r.returncode == 0, r.stderr

    before = (project / "pypm.lock").read_bytes()
    write_project(project, ["mixed", "srconly"], build=False)
    r = _lock(pypm, project, "--index-url", server.url, "--no-build")
    assert r.returncode != 0 and "srconly" in r.stderr and "--no-build" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and (project / "pypm.lock").read_bytes() == before
    write_project(project, ["whlonly"], build=False)
    r = _lock(pypm, project, "--index-url", server.url, "--no-binary")
    assert r.returncode != 0 and "whlonly" in r.stderr and "--no-binary" in r.stderr, r.stderr
    assert (project / "pypm.lock").read_bytes() == before


def test_extra_index_url_is_searched_and_recorded(pypm, dists, index_server, tmp_path):
    from tests.support.dists import DistFactory

    dists.wheel("lib", "1.0")
    primary = index_server()
    other = DistFactory(tmp_path / "other-dists")
    other.wheel("private-pkg", "3.0")
    second = index_server([other.dir])
    project = write_project(tmp_path / "p", ["lib", "private-pkg"], build=False)

    r = _lock(pypm, project, "--index-url", primary.url)
    _fails_cleanly(r, 5, "private-pkg", primary.url.rstrip("/"))
    assert not (project / "pypm.lock").exists()

    r = _lock(pypm, project, "--index-url", primary.url, "--extra-index-url", second.url)
    assert r.returncode == 0, r.stderr
    text = (project / "pypm.lock").read_text()
    assert one(text, "private-pkg").source == {"registry": second.url}
    assert one(text, "lib").source == {"registry": primary.url}
    assert loads(text).options["extra-index-url"] == [second.url]
    assert [p for _, p, _ in second.requests if p.endswith(".whl")] == []  # PEP 658 metadata only
    r = _lock(pypm, project, "--check")
    assert r.returncode == 0, r.stderr


def test_offline_locks_from_the_cache_only(pypm, dists, index_server, tmp_path):
    dists.wheel("lib", "1.0", requires_dist=["dep"])
    dists.wheel("dep", "1.0")
    dists.wheel("never-fetched", "1.0")
    server = index_server()
    project = write_project(tmp_path / "p", ["lib"], build=False)
    assert _lock(pypm, project, "--index-url", server.url).returncode == 0
    first = loads((project / "pypm.lock").read_text())

    # A changed requirement over the same packages re-resolves from the warm cache, asking nothing.
    write_project(project, ["lib>=1"], build=False)
    server.clear_requests()
    r = _lock(pypm, project, "--index-url", server.url, "--offline")
    assert r.returncode == 0, r.stderr
    assert server.requests == []
    again = loads((project / "pypm.lock").read_text())
    assert again.content_hash != first.content_hash
    assert [(p.name, p.version) for p in again.packages] == [(p.name, p.version) for p in first.packages]
    assert {f.sha256 for p in again.packages for f in p.files()} == {f.sha256 for p in first.packages for f in p.files()}

    # Something the cache never saw: a clear error naming it and --offline; no request, no write.
    before = (project / "pypm.lock").read_bytes()
    write_project(project, ["lib>=1", "never-fetched"], build=False)
    r = _lock(pypm, project, "--index-url", server.url, "--offline")
    _fails_cleanly(r, 5, "never-fetched", "offline")
    assert server.requests == [] and (project / "pypm.lock").read_bytes() == before
    # PYPM_OFFLINE=1 is the same switch.
    r = _lock(pypm, project, "--index-url", server.url, env={"PYPM_OFFLINE": "1"})
    _fails_cleanly(r, 5, "never-fetched", "offline")
    assert server.requests == []


def test_refresh_replaces_a_placeholder_hash_as_sync_tells_the_user(pypm, dists, index_server, tmp_path):
    dists.wheel("lib", "1.0")
    server = index_server()
    project = write_project(tmp_path / "p", ["lib"], build=False)
    assert _lock(pypm, project, "--index-url", server.url).returncode == 0
    good = (project / "pypm.lock").read_text()
    real = one(good, "lib").wheels[0].sha256
    broken = good.replace(real, "TODO" + "0" * 60)
    assert broken != good
    (project / "pypm.lock").write_text(broken)

    r = pypm("sync", "--python", sys.executable, cwd=project)
    assert r.returncode != 0 and "lib" in r.stderr and "pypm lock --refresh" in r.stderr, r.stderr
    assert not (project / ".venv").exists() or not list((project / ".venv").glob("lib/python3*/site-packages/lib*"))

    # The fix the message names works: --refresh re-fetches (it does not take the fast path)...
    server.clear_requests()
    r = _lock(pypm, project, "--refresh", "--index-url", server.url)
    assert r.returncode == 0, r.stderr
    assert server.requests_for("/simple/lib"), server.requests  # the index was asked again
    fixed = (project / "pypm.lock").read_text()
    assert one(fixed, "lib").wheels[0].sha256 == real and re.fullmatch(r"[0-9a-f]{64}", real)
    assert fixed == good  # ... and gives back the very lock the index supports
    r = pypm("sync", "--python", sys.executable, cwd=project)
    assert r.returncode == 0, r.stderr


def test_refresh_picks_up_a_file_the_index_replaced(pypm, dists, index_server, tmp_path):
    """A release re-uploaded with other bytes (same filename): a plain lock keeps the locked hash,
    --refresh asks the index again and records what it serves now."""
    w = dists.wheel("lib", "1.0")
    server = index_server()
    project = write_project(tmp_path / "p", ["lib"], build=False)
    assert _lock(pypm, project, "--index-url", server.url).returncode == 0
    old_sha = one((project / "pypm.lock").read_text(), "lib").wheels[0].sha256
    server.remove(w.name)
    w2 = dists.wheel("lib", "1.0", modules={"lib_extra": "X = 1\n"})
    assert w2.name == w.name
    server.add(w2)
    assert _lock(pypm, project, "--index-url", server.url).returncode == 0
    assert one((project / "pypm.lock").read_text(), "lib").wheels[0].sha256 == old_sha  # pins kept
    r = _lock(pypm, project, "--refresh", "--index-url", server.url)
    assert r.returncode == 0, r.stderr
    new_sha = one((project / "pypm.lock").read_text(), "lib").wheels[0].sha256
    assert new_sha != old_sha and new_sha == server.dist(w.name).sha256


def test_bare_lock_keeps_the_sources_the_lock_was_made_from(pypm, dists, index_server, tmp_path):
    """`pypm lock --index-url X`, then `pypm lock`: current (as `--check` and sync say), and a re-lock
    after a pyproject change still asks X, never the default index behind the user's back."""
    dists.wheel("lib", "1.0")
    dists.wheel("other", "1.0")
    server = index_server()
    project = write_project(tmp_path / "p", ["lib"], build=False)
    assert _lock(pypm, project, "--index-url", server.url).returncode == 0
    text = (project / "pypm.lock").read_text()
    server.clear_requests()
    r = _lock(pypm, project)  # PYPM_INDEX_URL (the default index) is a closed port here
    assert r.returncode == 0 and "up to date" in r.stderr, r.stderr
    assert (project / "pypm.lock").read_text() == text and server.requests == []
    write_project(project, ["lib", "other"], build=False)
    r = _lock(pypm, project)
    assert r.returncode == 0, r.stderr
    assert one((project / "pypm.lock").read_text(), "other").source == {"registry": server.url}
    assert loads((project / "pypm.lock").read_text()).options["index-url"] == server.url


def test_a_file_index_locks_and_syncs_with_no_server(pypm, dists, tmp_path):
    from tests.e2e.test_sync import assert_venv_exact
    from tests.support.index_server import write_static_index

    dists.wheel("lib", "1.0", requires_dist=["dep"])
    dists.wheel("lib", "1.1", requires_python=">=3.99")
    dists.wheel("dep", "2.0")
    simple = write_static_index(dists.files(), tmp_path / "static")
    url = simple.as_uri() + "/"
    project = write_project(tmp_path / "p", ["lib"], build=False)
    r = _lock(pypm, project, "--index-url", url)
    assert r.returncode == 0, r.stderr
    text = (project / "pypm.lock").read_text()
    assert one(text, "lib").version == "1.0" and one(text, "dep").version == "2.0"
    assert all(f.url.startswith("file://") and re.fullmatch(r"[0-9a-f]{64}", f.sha256) and f.size
               for p in loads(text).packages for f in p.files())
    r = pypm("sync", "--locked", "--python", sys.executable, cwd=project)
    assert r.returncode == 0, r.stderr
    assert_venv_exact(project / ".venv", {"lib": "1.0", "dep": "2.0"})


def test_first_index_takes_a_package_from_the_first_index_that_has_it(pypm, dists, index_server, tmp_path):
    """Dependency confusion: `internal` lives on the private index named by --extra-index-url, and
    someone published `internal` 99.0 on the primary. As uv, pypm asks the extra index first and
    never looks for `internal` anywhere else; pip's merge is there when asked for."""
    from tests.support.dists import DistFactory

    dists.wheel("lib", "1.0")
    dists.wheel("internal", "99.0")  # planted
    primary = index_server()
    private_dists = DistFactory(tmp_path / "private-dists")
    private_dists.wheel("internal", "1.0")
    private = index_server([private_dists.dir])
    project = write_project(tmp_path / "p", ["lib", "internal"], build=False)

    r = _lock(pypm, project, "--index-url", primary.url, "--extra-index-url", private.url)
    assert r.returncode == 0, r.stderr
    text = (project / "pypm.lock").read_text()
    assert (one(text, "internal").version, one(text, "internal").source) == ("1.0", {"registry": private.url})
    assert one(text, "lib").source == {"registry": primary.url}  # not on the private index: the primary's
    assert not primary.requests_for("/simple/internal")  # never even asked
    assert "index-strategy" not in loads(text).options

    r = _lock(pypm, project, "--index-strategy", "unsafe-best-match", "--upgrade")
    assert r.returncode == 0, r.stderr
    text = (project / "pypm.lock").read_text()
    assert (one(text, "internal").version, one(text, "internal").source) == ("99.0", {"registry": primary.url})
    assert loads(text).options["index-strategy"] == "unsafe-best-match"
    assert _lock(pypm, project, "--check").returncode == 0
    # [tool.pypm] index-strategy says it once for everyone; a wrong value names the file and the key
    (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text()
                                            + '\n[tool.pypm]\nindex-strategy = "best"\n')
    r = _lock(pypm, project)
    _fails_cleanly(r, 3, "`tool.pypm.index-strategy` is 'best'", "first-index, unsafe-best-match")


def test_an_index_source_takes_a_package_from_that_index_alone(pypm, dists, index_server, tmp_path):
    """`[tool.pypm.sources] special = { index = URL }`: as uv's explicit index. The special index
    also serves `lib` (newer): nothing but `special` is asked of it."""
    from tests.support.dists import DistFactory

    dists.wheel("lib", "1.0")
    dists.wheel("special", "9.0")  # the primary's: not wanted
    primary = index_server()
    other = DistFactory(tmp_path / "special-dists")
    other.wheel("special", "1.0+cpu")
    other.wheel("lib", "5.0")
    special = index_server([other.dir])
    project = write_project(tmp_path / "p", ["lib", "special"], build=False)
    with open(project / "pyproject.toml", "a") as f:
        f.write(f'\n[tool.pypm.sources]\nspecial = {{ index = "{special.url}" }}\n')
    r = _lock(pypm, project, "--index-url", primary.url)
    assert r.returncode == 0, r.stderr
    text = (project / "pypm.lock").read_text()
    assert (one(text, "special").version, one(text, "special").source) == ("1.0+cpu", {"registry": special.url})
    assert (one(text, "lib").version, one(text, "lib").source) == ("1.0", {"registry": primary.url})
    assert not primary.requests_for("/simple/special") and not special.requests_for("/simple/lib")
    assert _lock(pypm, project, "--check").returncode == 0
    # another index is another input: stale; a package the index does not have names that index
    text = (project / "pyproject.toml").read_text().replace(special.url, primary.url.replace("/simple/", "/nope/"))
    (project / "pyproject.toml").write_text(text)
    assert _lock(pypm, project, "--check").returncode == 1
    r = _lock(pypm, project)
    _fails_cleanly(r, 5, "Package `special` was not found in", "(its only index: [tool.pypm.sources])")


def test_dry_run_says_what_would_change_and_writes_nothing(pypm, dists, index_server, tmp_path):
    """`pypm lock --dry-run` (as uv's): resolves, prints the packages that would be added, removed
    or moved, and leaves pypm.lock as it was (its bytes, and pypm's record of it)."""
    dists.wheel("alpha", "1.0", requires_dist=["beta"])
    dists.wheel("beta", "1.0")
    dists.wheel("gamma", "1.0")
    server = index_server()
    project = write_project(tmp_path / "p", ["alpha"], build=False)
    assert _lock(pypm, project, "--index-url", server.url).returncode == 0
    lock = project / "pypm.lock"
    before = lock.read_bytes()
    r = _lock(pypm, project, "--dry-run")
    assert r.returncode == 0 and r.stdout == "pypm.lock is up to date (2 packages): nothing would change\n", r.stdout
    # a newer alpha and beta on the index, gamma added to the project
    server.add(dists.wheel("alpha", "2.0"), dists.wheel("beta", "1.1"))
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(text.replace("['alpha']", "['alpha', 'gamma']"))
    r = _lock(pypm, project, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Would add 1, remove 0, change 0 in pypm.lock:\n + gamma==1.0\n", r.stdout  # the pins are kept
    r = _lock(pypm, project, "--dry-run", "--upgrade")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("Would add 1, remove 1, change 1 in pypm.lock:\n"
                        " ~ alpha 1.0 -> 2.0\n - beta==1.0\n + gamma==1.0\n"), r.stdout
    assert lock.read_bytes() == before
    # `pypm lock --check` still finds it stale: nothing was recorded either
    assert _lock(pypm, project, "--check").returncode == 1
    r = _lock(pypm, project, "--dry-run", "--check")
    assert r.returncode == 2 and "not allowed with" in r.stderr, r.stderr
