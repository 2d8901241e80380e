"""JSON as netaudit prints it: sorted keys always, so two runs diff cleanly; indented for a
person when the document is small, compact beyond that. Indentation switches Python to its
pure-Python encoder, which took 1.1 s of a 16,384-endpoint scan report (bench/README.md); the
C encoder writes the same content in the same order in a tenth of that."""

from __future__ import annotations

import json

INDENT_UP_TO_ITEMS = 1000


def dumps(document: object, items: int) -> str:
    """``items``: how many listeners or endpoints the document holds."""
    if items <= INDENT_UP_TO_ITEMS:
        return json.dumps(document, indent=2, sort_keys=True) + "\n"
    return json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n"
