"""`netaudit fix`: the nftables ruleset that closes what a scan found.

- ``closing``   what to close, from a report's findings or from inventories;
- ``cgroups``   the job cgroups a port-independent rule can match (Slurm's slurmstepd.scope);
- ``nftables``  one ``table inet netaudit`` for IPv4 and IPv6: render, check, apply.

The ruleset is printed, checked with ``nft -c`` and applied only on ``--apply``.
"""
