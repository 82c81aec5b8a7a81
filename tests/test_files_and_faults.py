"""Files and faults: what a write does to what is already there, and how the command line ends
when the system fails it (a full disk, a file-size limit, Ctrl-C, an unreadable file) or a run
directory holds something unexpected. Every failure is one line and a Unix exit status."""

import errno
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
    err = _without_progress(capsys.readouterr().err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def _without_progress(err):
    """stderr without the training's progress lines (``epoch 1/1 [4/4] loss ...``)."""
    return "".join(line for line in err.splitlines(keepends=True) if not line.startswith("epoch "))


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


# ----------------------------------------------------------------------------- the system fails a write
class _FailingFile:
    """A file whose writes fail with ``error`` (a full disk, Ctrl-C) once ``after`` bytes are
    written: a disk that fills up part-way through a file, or a Ctrl-C in the middle of it."""

    def __init__(self, handle, error, after=512):
        self._handle, self._error, self._left = handle, error, after

    def write(self, data):
        self._left -= len(data)
        if self._left < 0:
            raise self._error
        return self._handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()

    def __getattr__(self, name):
        return getattr(self._handle, name)


@pytest.fixture
def failing_writes(monkeypatch):
    """``failing_writes(fragment, error)``: every file opened from now on whose path contains
    ``fragment`` fails its writes with ``error``."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to tell which file a descriptor is")
    real_fdopen = os.fdopen
    rules = []

    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        name = os.readlink(f"/proc/self/fd/{fd}")
        for fragment, error in rules:
            if fragment in name:
                return _FailingFile(handle, error)
        return handle

    monkeypatch.setattr(os, "fdopen", fdopen)
    return lambda fragment, error: rules.append((fragment, error))


def _no_space():
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_write_error_names_the_file_and_survives_pickling():
    import pickle

    error = _io.WriteError("/runs/x/last.pt", OSError(errno.EFBIG, os.strerror(errno.EFBIG)))
    assert str(error) == (
        "cannot write /runs/x/last.pt: File too large (the file is larger than the "
        "file-size limit of this shell (`ulimit -f`) or file system)"
    )
    again = pickle.loads(pickle.dumps(error))  # a study's trainer reports it from another process
    assert isinstance(again, OSError) and again.errno == errno.EFBIG and str(again) == str(error)


def _temporaries(folder):
    return [p for p in Path(folder).rglob(".*.tmp")]


def test_a_full_disk_while_writing_a_checkpoint_is_one_line(tmp_path, failing_writes, capsys):
    out = tmp_path / "run"
    failing_writes(str(out / ".last.pt."), _no_space())
    err = _one_line(
        capsys, ["train", "--data", TINY["data"], "--epochs", "1", "--batch-size", "64", "--out", str(out)], code=1
    )
    assert f"nlsam train: error: cannot write {out / 'last.pt'}: No space left on device" in err
    assert "free some space" in err and f"nlsam train --out {out} --resume" in err
    assert not _temporaries(out) and not (out / "last.pt").exists() and (out / "config.yaml").is_file()


def _png(value, size=8):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (value, 255 - value, 7)).save(buffer, format="PNG")
    return buffer.getvalue()


def _image_folder(root):
    """A tiny ImageFolder tree: train/ and test/ with classes a and b."""
    for split, count in (("train", 4), ("test", 2)):
        for label, name in enumerate("ab"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                (root / split / name / f"{i}.png").write_bytes(_png(40 * label + 10 * i))
    return root


def test_a_full_disk_while_writing_the_image_cache_costs_only_the_cache(tmp_path, failing_writes, caplog):
    import logging

    from nlsam.data import build_data

    data = _image_folder(tmp_path / "images")
    failing_writes(str(tmp_path / "cache"), _no_space())
    with caplog.at_level(logging.WARNING, logger="nlsam.data"):
        bundle = build_data(str(data), batch_size=4)
    assert bundle.num_train == 8 and bundle.cache_path is None
    warnings = [r.getMessage() for r in caplog.records if "could not write the cache" in r.getMessage()]
    assert len(warnings) == 1 and "No space left on device" in warnings[0]
    assert not _temporaries(tmp_path / "cache")


def test_ctrl_c_while_the_image_cache_is_written_is_one_line(tmp_path, failing_writes, capsys):
    data = _image_folder(tmp_path / "images")
    failing_writes(str(tmp_path / "cache"), KeyboardInterrupt())
    err = _one_line(capsys, ["train", "--data", str(data), "--epochs", "1", "--out", str(tmp_path / "run")], code=130)
    assert err.strip() == "nlsam train: interrupted"
    assert not _temporaries(tmp_path / "cache")


def test_a_file_size_limit_is_one_line(tmp_path):
    resource = pytest.importorskip("resource")
    out = tmp_path / "run"

    def limit_file_size():  # `ulimit -f 512`: Python ignores SIGXFSZ, so the write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, resource.RLIM_INFINITY))

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nlsam",
            "train",
            "--data",
            TINY["data"],
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--out",
            str(out),
        ],
        preexec_fn=limit_file_size,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, NLSAM_CACHE_DIR=str(tmp_path / "cache")),
    )
    assert proc.returncode == 1, proc.stderr
    err = _without_progress(proc.stderr)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, proc.stderr
    assert f"cannot write {out / 'last.pt'}: File too large" in proc.stderr and "ulimit -f" in proc.stderr
    assert not _temporaries(out)


class _InterruptedImport:
    """A module finder that stands for a Ctrl-C while ``name`` is imported (torch, in real life)."""

    def __init__(self, name):
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.name:
            raise KeyboardInterrupt
        return None


def test_ctrl_c_while_nlsam_is_imported_is_one_line(monkeypatch, capsys):
    import _nlsam_entry

    monkeypatch.delitem(sys.modules, "nlsam.cli")
    monkeypatch.setattr(sys, "meta_path", [_InterruptedImport("nlsam.cli"), *sys.meta_path])
    assert _nlsam_entry.main() == 130
    assert capsys.readouterr().err == "nlsam: interrupted\n"


def test_the_console_script_is_the_entry_that_catches_it():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["nlsam"] == "_nlsam_entry:main"
    assert "_nlsam_entry" in project["tool"]["setuptools"]["py-modules"]


# ----------------------------------------------------------------------------- unreadable input, unwritable output
@pytest.fixture
def unlistable(monkeypatch):
    """``unlistable(folder)``: listing ``folder`` fails as without read permission (even as root)."""
    real_scandir = os.scandir
    refused = []

    def scandir(path="."):
        if any(os.path.realpath(path) == os.path.realpath(folder) for folder in refused):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return refused.append


@pytest.mark.parametrize("folder", ["test", "test/b"])
def test_an_unreadable_folder_of_the_data_is_one_line(tmp_path, unlistable, capsys, folder):
    data = _image_folder(tmp_path / "images")
    unlistable(data / folder)
    err = _one_line(capsys, ["train", "--data", str(data), "--out", str(tmp_path / "run")], code=2)
    assert f"cannot list the folder {data / folder}: Permission denied" in err and "chmod -R u+rX" in err
    assert not (tmp_path / "cache").exists()


@pytest.mark.skipif(AS_ROOT, reason="root reads a folder without read permission")
def test_an_unreadable_test_folder_for_real(tmp_path, capsys):
    data = _image_folder(tmp_path / "images")
    (data / "test").chmod(0o000)
    try:
        err = _one_line(capsys, ["train", "--data", str(data), "--out", str(tmp_path / "run")], code=2)
    finally:
        (data / "test").chmod(0o755)
    assert f"cannot list the folder {data / 'test'}: Permission denied" in err


def test_eval_into_a_full_standard_output_is_one_line(run, tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "nlsam", "eval", str(run), "--device", "cpu"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=600,
            env=dict(os.environ, NLSAM_CACHE_DIR=str(tmp_path / "cache")),
        )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == "nlsam eval: error: cannot write to standard output: No space left on device\n"


def _edited_checkpoint(run, to, edit):
    """A copy of ``run``'s last.pt with ``edit(state)`` applied."""
    state = torch.load(run / "last.pt", weights_only=True)
    edit(state)
    torch.save(state, to)
    return to


@pytest.mark.parametrize(
    "config, says",
    [
        (["resnet20"], "its config is a list, not a mapping of settings"),
        ("resnet20", "its config is a str, not a mapping of settings"),
        ({"attention": "nlsam"}, "its config names no model"),
    ],
)
def test_a_checkpoint_whose_config_is_not_a_mapping_is_one_line(run, tmp_path, capsys, config, says):
    path = _edited_checkpoint(run, tmp_path / "odd.pt", lambda state: state.update(config=config))
    for argv in (["eval", str(path)], ["export", str(path), "--format", "torchscript", "--out", str(tmp_path / "x")]):
        err = _one_line(capsys, argv, code=2)
        assert f"{path} is not an nlsam checkpoint: {says}" in err


def test_init_from_torchvision_offline_is_one_line(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torchvision")
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    import torch.hub

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(torch.hub, "urlopen", offline)  # torch.hub holds its own reference
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no weights cached from an earlier run
    capsys.readouterr()
    code = main(
        [
            "train",
            "--data",
            "builtin:64:32:0",
            "--model",
            "resnet18",
            "--attention",
            "none",
            "--init-from",
            "torchvision:resnet18",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if not line.startswith("Downloading: ")]  # torch.hub's own
    assert len(lines) == 1, err
    assert lines[0].startswith("nlsam train: error: could not download the weights torchvision:resnet18")
    assert "Temporary failure in name resolution" in lines[0] and str(tmp_path / "torch") in lines[0]


# ----------------------------------------------------------------------------- messages that say what is wrong
def test_a_checkpoint_without_read_permission_is_not_called_corrupt(run, tmp_path, monkeypatch, capsys):
    real_load = torch.load

    def refused(path, *args, **kwargs):  # what torch.load meets without read permission (even as root)
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    monkeypatch.setattr(torch, "load", refused)
    err = _one_line(capsys, ["eval", str(run / "last.pt")], code=2)
    assert f"cannot read {run / 'last.pt'}: Permission denied (you lack read permission" in err
    assert "corrupt" not in err and "not a PyTorch checkpoint" not in err
    monkeypatch.setattr(torch, "load", real_load)


@pytest.mark.skipif(AS_ROOT, reason="root reads a file without read permission")
def test_a_checkpoint_without_read_permission_for_real(run, tmp_path, capsys):
    import shutil

    path = tmp_path / "locked.pt"
    shutil.copy(run / "last.pt", path)
    path.chmod(0o000)
    err = _one_line(capsys, ["eval", str(path)], code=2)
    assert "Permission denied" in err and "corrupt" not in err


def test_a_state_dict_mismatch_names_the_tensors(run, tmp_path, capsys):
    def other_network(state):
        state["config"] = dict(state["config"], attention="se")

    path = _edited_checkpoint(run, tmp_path / "other.pt", other_network)
    err = _one_line(capsys, ["eval", str(path)], code=2)
    assert "checkpoint does not match the network its config describes (resnet20 + se):" in err
    assert "tensor(s) of the network missing from the checkpoint: stages.layer1.0.attention." in err
    assert "tensor(s) of another shape: stages." in err and "in the checkpoint," in err
    assert not err.rstrip().endswith("ResNet:")


def test_resume_without_config_yaml_takes_the_settings_of_last_pt(run, tmp_path, capsys):
    copy = _copy_run(run, tmp_path / "run")
    (copy / "config.yaml").unlink()
    capsys.readouterr()
    assert main(["train", "--out", str(copy), "--resume"]) == 0
    captured = capsys.readouterr()
    assert f"{copy / 'config.yaml'} is missing; resuming with the settings saved in {copy / 'last.pt'}" in captured.err
    assert "nothing to do" in captured.out and (copy / "config.yaml").is_file()
    # and where there is no run at all, --resume says so (and not "add --resume" either way)
    err = _one_line(capsys, ["train", "--out", str(tmp_path / "empty"), "--resume"], code=2)
    assert "no run to continue; start the run without --resume" in err


def test_a_last_pt_from_another_run_is_called_that(run, tmp_path, capsys):
    copy = _copy_run(run, tmp_path / "run")

    def from_another_run(state):
        state["config"] = dict(state["config"], data="builtin:512:64:3", lr=0.05)

    _edited_checkpoint(run, copy / "last.pt", from_another_run)
    err = _one_line(capsys, ["train", "--out", str(copy), "--resume"], code=2)
    assert f"cannot resume {copy}: its last.pt and config.yaml describe different runs" in err
    assert "data ('builtin:512:64:3' in last.pt, 'builtin:256:64:0' in config.yaml)" in err
    assert "lr (0.05 in last.pt, 0.1 in config.yaml)" in err
    assert "changed data" not in err


def test_a_class_list_mismatch_names_the_class(run, tmp_path, capsys):
    def renamed(state):
        classes = list(state["meta"]["classes"])
        state["renamed"] = classes[3]
        classes[3] = "lynx"
        state["meta"] = dict(state["meta"], classes=classes)

    path = _edited_checkpoint(run, tmp_path / "renamed.pt", renamed)
    original = torch.load(path, weights_only=True)["renamed"]
    err = _one_line(capsys, ["eval", str(path)], code=2)
    assert "the checkpoint's class(es) 'lynx' are not in the dataset" in err
    assert f"the dataset's class(es) '{original}' are not in the checkpoint" in err

    def reordered(state):
        classes = list(state["meta"]["classes"])
        classes[0], classes[1] = classes[1], classes[0]
        state["meta"] = dict(state["meta"], classes=classes)

    path = _edited_checkpoint(run, tmp_path / "reordered.pt", reordered)
    err = _one_line(capsys, ["eval", str(path)], code=2)
    assert "the same classes in another order: class 0 is" in err


@pytest.mark.parametrize(
    "garbage",
    [os.urandom(300) + b"\xff\xfe", b"not json at all\n", b"42\n[1, 2]\n"],
    ids=["bytes", "text", "json-but-not-rows"],
)
def test_resume_rebuilds_a_garbage_metrics_file_from_last_pt(run, tmp_path, capsys, garbage):
    from nlsam.engine.run_dir import read_metrics

    copy = _copy_run(run, tmp_path / "run")
    expected = (copy / "metrics.jsonl").read_text()
    (copy / "metrics.jsonl").write_bytes(garbage)
    assert [r["epoch"] for r in read_metrics(copy)] == [1]  # readers go by last.pt meanwhile
    capsys.readouterr()
    assert main(["train", "--out", str(copy), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "rewrote metrics.jsonl from last.pt (it was damaged after 0 readable epoch(s); last.pt holds 1)" in out
    assert (copy / "metrics.jsonl").read_text() == expected


def test_a_repaired_image_is_read_again_though_its_size_and_time_are_the_same(tmp_path):
    from nlsam.data import build_data

    data = _image_folder(tmp_path / "images")
    image = data / "train" / "a" / "0.png"
    good = image.read_bytes()
    stamp = image.stat().st_mtime_ns
    image.write_bytes(b"\0" * len(good))  # damaged in place: same size ...
    os.utime(image, ns=(stamp, stamp))  # ... and the same time (a copy that keeps times, a coarse clock)
    assert build_data(str(data)).skipped == 1
    image.write_bytes(good)  # repaired, again with the same size and time
    os.utime(image, ns=(stamp, stamp))
    repaired = build_data(str(data))
    assert repaired.skipped == 0 and repaired.num_train == 8
    assert build_data(str(data)).skipped == 0  # and the new cache is used from then on
