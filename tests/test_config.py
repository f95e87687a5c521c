"""pypm.config: where the default index and the cache directory come from."""

from __future__ import annotations

from pathlib import Path

import pytest

from pypm.config import pip_config_index_url
from pypm.errors import ExitCode, ProjectError


def test_pip_configuration_that_is_not_utf8_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Was a UnicodeDecodeError, reported as an internal error by `pypm lock`.
    conf = tmp_path / "pip.conf"
    conf.write_bytes(b"[global]\nindex-url = \xff\xfe\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    with pytest.raises(ProjectError, match=r"pip\.conf: pip configuration is not UTF-8 text") as e:
        pip_config_index_url()
    assert e.value.exit_code == ExitCode.PROJECT and "PYPM_INDEX_URL" in (e.value.hint or "")
    conf.write_text("[global]\nindex-url = http://127.0.0.1:9/simple/\n")
    assert pip_config_index_url() == "http://127.0.0.1:9/simple/"
