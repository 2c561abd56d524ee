#!/usr/bin/env bash
# Install the engines the cluster tests start (tests/cluster/engines.py): Debian's slurm-wlm, munge and
# postgresql. Idempotent: installs only what is missing; does nothing (exit 0) without root or apt-get,
# and the cluster tests then skip with the reason.
set -euo pipefail
missing=()
command -v slurmctld >/dev/null 2>&1 || [ -x /usr/sbin/slurmctld ] || missing+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || [ -x /usr/sbin/munged ] || missing+=(munge)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "tests/cluster/install.sh: not root or no apt-get; the Slurm and PostgreSQL tests will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
# The packages start their system services; the tests run their own on private sockets and ports.
for service in slurmctld slurmd munge postgresql; do
    (command -v systemctl >/dev/null 2>&1 && systemctl stop "$service" >/dev/null 2>&1) || true
done
