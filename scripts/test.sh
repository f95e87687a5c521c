#!/usr/bin/env bash
# The test command of the README and of .ci/run: installs what the tests need, then runs them.
#   scripts/test.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: libseccomp (seccomp compiler), python3-venv (the distribution's python,
# used for the tests that drop to an unprivileged uid), bubblewrap (benchmark baseline), git
# (git dependencies).
need=()
for pkg in libseccomp2 python3-venv bubblewrap gcc git; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing system packages: ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing system packages (install them as root): ${need[*]}" >&2
  fi
fi

PY=${PYTHON:-python3}
"$PY" -m pip install -q --disable-pip-version-check -e '.[test]'
# Real wheels of the canary's dependency set, served by the tests on 127.0.0.1 (fetched
# once from the default index and kept in a cache; the tests themselves stay offline).
"$PY" scripts/fetch_fixtures.py || echo "warning: could not fetch the canary fixture wheels; the tests that need them skip and say why" >&2
# Lint first (seconds): an unused import or an undefined name fails CI as a test would.
"$PY" -m ruff check --quiet pypm sandbox tests scripts
# Types (~10 s): mypy over pypm, sandbox, scripts and tests, as configured in pyproject.toml [tool.mypy].
"$PY" -m mypy
exec "$PY" -m pytest "$@"
