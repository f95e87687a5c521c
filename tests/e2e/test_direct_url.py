"""PEP 610 direct_url.json: the editable project is marked as such (what `pip list -e` and IDEs read);
index installs carry none."""

from __future__ import annotations

import json
import subprocess

from tests.e2e.test_sync import write_lock, write_project

PROBE = ("import json, importlib.metadata as m; "
         "print(json.dumps({d: m.distribution(d).read_text('direct_url.json') for d in ('app', 'alpha')}))")


def test_editable_project_has_pep610_direct_url_and_index_installs_none(pypm, dists, index_server, tmp_path):
    a = dists.wheel("alpha", "1.0")
    server = index_server()
    project = write_project(tmp_path / "proj", deps=["alpha"], editable=True)
    write_lock(project, server, [a], main=["alpha"], editable=True)
    pypm("sync", "--frozen", cwd=project, check=True)
    out = subprocess.run([str(project / ".venv" / "bin" / "python"), "-c", PROBE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["alpha"] is None
    assert json.loads(got["app"]) == {"url": project.resolve().as_uri(), "dir_info": {"editable": True}}
    installer = subprocess.run([str(project / ".venv" / "bin" / "python"), "-c",
                                "import importlib.metadata as m; print(m.distribution('alpha').read_text('INSTALLER'))"],
                               capture_output=True, text=True)
    assert installer.stdout.strip() == "pypm", installer.stderr
