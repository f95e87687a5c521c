#!/usr/bin/env bash
# Provisioning for vagrant/Vagrantfile: install what the suite needs, pypm itself, then run it.
#   provision.sh ubuntu|fedora
set -euo pipefail
distro=$1
cd /pypm

if [ "$distro" = ubuntu ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3 python3-venv python3-dev libseccomp2 bubblewrap gcc git apparmor-utils >/dev/null
else
  dnf install -y -q python3 python3-devel libseccomp bubblewrap gcc git util-linux >/dev/null
fi

python3 -m venv /opt/pypm
/opt/pypm/bin/pip install -q --upgrade pip
/opt/pypm/bin/pip install -q -e '/pypm[test]'
ln -sf /opt/pypm/bin/pypm /usr/local/bin/pypm

if [ "$distro" = ubuntu ]; then
  echo "kernel.apparmor_restrict_unprivileged_userns = $(sysctl -n kernel.apparmor_restrict_unprivileged_userns)"
  demo=$(mktemp -d)
  printf '[project]\nname = "demo"\nversion = "0.1.0"\ndependencies = []\n' > "$demo/pyproject.toml"
  chown -R vagrant: "$demo"
  # Without the profile, an unprivileged user gets exit 8 and the knob named (never an unsandboxed run).
  sudo -u vagrant -H bash -c "cd $demo && pypm sync"
  if sudo -u vagrant -H bash -c "cd $demo && pypm run -- true" 2>/tmp/denied.txt; then
    echo "expected the AppArmor restriction to stop the sandbox" >&2; exit 1
  fi
  grep -q "apparmor_restrict_unprivileged_userns" /tmp/denied.txt
  echo "without the profile: refused, naming the knob (ok)"
  # The profile from docs/sandbox.md, for /usr/local/bin/pypm -> /opt/pypm/bin/pypm.
  install -m 0644 /pypm/vagrant/apparmor.d/pypm /etc/apparmor.d/pypm
  apparmor_parser -r /etc/apparmor.d/pypm
  sudo -u vagrant -H bash -c "cd $demo && pypm run -- python -c 'print(\"sandboxed with the AppArmor profile\")'"
  # The suite starts `python -m sandbox` as uid 65534 from a venv of the system python,
  # which the profile (attached to the pypm command) does not cover: lift the restriction
  # for the test run only.
  sysctl -w kernel.apparmor_restrict_unprivileged_userns=0
  trap 'sysctl -w kernel.apparmor_restrict_unprivileged_userns=1' EXIT
fi

# The test suite (scripts/test.sh also fetches the canary's fixture wheels once).
PYTHON=/opt/pypm/bin/python bash scripts/test.sh -q -p no:cacheprovider
