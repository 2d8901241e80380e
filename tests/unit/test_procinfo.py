"""Process facts read from recorded /proc files: maps and status."""

from __future__ import annotations

from pathlib import Path

from netaudit.procinfo import FactsCache


def test_maps_paths_of_shared_objects_once_each_from_the_first_slash(tmp_path: Path) -> None:
    (tmp_path / "123").mkdir()
    (tmp_path / "123" / "maps").write_bytes(
        b"55d0c8a00000-55d0c8a28000 r--p 00000000 08:01 1234 /usr/bin/python3.11\n"
        b"7f1c00000000-7f1c00021000 rw-p 00000000 00:00 0 \n"
        b"7f1c2a000000-7f1c2a100000 r--p 00000000 08:01 99 /opt/torch/lib/libtorch_cpu.so\n"
        b"7f1c2a100000-7f1c2b000000 r-xp 00100000 08:01 99 /opt/torch/lib/libtorch_cpu.so\n"
        b"7f1c2c000000-7f1c2c001000 r--p 00000000 08:01 77 /home/a b/libnccl.so.2 (deleted)\n"
        b"7f1c2d000000-7f1c2d001000 r--p 00000000 00:05 12 [vdso]\n"
        b"7f1c2e000000-7f1c2e001000 r--p 00000000 08:01 78 /usr/lib/x86_64-linux-gnu/libc.so.6"
    )
    (tmp_path / "123" / "status").write_text(
        "Name:\tpython3\nUmask:\t0022\nPPid:\t 77\nUid:\t1000\t1001\t1000\t1000\n"
    )

    facts = FactsCache(str(tmp_path)).get(123)

    assert facts.mapped_paths == (
        "/opt/torch/lib/libtorch_cpu.so",
        "/home/a b/libnccl.so.2 (deleted)",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
    )
    assert (facts.ppid, facts.uid_user[0]) == (77, 1000)
