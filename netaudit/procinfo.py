"""Facts about the processes that own listeners, read lazily and safely.

Every fact comes from /proc with bounded reads (netaudit.safeio), and this module is the one
translator of the privilege boundary: a process that vanished raises ProcessGone ("gone, not an
error"), a fact we may not read becomes "unknown" and marks the facts incomplete.

psutil is not used: its socket listing cannot see other network namespaces, and what it would
give here (parent pid, uid, user name) is two lines of /proc/<pid>/status and pwd, while its
import alone cost the Slurm prolog gate 22 ms of its 150 ms budget (bench/README.md).

Each fact is read only when classification asks for it: most listeners on a node belong to
sshd or a web server and are settled by the first cheap check.
"""

from __future__ import annotations

import fnmatch
import os
import pwd
import re
from collections import Counter
from collections.abc import Callable
from functools import cached_property, lru_cache

from netaudit import environ, jobid, pkgversions, safeio
from netaudit.models import ProcessInfo
from netaudit.redact import redact_argv

_ENVIRON_LIMIT = 1 << 20  # a job's environment is KBs; 1 MiB covers pathological ones
_CMDLINE_LIMIT = 1 << 17
_MAPS_LIMIT = 32 << 20  # a CUDA torch process maps thousands of regions
_SMALL_LIMIT = 1 << 16
_VERSION_FILE_LIMIT = 1 << 16
_SHARED_OBJECT = re.compile(rb"(/[^\n]*\.so[^\n]*)")  # from a line's first slash, if ".so" follows
_STATUS_FIELDS = re.compile(rb"^(PPid|Uid):([^\n]*)$", re.M)
_TORCH_LIB = re.compile(r"^(?P<torch>/.+/torch)/lib/libtorch[^/]*\.so[^/]*$")
_VERSION_LINE = re.compile(r"""^__version__\s*=\s*['"](?P<v>[0-9A-Za-z.+_-]{1,64})['"]\s*$""", re.M)


@lru_cache(maxsize=256)
def _glob_matcher(patterns: tuple[str, ...]) -> Callable[[str], re.Match[str] | None]:
    return re.compile("|".join(f"(?:{fnmatch.translate(pattern)})" for pattern in patterns)).match


class ProcessGone(Exception):
    """The process exited while we read it: not an error, it simply is not there."""


