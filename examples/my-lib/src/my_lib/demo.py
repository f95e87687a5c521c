"""Print the live runtime stack: `pypm run python -m my_lib.demo`."""

import platform
import sys


def stack() -> dict[str, str]:
    import requests

    out = {"python": platform.python_version(), "requests": requests.__version__}
    try:
        import torch
    except ImportError:
        out["torch"] = "not installed"
    else:
        out["torch"] = torch.__version__
    if sys.version_info < (3, 11):
        import tomli

        out["tomli"] = getattr(tomli, "__version__", "installed")
    return out


def main() -> None:
    for name, version in stack().items():
        print(f"{name:10} {version}")


if __name__ == "__main__":
    main()
