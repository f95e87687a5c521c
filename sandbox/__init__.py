"""pypm's namespace sandbox, usable alone: `python -m sandbox [options] -- CMD`.

    from sandbox import python_policy, run
    policy = python_policy(uid=..., gid=..., user=..., home=..., host_env=os.environ, venv=..., project=...)
    exit_code = run(policy, ["python", "-c", "print('hi')"])

The policy (sandbox.policy) is plain data; the runner (sandbox.runner) executes it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself costs ~2 ms at import; annotations are strings here
if TYPE_CHECKING:  # pragma: no cover
    from typing import Sequence

    from .errors import EXIT_SANDBOX, SandboxError
    from .policy import Mount, Policy, filter_env, python_policy, system_mounts

# These names load on first use (PEP 562): `pypm run`'s launcher imports only the leaf
# `sandbox.cachedir`, and a launched run never builds a policy.
_FROM = {"Policy": "policy", "Mount": "policy", "python_policy": "policy", "system_mounts": "policy",
         "filter_env": "policy", "SandboxError": "errors", "EXIT_SANDBOX": "errors"}


def __getattr__(name: str) -> object:
    if name in _FROM:
        from importlib import import_module

        return getattr(import_module(f".{_FROM[name]}", __name__), name)
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")


__all__ = ["Policy", "Mount", "SandboxError", "EXIT_SANDBOX", "python_policy", "system_mounts", "filter_env",
           "run"]


def run(policy: Policy, argv: Sequence[str], *, cache_dir: str | None = None, stdin: int | None = None,
        stdout: int | None = None, stderr: int | None = None) -> int:
    """Run `argv` under `policy` and return its exit status (128+N when killed by signal N)."""
    from .caller import run as _run  # the compiled helper, else the Python runner (ctypes loads only then)

    return _run(policy, argv, cache_dir=cache_dir, stdin=stdin, stdout=stdout, stderr=stderr)
