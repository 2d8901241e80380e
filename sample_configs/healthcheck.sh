#!/bin/sh
# HealthCheckProgram variant: drain with netaudit's own reason, as LBNL NHC does, and never
# touch a reason someone else set. slurm.conf:
#   HealthCheckProgram=/etc/slurm/netaudit-healthcheck.sh
#   HealthCheckInterval=300
#   HealthCheckNodeState=ANY
NODE="${SLURMD_NODENAME:-$(/bin/hostname -s)}"
SCONTROL="${NETAUDIT_SCONTROL:-/usr/bin/scontrol}"
NETAUDIT="${NETAUDIT_COMMAND:-/usr/local/bin/netaudit}"
CONFIG="${NETAUDIT_CONFIG:-/etc/netaudit/prolog-gate.toml}"

reason=$($NETAUDIT gate --config "$CONFIG")
status=$?
if [ "$status" -ne 0 ]; then
    # Keep an existing reason that is not ours (an admin's, NHC's).
    current=$($SCONTROL show node "$NODE" | /bin/sed -n 's/^ *Reason=\(.*\)/\1/p')
    case "$current" in
        ""|netaudit:*) "$SCONTROL" update NodeName="$NODE" State=DRAIN Reason="$(printf '%s' "$reason" | /usr/bin/head -c 200)" ;;
    esac
    exit 1
fi
exit 0
