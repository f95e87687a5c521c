"""The sandbox's one error: a setup step failed, with the syscall, the errno name and a hint."""

from __future__ import annotations

import errno as _errno
import os

__all__ = ["SandboxError", "EXIT_SANDBOX"]

# Same value as pypm.errors.ExitCode.SANDBOX: the sandbox is usable without pypm, so it
# cannot import pypm, but both must exit with the same code.
EXIT_SANDBOX = 8


class SandboxError(Exception):
    """A sandbox could not be set up (or its policy is invalid).

    `str(err)` is the whole message; `syscall` and `errno` are set when a system call
    failed, `hint` says what to do next. pypm re-raises it as pypm.errors.SandboxError.
    """

    exit_code = EXIT_SANDBOX

    def __init__(self, message: str, *, hint: str | None = None, syscall: str | None = None,
                 errno: int | None = None) -> None:
        if syscall is not None and errno is not None:
            name = _errno.errorcode.get(errno, str(errno))
            message = f"{message}: {syscall} failed: {name} ({os.strerror(errno)})"
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.syscall = syscall
        self.errno = errno

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message
