"""`pypm run --upgrade`: a project's lock and a PEP 723 script's environment moved to the newest
releases before the command runs (a real index on 127.0.0.1, the real sandbox)."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.test_lock import write_project
from tests.e2e.test_script import out, script

SHOW = "import lib; print('lib', lib.__version__)"


def test_a_project_is_locked_again_at_the_newest_releases(pypm, dists, index_server, tmp_path: Path) -> None:
    dists.wheel("lib", "1.0")
    server = index_server()
    proj = write_project(tmp_path / "proj", ["lib"], build=False)
    with (proj / "pyproject.toml").open("a") as f:
        f.write(f'\n[tool.pypm]\nindex-url = "{server.url}"\n')
    assert out(pypm("run", "python", "-c", SHOW, cwd=proj))["lib"] == "1.0"
    server.add(dists.wheel("lib", "1.1"))  # released since
    assert out(pypm("run", "python", "-c", SHOW, cwd=proj))["lib"] == "1.0"  # the lock holds it
    r = pypm("run", "--upgrade", "python", "-c", SHOW, cwd=proj)
    assert out(r)["lib"] == "1.1"
    assert 'version = "1.1"' in (proj / "pypm.lock").read_text()

    r = pypm("run", "-U", "--frozen", "python", "-c", SHOW, cwd=proj)
    assert r.returncode == 2 and "--upgrade locks again, which --frozen forbids" in r.stderr, r.stderr


def test_a_script_environment_moves_to_the_newest_releases(pypm, dists, index_server, tmp_path: Path) -> None:
    dists.wheel("lib", "1.0")
    server = index_server()
    here = tmp_path / "here"
    script(here / "tool.py", f'requires-python = ">=3.9"\ndependencies = ["lib"]\n\n'
                             f'[tool.pypm]\nindex-url = "{server.url}"')
    assert out(pypm("run", "tool.py", cwd=here))["lib"] == "1.0"
    server.add(dists.wheel("lib", "2.0"))
    assert out(pypm("run", "tool.py", cwd=here))["lib"] == "1.0"  # its environment keeps its first resolution
    assert out(pypm("run", "-U", "tool.py", cwd=here))["lib"] == "2.0"
    assert out(pypm("run", "tool.py", cwd=here))["lib"] == "2.0"  # and keeps the new one
