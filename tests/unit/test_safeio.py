"""Reading user-controlled files as root: no links, no FIFOs, no huge files, no hangs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from netaudit import safeio


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "site" / "torch").mkdir(parents=True)
    (tmp_path / "site" / "torch" / "version.py").write_text("__version__ = '2.13.0+cpu'\n")
    return tmp_path


def test_reads_a_regular_file(root: Path) -> None:
    assert safeio.read_user_file(str(root), "/site/torch/version.py", 1024).startswith(b"__version__")


def test_refuses_a_symlinked_file(root: Path) -> None:
    (root / "secret").write_text("root:x:0:0\n")
    target = root / "site" / "torch" / "version.py"
    target.unlink()
    target.symlink_to(root / "secret")
    with pytest.raises(OSError):
        safeio.read_user_file(str(root), "/site/torch/version.py", 1024)


def test_refuses_a_symlinked_directory(root: Path) -> None:
    (root / "elsewhere").mkdir()
    (root / "elsewhere" / "version.py").write_text("__version__ = 'evil'\n")
    (root / "link").symlink_to(root / "elsewhere")
    with pytest.raises(OSError):
        safeio.read_user_file(str(root), "/link/version.py", 1024)


def test_a_fifo_does_not_block(root: Path) -> None:
    fifo = root / "site" / "torch" / "version.py"
    fifo.unlink()
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(safeio.UnsafeFileError):
        safeio.read_user_file(str(root), "/site/torch/version.py", 1024)
    assert time.monotonic() - started < 1.0


def test_refuses_a_huge_file(root: Path) -> None:
    (root / "site" / "torch" / "version.py").write_bytes(b"#" * 70_000)
    with pytest.raises(safeio.UnsafeFileError, match="larger than"):
        safeio.read_user_file(str(root), "/site/torch/version.py", 65536)


@pytest.mark.parametrize("path", ["", "/", "/site/../etc/passwd", "/site/./torch"])
def test_refuses_odd_paths(root: Path, path: str) -> None:
    with pytest.raises(safeio.UnsafeFileError):
        safeio.read_user_file(str(root), path, 1024)