class ProcessFacts:
    """Lazily read facts about one pid. ``is_complete`` turns False when a fact was denied."""

    def __init__(self, pid: int, cache: FactsCache) -> None:
        self.pid = pid
        self._cache = cache
        self._proc = f"{cache.proc}/{pid}"
        self.is_complete = True
        self._matches: dict[tuple[str, ...], tuple[str, ...]] = {}

    def _read(self, name: str, limit: int) -> bytes | None:
        try:
            return safeio.read_proc(f"{self._proc}/{name}", limit)
        except (FileNotFoundError, ProcessLookupError) as gone:
            raise ProcessGone(self.pid) from gone
        except OSError:
            self.is_complete = False
            return None

    @cached_property
    def comm(self) -> str:
        raw = self._read("comm", 64)
        return raw.decode("utf-8", "replace").rstrip("\n") if raw is not None else "?"

    @cached_property
    def cmdline(self) -> tuple[str, ...]:
        raw = self._read("cmdline", _CMDLINE_LIMIT)
        if not raw:
            return ()
        parts = raw.rstrip(b"\0").split(b"\0")
        return redact_argv([part.decode("utf-8", "replace") for part in parts])

    @cached_property
    def _status(self) -> dict[str, str]:
        """The two lines of /proc/<pid>/status that are used, of its fifty-odd."""
        raw = self._read("status", _SMALL_LIMIT)
        return {
            key.decode("ascii"): value.decode("utf-8", "replace").strip()
            for key, value in _STATUS_FIELDS.findall(raw or b"")
        }

    @cached_property
    def ppid(self) -> int | None:
        try:
            return int(self._status["PPid"])
        except (KeyError, ValueError):
            self.is_complete = False
            return None

    @cached_property
    def uid_user(self) -> tuple[int | None, str | None]:
        try:
            uid = int(self._status["Uid"].split()[0])  # real, effective, saved, filesystem
        except (KeyError, ValueError, IndexError):
            self.is_complete = False
            return None, None
        return uid, self._cache.user_name(uid)

    @cached_property
    def environment(self) -> dict[str, str]:
        raw = self._read("environ", _ENVIRON_LIMIT)
        return environ.parse(raw) if raw else {}

    @cached_property
    def _tids(self) -> list[str] | None:
        """The thread ids (threads and children both list them); None when denied."""
        try:
            return os.listdir(f"{self._proc}/task")
        except (FileNotFoundError, ProcessLookupError) as gone:
            raise ProcessGone(self.pid) from gone
        except OSError:
            return None

    @cached_property
    def threads(self) -> Counter[str]:
        names: Counter[str] = Counter()
        tids = self._tids
        if tids is None:
            self.is_complete = False
            return names
        for tid in tids:
            try:
                raw = safeio.read_proc(f"{self._proc}/task/{tid}/comm", 64)
            except OSError:
                continue  # a thread that ended meanwhile
            names[raw.decode("utf-8", "replace").rstrip("\n")] += 1
        return names

    @cached_property
    def mapped_paths(self) -> tuple[str, ...]:
        """Paths of the mapped shared objects, deduplicated, in map order.

        A maps line is "range perms offset dev inode path", and only the path can hold a
        slash: one regex pass takes each line's path from its first slash, where the line
        has ".so" (a loop over the lines cost 0.1 ms of a 180-line Python process, 20 ms for
        200 processes). Deduplicated before decoding: each object is mapped 4-5 times."""
        raw = self._read("maps", _MAPS_LIMIT)
        if not raw:
            return ()
        return tuple(path.decode("utf-8", "replace") for path in dict.fromkeys(_SHARED_OBJECT.findall(raw)))

    @cached_property
    def _library_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(path.rsplit("/", 1)[-1] for path in self.mapped_paths))

    def libraries_matching(self, patterns: tuple[str, ...]) -> tuple[str, ...]:
        """Basenames of mapped shared objects that match any of the glob ``patterns``.

        Asked about twenty times per process (once per rule); a torch process maps hundreds
        of objects: the answer is kept per pattern set, and the globs run as one regex."""
        found = self._matches.get(patterns)
        if found is None:
            matcher = _glob_matcher(patterns)
            found = self._matches[patterns] = tuple(name for name in self._library_names if matcher(name))
        return found

    @cached_property
    def cgroup(self) -> str | None:
        raw = self._read("cgroup", _SMALL_LIMIT)
        return raw.decode("utf-8", "replace") if raw is not None else None

    @cached_property
    def netns(self) -> int | None:
        try:
            link = os.readlink(f"{self._proc}/ns/net")
        except (FileNotFoundError, ProcessLookupError) as gone:
            raise ProcessGone(self.pid) from gone
        except OSError:
            self.is_complete = False
            return None
        return int(link[5:-1]) if link.startswith("net:[") else None

    @cached_property
    def children(self) -> tuple[int, ...]:
        pids: set[int] = set()
        try:
            tids = self._tids
        except ProcessGone:
            return ()
        for tid in tids or ():
            try:
                raw = safeio.read_proc(f"{self._proc}/task/{tid}/children", _SMALL_LIMIT)
            except OSError:
                continue
            pids.update(int(token) for token in raw.split())
        return tuple(sorted(pids))

    def child_facts(self) -> list[ProcessFacts]:
        return [self._cache.get(pid) for pid in self.children]

    @cached_property
    def torch_version(self) -> str | None:
        for path in self.mapped_paths:
            match = _TORCH_LIB.match(path)
            if not match:
                continue
            try:
                text = safeio.read_user_file(
                    f"{self._proc}/root",
                    f"{match['torch']}/version.py",
                    _VERSION_FILE_LIMIT,
                ).decode("utf-8", "replace")
            except OSError:
                return None
            found = _VERSION_LINE.search(text)
            return found["v"] if found else None
        return None

    @cached_property
    def packages(self) -> tuple[tuple[str, str], ...]:
        wanted = pkgversions.site_modules([*self.mapped_paths, *self.cmdline])
        if not wanted:
            return ()
        return tuple(pkgversions.versions(f"{self._proc}/root", wanted, self._cache.listings))

    def inherited_run_id(self) -> str | None:
        for child in self.child_facts():
            try:
                run_id = child.environment.get("TORCHELASTIC_RUN_ID")
            except ProcessGone:
                continue
            if run_id:
                return run_id
        return None

    def to_info(self, library_patterns: tuple[str, ...]) -> ProcessInfo:
        environment = self.environment
        cgroup = self.cgroup
        uid, user = self.uid_user
        job = jobid.identity(
            environment,
            jobid.slurm_job_from_cgroup(cgroup) if cgroup else None,
            self.torch_version,
            None if "TORCHELASTIC_RUN_ID" in environment else self.inherited_run_id(),
        )
        return ProcessInfo(
            pid=self.pid,
            ppid=self.ppid,
            name=self.comm,
            uid=uid,
            user=user,
            cmdline=self.cmdline,
            netns=self.netns,
            environment=tuple(sorted(environment.items())),
            threads=tuple(sorted(self.threads.items())),
            libraries=self.libraries_matching(library_patterns),
            cgroup=_first_cgroup_path(cgroup),
            job=job,
            is_complete=self.is_complete,
            packages=self.packages,
        )


def _first_cgroup_path(text: str | None) -> str | None:
    """The unified (v2) path if present, else the first hierarchy's path."""
    if not text:
        return None
    lines = text.splitlines()
    for line in lines:
        if line.startswith("0::"):
            return line[3:]
    return lines[0].split(":", 2)[-1] if lines else None


class FactsCache:
    """One ProcessFacts per pid for a whole probe run."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self._facts: dict[int, ProcessFacts] = {}
        self._users: dict[int, str] = {}
        self.listings: dict[tuple[int, int], list[str] | None] = {}  # site-packages, by inode

    def user_name(self, uid: int) -> str:
        """The account name, or the uid as text. Cached: on a cluster node pwd may ask LDAP or
        sssd, and a node runs many processes of few users."""
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self._users[uid] = name
        return name

    def get(self, pid: int) -> ProcessFacts:
        facts = self._facts.get(pid)
        if facts is None:
            facts = self._facts[pid] = ProcessFacts(pid, self)
        return facts


def primary_pid(holders: tuple[int, ...], facts: FactsCache) -> int:
    """The holder that is no other holder's child: the process that created the socket and
    forked the rest (a DataLoader worker inherits its parent's listening socket)."""
    if len(holders) == 1:
        return holders[0]
    members = set(holders)
    for pid in holders:
        try:
            parent = facts.get(pid).ppid
        except ProcessGone:
            continue
        if parent not in members:
            return pid
    return holders[0]
