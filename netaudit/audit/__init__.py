"""The vantage side of `netaudit scan`, in the order of the data flow (DESIGN.md §2):

- ``settings``  the scan's knobs: one home for their defaults and bounds, shared by the
                config file and the flags.
- ``intake``    inventories are untrusted: host names, addresses that are not the node's,
                future timestamps, and handling derived from our signatures, not the document.
- ``scope``     what is scanned: the inventories' node addresses, restricted by targets;
                addresses without an inventory swept on the default ports.
- ``plan``      endpoints x vantage sources x method; what may be confirmed read-only.
- ``execute``   carries a plan out on the wire engines of ``netaudit.scan``.
- ``policy``    inside or outside, and findings from what was seen.
- ``gaps``      what could not be inspected, as data; the exit status it implies.
- ``peers``     scans run from other nodes, merged.
- ``baseline``  the scheduled audit's memory (only news).
- ``verdict``   per-node verdicts the Slurm prolog gate reads (netaudit.gate).
- ``sinks``     where results go besides stdout: baseline, metrics, syslog, verdicts.

Renderers live in ``netaudit.report``; the command that ties these together is
``netaudit.cmd_scan``.
"""
