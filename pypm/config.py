"""Where settings come from: the default index, the cache directory, environment knobs.

The default index is never written in pypm's code: it is read, in order, from
`--index-url`, `[tool.pypm] index-url`, `PYPM_INDEX_URL`, `PIP_INDEX_URL`, pip's
configuration files, and finally pip's own built-in default (asked of pip itself).
"""

from __future__ import annotations

import os

from .errors import ProjectError, UsageError

# An on/off environment variable is read by pypm.fastpath (the spellings of yes and no, as uv's),
# with which the entry point also checks them before any fast path.
from .fastpath import flag_value

TYPE_CHECKING = False  # (not `from typing import`: typing costs ~2-5 ms on a script's run)
if TYPE_CHECKING:  # pathlib only where a Path is made: a script's run reads cache_dir_str (~4 ms)
    from pathlib import Path

__all__ = ["default_index_url", "pip_config_index_url", "pip_config_extra_index_urls", "cache_dir", "cache_dir_str", "env_flag",
           "tools_home_str", "tool_bin_dir_str"]


def env_flag(name: str, default: bool = False) -> bool:
    """An on/off environment variable (PYPM_OFFLINE): unset or empty is `default` (off unless
    said); a value that is neither yes nor no is refused, not read as off (PYPM_OFFLINE=yes
    once went unnoticed)."""
    value = flag_value(name, default)
    if value is not None:
        return value
    raise UsageError(f"the environment variable {name}={os.environ[name]!r} is neither yes nor no",
                     hint=f"set {name}=1 (or true, yes, on) to turn it on, {name}=0 (or false, no, off) "
                          f"or unset it to turn it off")


def _pip_config_files() -> list[Path]:
    # pip's lookup order (site < user < env), see `pip config debug`.
    from pathlib import Path

    env_file = os.environ.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:
        return []  # pip itself loads no configuration file at all then
    files = [Path("/etc/xdg/pip/pip.conf"), Path("/etc/pip.conf")]
    venv = os.environ.get("VIRTUAL_ENV")
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    files += [Path.home() / ".pip" / "pip.conf", Path(xdg) / "pip" / "pip.conf"]
    if venv:
        files.append(Path(venv) / "pip.conf")
    if env_file:
        files.append(Path(env_file))
    return files


def pip_config_index_url() -> str | None:
    """`index-url` from pip's configuration files ([install] wins over [global]), if any."""
    found = _pip_config("index-url")
    return found[-1] if found else None


def pip_config_extra_index_urls() -> list[str]:
    """`extra-index-url` from pip's configuration files (whitespace-separated URLs, as pip reads
    them; [install] wins over [global], a later file over an earlier one)."""
    found = _pip_config("extra-index-url")
    return found[-1].split() if found else []


def _pip_config(option: str) -> list[str]:
    """Each value pip's configuration files give `option`, in the order pip applies them."""
    found: list[str] = []
    for f in _pip_config_files():
        if not f.is_file():
            continue
        import configparser  # here, not at the top: ~5 ms that lock/sync/run rarely need

        cp = configparser.RawConfigParser()
        try:
            cp.read(f, encoding="utf-8")
        except configparser.Error as e:
            raise ProjectError(f"{f}: cannot parse pip configuration: {e}") from None
        except UnicodeDecodeError as e:
            raise ProjectError(f"{f}: pip configuration is not UTF-8 text ({e})",
                               hint="fix or remove the file, or pass --index-url / set PYPM_INDEX_URL") from None
        for section in ("global", "install"):
            if cp.has_option(section, option):
                found.append(cp.get(section, option).strip())
    return found


def _pip_builtin_index_url() -> str:
    try:
        from pip._internal.models.index import PyPI  # pip's built-in default index
    except Exception:
        raise ProjectError(
            "no package index is configured and pip is not importable to supply its default",
            hint="pass --index-url URL, set [tool.pypm] index-url, or export PYPM_INDEX_URL",
        ) from None
    return str(PyPI.simple_url)


def default_index_url(cli: str | None = None, project: str | None = None) -> str:
    for candidate in (cli, project, os.environ.get("PYPM_INDEX_URL"), os.environ.get("PIP_INDEX_URL")):
        if candidate:
            return candidate
    return pip_config_index_url() or _pip_builtin_index_url()


def cache_dir() -> Path:
    """$PYPM_CACHE_DIR, else the platform's user cache dir (e.g. ~/.cache/pypm)."""
    from pathlib import Path

    return Path(cache_dir_str())


def cache_dir_str() -> str:
    """cache_dir() as a string, without pathlib (for the fast paths)."""
    import sys

    if sys.platform in ("darwin", "win32") and not os.environ.get("PYPM_CACHE_DIR") \
            and not os.environ.get("XDG_CACHE_HOME"):
        if sys.platform == "darwin":
            return os.path.join(os.path.expanduser("~"), "Library", "Caches", "pypm")
        from platformdirs import user_cache_dir  # the general answer, off the Linux hot path

        return str(user_cache_dir("pypm", appauthor=False))
    # Linux: the one answer the sandbox and `pypm run`'s launcher use too (sandbox.cachedir).
    from sandbox.cachedir import default_cache_dir

    return default_cache_dir()


def tools_home_str() -> str:
    """Where `pypm tool install` keeps the tools' environments (pypm.toolinstall): PYPM_TOOL_DIR,
    else `$XDG_DATA_HOME/pypm/tools`, else `~/.local/share/pypm/tools` (as uv's, by hand: the fast
    path of `pypm x` asks, and platformdirs costs it ~3 ms). Not in the cache: `pypm cache clean`
    must not remove what the user installed."""
    given = os.environ.get("PYPM_TOOL_DIR")
    if given:
        return os.path.abspath(os.path.expanduser(given))
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(os.path.abspath(data), "pypm", "tools")


def tool_bin_dir_str() -> str:
    """Where `pypm tool install` puts the tools' commands: PYPM_TOOL_BIN_DIR, else XDG_BIN_HOME,
    else `~/.local/bin` (as uv's)."""
    given = os.environ.get("PYPM_TOOL_BIN_DIR") or os.environ.get("XDG_BIN_HOME")
    if given:
        return os.path.abspath(os.path.expanduser(given))
    return os.path.join(os.path.expanduser("~"), ".local", "bin")
