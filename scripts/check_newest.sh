#!/usr/bin/env bash
# The test suite on Python 3.13 with the newest JAX/Flax (what a Colab user gets), in a Debian 13 root made with
# debootstrap. Needs root and network; not part of CI. Usage: sudo scripts/check_newest.sh [pytest args...]
set -euo pipefail
ROOT=${ROOT:-/srv/trixie}
REPO=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -x "$ROOT/usr/bin/python3" ]; then
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates trixie "$ROOT" \
    http://deb.debian.org/debian
fi
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"  # a proxy's CA, if there is one
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
cp /etc/hosts "$ROOT/etc/hosts"  # this host's own name: gloo (the 2-process test) resolves it
mountpoint -q "$ROOT/proc" || mount --bind /proc "$ROOT/proc"
mkdir -p "$ROOT/repo"
mountpoint -q "$ROOT/repo" || mount --bind "$REPO" "$ROOT/repo"
chroot "$ROOT" env PIP_CERT=/etc/ssl/certs/ca-certificates.crt bash -c '
  set -e
  test -x /opt/venv313/bin/python || python3 -m venv /opt/venv313
  /opt/venv313/bin/pip install -q --upgrade pip
  /opt/venv313/bin/pip install -q -e "/repo[test]"          # newest versions: no constraints file
  /opt/venv313/bin/python -c "import sys, jax, flax; print(sys.version.split()[0], \"jax\", jax.__version__, \"flax\", flax.__version__)"
  cd /repo && /opt/venv313/bin/python -m pytest -q -p no:cacheprovider -n 2 '"${*:-tests}"'
'
