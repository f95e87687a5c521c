"""`python -m sandbox [options] -- CMD [ARGS...]`: run one command in a fresh sandbox."""

from __future__ import annotations

import argparse
import os
import sys

from .errors import EXIT_SANDBOX, SandboxError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="Run CMD in unprivileged user, mount, PID, network, IPC, UTS and cgroup namespaces: "
        "a read-only view of the system, tmpfs /tmp and $HOME, no capabilities, a seccomp filter.",
        epilog="exit status: CMD's own (128+N if killed by signal N); 8 if the sandbox could not be set up; "
        "127/126 if CMD could not be executed.")
    p.add_argument("--venv", metavar="DIR", help="a virtual environment: bound read-only, activated (PATH, VIRTUAL_ENV)")
    p.add_argument("--python", metavar="EXE", help="an interpreter whose installation is bound read-only")
    p.add_argument("--project", metavar="DIR", help="a directory bound read-write (the working directory)")
    p.add_argument("--read-only-project", action="store_true", help="bind --project read-only")
    p.add_argument("--bind", metavar="SRC[:DST]", action="append", default=[], help="bind SRC read-write")
    p.add_argument("--ro-bind", metavar="SRC[:DST]", action="append", default=[], help="bind SRC read-only")
    p.add_argument("--network", choices=["none", "host"], default="none",
                   help="none (default): loopback only; host: the host's network")
    p.add_argument("--env", metavar="NAME[=VALUE]", action="append", default=[],
                   help="pass NAME from this environment, or set it (repeatable)")
    p.add_argument("--profile", metavar="NAME|PATH", default="default",
                   help="seccomp profile: default, strict, or an OCI JSON file")
    p.add_argument("--limit", metavar="NAME=VALUE", action="append", default=[],
                   help="a resource limit for the command: memory=2G (address space per process), cpu=60 (CPU "
                        "seconds per process), processes=256 (in the whole sandbox), open-files=1024, file-size=1G, "
                        "tmp-size=1G (each tmpfs: /tmp, $HOME, /dev/shm, /dev)")
    p.add_argument("--root", action="store_true", help="be uid/gid 0 inside (still without any capability)")
    p.add_argument("--hostname", default="pypm-sandbox")
    p.add_argument("--cwd", metavar="DIR", help="working directory inside (default: --project, else $HOME)")
    p.add_argument("--cache-dir", metavar="DIR", help="where compiled seccomp programs are cached")
    p.add_argument("--print", dest="print_policy", action="store_true", help="print the policy and exit")
    p.add_argument("--json", action="store_true", help="with --print: as JSON")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    try:
        from .host import caller, interpreter_prefixes, resolve_bind
        from .policy import limits_with, python_policy

        try:
            limits = limits_with((), args.limit)
        except ValueError as e:
            raise SandboxError(f"--limit {e}") from None

        who = caller()
        cwd = os.getcwd()
        venv = os.path.realpath(args.venv) if args.venv else None
        project = os.path.realpath(args.project) if args.project else None
        policy = python_policy(
            uid=who.uid, gid=who.gid, user=who.user, home=who.home, shell=who.shell, host_env=dict(os.environ),
            interpreter_prefixes=interpreter_prefixes(venv=venv, python=args.python),
            venv=venv, project=project, writable_project=not args.read_only_project,
            cwd=args.cwd, network=args.network,
            binds=[resolve_bind(b, base=cwd, what="--bind") for b in args.bind],
            ro_binds=[resolve_bind(b, base=cwd, what="--ro-bind") for b in args.ro_bind],
            env=args.env, profile=args.profile, root=args.root, hostname=args.hostname, limits=limits)
        if args.print_policy:
            print(policy.to_json() if args.json else policy.to_text())
            return 0
        if not cmd:
            raise SandboxError("no command given", hint="python -m sandbox [options] -- CMD [ARGS...]")
        from .caller import run

        return run(policy, cmd, cache_dir=args.cache_dir)
    except SandboxError as e:
        print(f"sandbox: error: {e}", file=sys.stderr)
        return e.exit_code if isinstance(e.exit_code, int) else EXIT_SANDBOX


if __name__ == "__main__":
    sys.exit(main())
