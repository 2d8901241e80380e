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
# A path is a token between separators of a command line or a maps path (argv joins paths with
# ':' in -cp and '=' in --opt=PATH); a token is looked at only up to PATH_MAX.
_SEPARATORS = re.compile(r"[\s:=\0]+")
_PATH_MAX = 4096
_SITES = ("/site-packages/", "/dist-packages/")
_MAX_ENTRIES = 20_000  # a site-packages directory holds hundreds; bound a hostile one
_DIST_INFO = re.compile(r"^([A-Za-z0-9_.]+)-([0-9][0-9A-Za-z.+_]{0,63})\.dist-info$")


def site_modules(texts: Iterable[str]) -> set[tuple[str, str]]:
    """(site-packages directory, distribution) for the known packages the paths point into.
    Linear in the text: a process's own command line is input its user controls."""
    found = set()
    for text in texts:
        if "-packages/" not in text:
            continue
        for token in _SEPARATORS.split(text):
            if len(token) > _PATH_MAX or not token.startswith("/"):
                continue
            for marker in _SITES:
                at = token.find(marker)
                if at < 0:
                    continue
                module = token[at + len(marker) :].split("/", 1)
                distribution = PACKAGES.get(module[0]) if len(module) == 2 else None
                if distribution is not None:
                    found.add((token[: at + len(marker) - 1], distribution))
    return found


def versions(
    root: str, wanted: set[tuple[str, str]], listings: dict[tuple[int, int], list[str] | None]
) -> list[tuple[str, str]]:
    """(distribution name, version) for each wanted one installed, sorted, one version per
    distribution (the first by name if a stale second dist-info lies beside it). ``listings``
    caches directory listings by the (device, inode) of the directory actually opened, for
    the whole probe run: the processes of one container or virtualenv share them."""
    result: dict[str, str] = {}
    for site, distribution in sorted(wanted):
        try:
            names = safeio.list_user_dir(root, site, _MAX_ENTRIES, listings)
        except OSError:
            continue
        for name in sorted(names):
            match = _DIST_INFO.match(name)
            if match and match.group(1).lower().replace(".", "_") == distribution:
                result.setdefault(distribution.replace("_", "-"), match.group(2))
    return sorted(result.items())
