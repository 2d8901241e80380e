"""Reading user-controlled files as root: no links, no FIFOs, no huge files, no hangs."""

from __future__ import annotations

import io
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


# Documents a user names: read_document and read_stream ------------------------------------


def test_read_document_reads_a_regular_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "inventory.json"
    path.write_bytes(b'{"kind": "x"}')
    assert safeio.read_document(str(path), 13) == b'{"kind": "x"}'


def test_read_document_follows_a_link_the_user_named(tmp_path: Path) -> None:
    (tmp_path / "real.toml").write_text("a = 1\n")
    (tmp_path / "link.toml").symlink_to(tmp_path / "real.toml")
    assert safeio.read_document(str(tmp_path / "link.toml"), 1024) == b"a = 1\n"


def test_read_document_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "inventory.json"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(safeio.UnsafeFileError) as caught:
        safeio.read_document(str(fifo), 1024)
    assert time.monotonic() - started < 1.0
    assert caught.value.strerror == "a FIFO, not a regular file"


@pytest.mark.parametrize(
    ("path", "kind"), [("/dev/zero", "a character device"), ("/dev/null", "a character device")]
)
def test_read_document_refuses_a_device_before_reading(path: str, kind: str) -> None:
    with pytest.raises(safeio.UnsafeFileError) as caught:
        safeio.read_document(path, 1 << 30)
    assert caught.value.strerror == f"{kind}, not a regular file"


def test_read_document_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(safeio.UnsafeFileError, match="a directory, not a regular file"):
        safeio.read_document(str(tmp_path), 1024)


def test_read_document_refuses_a_socket(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        with pytest.raises(safeio.UnsafeFileError, match="a socket, not a regular file"):
            safeio.read_document(str(path), 1024)


def test_read_document_refuses_past_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b" " * 1025)
    with pytest.raises(safeio.UnsafeFileError) as caught:
        safeio.read_document(str(path), 1024)
    assert caught.value.strerror == "larger than 1024 bytes"
    assert safeio.read_document(str(path), 1025) == b" " * 1025


def test_read_document_refuses_a_sparse_giant_by_its_size(tmp_path: Path) -> None:
    # Given a 64 GiB file with no data blocks, refusing it must not read it.
    path = tmp_path / "sparse.json"
    with open(path, "wb") as handle:
        handle.truncate(64 << 30)
    started = time.monotonic()
    with pytest.raises(safeio.UnsafeFileError, match="larger than 4 MiB"):
        safeio.read_document(str(path), 4 << 20)
    assert time.monotonic() - started < 1.0


def test_read_document_keeps_the_open_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        safeio.read_document(str(tmp_path / "missing.json"), 1024)


def test_read_stream_reads_text_and_binary_streams() -> None:
    assert safeio.read_stream(io.StringIO("é" * 3), 6) == "é".encode() * 3
    assert safeio.read_stream(io.BytesIO(b"abc"), 3) == b"abc"


def test_read_stream_stops_at_the_limit() -> None:
    class Endless(io.RawIOBase):
        reads = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            Endless.reads += 1
            buffer[:] = b"0" * len(buffer)
            return len(buffer)

    with pytest.raises(safeio.UnsafeFileError, match="larger than 1 MiB"):
        safeio.read_stream(Endless(), 1 << 20)
    assert Endless.reads <= 3
    with pytest.raises(safeio.UnsafeFileError, match="larger than 5 bytes"):
        safeio.read_stream(io.StringIO("ééé"), 5)
