"""The versions of the Python packages netaudit knows CVEs of, found beside a process: the
installed distribution (``<name>-<version>.dist-info``) in the site-packages directory of a
package the process maps (vLLM's ``_C`` extension, Ray's ``_raylet.so``) or names on its
command line (TorchServe's Java frontend runs ``.../site-packages/ts/frontend/model-server.jar``).

Only these packages are looked for, and only in the process's own mount namespace
(/proc/<pid>/root, no link followed): a directory listing per site-packages directory, no
import, no file of the package read. torch's version comes from torch/version.py
(netaudit.procinfo), as before.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from netaudit import safeio

# import name -> distribution name as its .dist-info directory spells it (PEP 427: "-" -> "_")
PACKAGES = {
    "vllm": "vllm",
    "ray": "ray",
    "ts": "torchserve",
    "horovod": "horovod",
    "tensorrt_llm": "tensorrt_llm",
    "sglang": "sglang",
    "llama_stack": "llama_stack",
}
_SITE_MODULE = re.compile(r"(/[^\0\s:=]*?/(?:site|dist)-packages)/([A-Za-z0-9_]+)/")
_MAX_ENTRIES = 20_000  # a site-packages directory holds hundreds; bound a hostile one
_DIST_INFO = re.compile(r"^([A-Za-z0-9_.]+)-([0-9][0-9A-Za-z.+_]{0,63})\.dist-info$")


def site_modules(texts: Iterable[str]) -> set[tuple[str, str]]:
    """(site-packages directory, distribution) for the known packages the paths point into."""
    found = set()
    for text in texts:
        if "-packages/" not in text:
            continue
        for site, module in _SITE_MODULE.findall(text):
            distribution = PACKAGES.get(module)
            if distribution is not None:
                found.add((site, distribution))
    return found


def versions(
    root: str, wanted: set[tuple[str, str]], listings: dict[tuple[int, int], list[str] | None]
) -> list[tuple[str, str]]:
    """(distribution name, version) for each wanted one installed, sorted. ``listings`` caches
    directory listings by (device, inode) for the whole probe run: the processes of one
    container or virtualenv share them."""
    result = set()
    for site, distribution in sorted(wanted):
        try:
            info = os.lstat(f"{root}{site}")
        except OSError:
            continue
        key = (info.st_dev, info.st_ino)
        if key not in listings:
            try:
                listings[key] = safeio.list_user_dir(root, site, _MAX_ENTRIES)
            except OSError:
                listings[key] = None
        for name in listings[key] or ():
            match = _DIST_INFO.match(name)
            if match and match.group(1).lower().replace(".", "_") == distribution:
                result.add((distribution.replace("_", "-"), match.group(2)))
    return sorted(result)
