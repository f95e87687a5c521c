"""Where the file system puts new directories: ext4's top-directory attribute for the cache's stores.

ext4's "top of directory hierarchy" attribute (`chattr +T`, FS_TOPDIR_FL) makes the Orlov
allocator place each directory made in a marked directory in a block group of its own (chosen
by a hash of its name, among groups with free inodes and few directories), as it does for
directories made in the file system's root, instead of beside its parent; a file then goes to
its directory's group. The entries of pypm's stores are unrelated to one another, so nothing is
lost by spreading them.

Why it matters: on ext4 without a journal (these VMs) allocating an inode skips every free inode
of the group that was freed in the last 5 s (300 s while its inode table block is dirty), one
buffer-cache look-up each, starting from the group's first inode on every allocation. Right after
a cache or venv of a few thousand files was deleted, each file created beside it cost 0.5-1 ms of
system time (perf: `recently_deleted` under `ext4_create` and `ext4_mkdir`, ~70 % of a cold sync's
CPU). A fresh extraction directory elsewhere skips none. Other file systems ignore or refuse the
ioctl; either is fine. Hand-written: a two-ioctl call has no library worth a dependency.
"""

from __future__ import annotations

import os
import sys

__all__ = ["spread_subdirs"]

_FS_IOC_GETFLAGS = 0x80086601  # _IOR('f', 1, long); the kernel reads and writes an int
_FS_IOC_SETFLAGS = 0x40086602  # _IOW('f', 2, long)
_FS_TOPDIR_FL = 0x00020000
_done: dict[str, bool] = {}  # directory -> has the attribute (asked once per process)


def spread_subdirs(directory: object) -> bool:
    """Give `directory` the top-directory attribute, once per process and directory; True when
    it has it. Never raises: without it allocation is as usual."""
    key = os.fspath(directory)  # type: ignore[call-overload]
    done = _done.get(key)
    if done is not None:
        return done
    _done[key] = ok = _set_topdir(key)
    return ok


def _set_topdir(key: str) -> bool:
    try:
        import fcntl

        fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            flags = int.from_bytes(fcntl.ioctl(fd, _FS_IOC_GETFLAGS, bytes(8))[:4], sys.byteorder)
            if not flags & _FS_TOPDIR_FL:
                fcntl.ioctl(fd, _FS_IOC_SETFLAGS, (flags | _FS_TOPDIR_FL).to_bytes(4, sys.byteorder) + bytes(4))
        finally:
            os.close(fd)
    except OSError:
        return False  # not ext4 (ENOTTY, EOPNOTSUPP), or not ours to change (EPERM)
    return True
