"""Why user namespaces are unavailable here, and the knob that changes it (read only on failure)."""

from __future__ import annotations

import errno as E

TYPE_CHECKING = False  # typing itself costs ~2 ms at import; annotations are strings here
if TYPE_CHECKING:  # pragma: no cover
    from typing import Callable

__all__ = ["diagnose", "USERNS_SYSCALLS"]

# Setup steps whose EPERM/EACCES/ENOSPC/EINVAL usually means "no unprivileged user
# namespaces here" rather than a bad policy: creating the namespace, mapping ids into it,
# and the first mounts (AppArmor's restriction lets unshare succeed, then denies them).
USERNS_SYSCALLS = ("unshare", "clone(", "write(/proc/self/", "mount(make-private", "mount(tmpfs")


def _read_file(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def _seccomp_mode(_read: Callable[[str], str | None]) -> str | None:
    status = _read("/proc/self/status") or ""
    for line in status.splitlines():
        if line.startswith("Seccomp:"):
            return line.split(":", 1)[1].strip()
    return None


def diagnose(err: int, _read: Callable[[str], str | None] = _read_file) -> str | None:
    """A hint naming the setting that blocks unprivileged user namespaces, or None.

    `_read(path)` returns a file's stripped text or None (the tests pass other machines' files).
    """
    max_ns = _read("/proc/sys/user/max_user_namespaces")
    if max_ns == "0":
        return ("user namespaces are disabled: user.max_user_namespaces = 0. Allow them with "
                "`sudo sysctl -w user.max_user_namespaces=15000` (persist it in /etc/sysctl.d/90-userns.conf), "
                "or run with --no-sandbox")
    if _read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        return ("this kernel forbids unprivileged user namespaces: kernel.unprivileged_userns_clone = 0 "
                "(Debian's switch). Allow them with `sudo sysctl -w kernel.unprivileged_userns_clone=1` "
                "(persist it in /etc/sysctl.d/90-userns.conf), or run with --no-sandbox")
    if _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        return ("AppArmor restricts unprivileged user namespaces here "
                "(kernel.apparmor_restrict_unprivileged_userns = 1, Ubuntu 23.10+). Install the AppArmor "
                "profile from docs/sandbox.md (/etc/apparmor.d/pypm, then `sudo apparmor_parser -r "
                "/etc/apparmor.d/pypm`), or `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`")
    if err == E.EPERM and _seccomp_mode(_read) == "2":
        return ("pypm itself runs under a seccomp filter that forbids creating namespaces (a container "
                "with its runtime's default profile, or another sandbox). Start the container with a "
                "profile that allows unshare/clone with CLONE_NEWUSER (e.g. podman/docker "
                "--security-opt seccomp=unconfined), or run with --no-sandbox")
    if err == E.ENOSPC:
        return (f"the limit on user namespaces is reached (user.max_user_namespaces = {max_ns}); raise it with "
                "`sudo sysctl -w user.max_user_namespaces=15000`")
    if err == E.EINVAL:
        return "this kernel lacks user namespace support (CONFIG_USER_NS); use a kernel with it or --no-sandbox"
    if err in (E.EPERM, E.EACCES):
        return ("the kernel refused an unprivileged user namespace (a security module or a container policy); "
                "check `sysctl user.max_user_namespaces` and `dmesg`, or run with --no-sandbox")
    return None
