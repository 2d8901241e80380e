#!/bin/sh
# Slurm prolog: refuse to start jobs on a node with a stale exposed PyTorch listener.
# slurm.conf:
#   Prolog=/etc/slurm/prolog.d/netaudit.sh
#   PrologFlags=Alloc          # run at allocation, before any step
#   PrologEpilogTimeout=30     # the gate's own deadline (5 s) keeps it far below
# Prologs run with no PATH: every path here is absolute. On failure slurmd drains the node
# ("Prolog error") and requeues the job; the one line printed names the process and port.
exec /usr/local/bin/netaudit gate --config /etc/netaudit/prolog-gate.toml
