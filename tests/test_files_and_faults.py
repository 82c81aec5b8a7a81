"""Files and faults: what a write does to what is already there, and how the command line ends
when the system fails it (a full disk, a file-size limit, Ctrl-C, an unreadable file) or a run
directory holds something unexpected. Every failure is one line and a Unix exit status."""
import errno
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from nlsam import _io
from nlsam.cli import main
from nlsam.engine import TrainConfig, train

TINY = dict(data="builtin:256:64:0", model="resnet20", attention="nlsam", batch_size=64, log_every=1000)
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLSAM_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished one-epoch run (read only: tests that change one copy it)."""
    out = tmp_path_factory.mktemp("run") / "run"
    train(TrainConfig.from_dict(dict(TINY, epochs=1, out=str(out))))
    return out


def _one_line(capsys, argv, code):
    capsys.readouterr()
    assert main(argv) == code, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def _copy_run(run, to):
    import shutil

    shutil.copytree(run, to)
    return to


# ----------------------------------------------------------------------------- what a write replaces
def _read_fifo_in_background(fifo):
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()), daemon=True)
    reader.start()
    return reader, got


def test_a_fifo_is_written_directly_never_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader, got = _read_fifo_in_background(fifo)
    _io.atomic_write_bytes(fifo, b"through the pipe")
    reader.join(timeout=30)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced by a regular file"
    assert got == [b"through the pipe"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temporary file left


def test_a_symbolic_link_stands_for_the_file_it_points_to(tmp_path):
    (tmp_path / "models").mkdir()
    real = tmp_path / "models" / "best.onnx"
    real.write_bytes(b"old")
    link = tmp_path / "best.onnx"
    link.symlink_to(real)
    _io.atomic_write_bytes(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(real), "the link was replaced"
    assert real.read_bytes() == b"new"
    dangling = tmp_path / "later.pt"
    dangling.symlink_to(tmp_path / "models" / "later.pt")
    _io.atomic_write_bytes(dangling, b"made")
    assert dangling.is_symlink() and (tmp_path / "models" / "later.pt").read_bytes() == b"made"


@pytest.fixture
def device_guard(monkeypatch):
    """Make sure no code under test can ever replace a device node: a rename onto anything in
    /dev fails the test instead."""
    real_replace = os.replace

    def guarded(src, dst, *args, **kwargs):
        if os.path.realpath(dst).startswith("/dev/"):
            raise AssertionError(f"{dst} would have been replaced by a regular file")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", guarded)
    yield
    for node in (os.devnull, "/dev/full"):
        assert not os.path.exists(node) or stat.S_ISCHR(os.stat(node).st_mode), f"{node} is no longer a device"


def test_dev_null_is_written_directly(device_guard):
    _io.atomic_write_bytes(os.devnull, b"gone")
    with _io.atomic_file(os.devnull) as handle:
        torch.save({"x": torch.zeros(3)}, handle)


def test_a_character_device_that_is_full_is_one_line_and_kept(device_guard):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with pytest.raises(_io.WriteError, match=r"cannot write /dev/full: No space left on device"):
        _io.atomic_write_bytes("/dev/full", b"x" * 100_000)
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_a_directory_or_socket_is_refused_and_kept(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ValueError, match=r"refusing to write .*folder: it is a directory"):
        _io.atomic_write_bytes(folder, b"x")
    assert folder.is_dir()
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(ValueError, match="it is a socket"):
            _io.atomic_write_bytes(path, b"x")
        assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_export_to_dev_null_and_a_fifo(run, tmp_path, capsys, device_guard):
    pytest.importorskip("safetensors")
    capsys.readouterr()
    assert main(["export", str(run), "--format", "safetensors", "--out", os.devnull]) == 0
    assert f"wrote {os.devnull}" in capsys.readouterr().out
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader, got = _read_fifo_in_background(fifo)
    assert main(["export", str(run), "--format", "safetensors", "--out", str(fifo), "--no-check"]) == 0
    reader.join(timeout=60)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and got and len(got[0]) > 100_000
