"""Every command meets bad input with one clear line on stderr (exit 2), never a traceback."""

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import torch

import nlsam
from nlsam.cli import build_parser, main
from nlsam.engine import Progress, TrainConfig, train
from nlsam.engine.evaluate import evaluate

TINY = dict(data="builtin:256:64:0", model="resnet20", attention="nlsam", batch_size=64, log_every=1000)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLSAM_CACHE_DIR", str(tmp_path / "cache"))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo this should never run",))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    train(TrainConfig.from_dict(dict(TINY, epochs=1, out=str(root / "run"))))
    (root / "random.pt").write_bytes(os.urandom(4000))
    torch.save({"model": _Evil(), "config": {}}, root / "evil.pt")
    with open(root / "evil.pkl", "wb") as handle:
        pickle.dump(_Evil(), handle)
    (root / "a_file").write_text("x")
    (root / "image.png").write_bytes(b"not an image")
    from PIL import Image

    Image.new("RGB", (32, 32)).save(root / "good.png")
    (root / "study.yaml").write_text("base: {epoch: 1}\n")
    return root


def _one_line_error(capsys, argv, code=2):
    capsys.readouterr()
    assert main(argv) == code, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


BAD = [
    # (argv, a fragment of the message); {root} is the fixture folder
    (["train", "--lr", "abc"], "argument --lr: invalid float value: 'abc'"),
    (["train", "--epochs", "2.5"], "argument --epochs: invalid int value"),
    (
        ["train", "--workers", "-1", "--out", "{root}/w"],
        "num_workers must be an integer in 0..256 (0: load in the main process)",
    ),
    (
        ["train", "--attention", "sam", "--out", "{root}/x"],
        "unknown attention 'sam' (did you mean 'nlsam'?); valid: none, nlsam",
    ),
    (["train", "--model", "resnet21", "--out", "{root}/x"], "unknown model 'resnet21'"),
    (
        ["train", "--model-option", "foo=1", "--out", "{root}/x"],
        "unknown option 'foo' for model resnet20; valid: attention,",
    ),
    (["train", "--model-option", "nlsam_pool", "--out", "{root}/x"], "expected KEY=VALUE"),
    (["train", "--out", "{root}/a_file"], "--out {root}/a_file is a file, not a directory"),
    (["train", "--out", "/proc/nlsam-run"], "--out /proc/nlsam-run cannot be created"),
    (["train", "--out", "{root}/run"], "already holds a run; add --resume"),
    (["train", "--out", "{root}/none", "--resume"], "cannot resume: no {root}/none/config.yaml"),
    (["train", "-c", "{root}/missing.yaml"], "config file not found"),
    (["train", "--data", "{root}/nowhere", "--out", "{root}/y"], "unknown dataset"),
    (["eval", "{root}/random.pt"], "not a PyTorch checkpoint"),
    (["eval", "{root}/evil.pt"], "holds pickled code or Python objects (posix.system)"),
    (["eval", "{root}/evil.pkl"], "holds pickled code or Python objects"),
    (["eval", "{root}/missing.pt"], "checkpoint not found"),
    (["eval", "{root}/a_file"], "not a PyTorch checkpoint"),
    (["eval", "{root}/run", "--tta", "crop"], "invalid choice: 'crop'"),
    (["profile", "resnet21"], "unknown model 'resnet21'"),
    (["profile", "resnet20", "--attention", "sam"], "unknown attention 'sam' (did you mean 'nlsam'?); valid: none"),
    (["study", "{root}/study.yaml"], "unknown key 'epoch'"),
    (["study", "{root}/missing.yaml"], "not found"),
    (["report", "{root}/run"], "not a study directory"),
    (["list", "networks"], "invalid choice: 'networks'"),
    (["predict", "{root}/evil.pt", "{root}/good.png"], "holds pickled code"),
    (["predict", "{root}/run", "{root}/image.png"], "image.png"),
    (["cam", "{root}/random.pt", "{root}/good.png"], "not a PyTorch checkpoint"),
    (["attention", "{root}/run", "{root}/missing.png"], "missing.png"),
    (["export", "{root}/random.pt", "--format", "torchscript"], "not a PyTorch checkpoint"),
    (["export", "{root}/run", "--format", "pdf"], "invalid choice: 'pdf'"),
    (["bogus"], "invalid choice: 'bogus'"),
]


@pytest.mark.parametrize("argv, fragment", BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_bad_input_gets_one_line(files, capsys, argv, fragment):
    argv = [a.format(root=files) for a in argv]
    err = _one_line_error(capsys, argv)
    assert fragment.format(root=files) in err
    assert "weights_only=False" not in err and "re-run" not in err.lower()


def test_pickled_code_never_runs_and_is_never_advised(files, capsys):
    for path in (files / "evil.pt", files / "random.pt"):
        with pytest.raises(ValueError) as info:
            nlsam.load_model(path)
        assert "weights_only" not in str(info.value)
    with pytest.raises(ValueError, match="holds pickled code"):
        nlsam.load_model(files / "evil.pt")
    assert "this should never run" not in capsys.readouterr().out


def test_resume_from_a_malicious_checkpoint_is_refused(files, tmp_path, capsys):
    run = tmp_path / "run"
    train(TrainConfig.from_dict(dict(TINY, epochs=1, out=str(run))))
    (run / "last.pt").write_bytes((files / "evil.pt").read_bytes())
    err = _one_line_error(capsys, ["train", "--out", str(run), "--resume"])
    assert "holds pickled code" in err


def test_data_are_not_loaded_before_out_is_checked(files, monkeypatch, capsys):
    import nlsam.data

    monkeypatch.setattr(nlsam.data, "build_data", lambda *a, **k: pytest.fail("data loaded before --out was checked"))
    _one_line_error(capsys, ["train", "--out", str(files / "a_file")])


def test_offline_download_is_one_line(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    err = _one_line_error(
        capsys,
        ["train", "--data", "cifar10", "--data-dir", str(tmp_path / "d"), "--download", "--out", str(tmp_path / "run")],
    )
    assert "could not download" in err and "cifar-10-python.tar.gz" in err


def test_no_misleading_resize_message_before_an_option_error(tmp_path, capsys):
    err = _one_line_error(
        capsys, ["train", "--data", TINY["data"], "--model-option", "nlsam_pool=3", "--out", str(tmp_path / "run")]
    )
    assert "not divisible by the pooling kernel k=3" in err
    assert "resizing" not in capsys.readouterr().out


def test_a_broken_pipe_ends_quietly():
    proc = subprocess.Popen(
        [sys.executable, "-m", "nlsam", "profile", "resnet110", "--breakdown"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # like `| head -0`: the reader is gone before anything is written
    err = proc.stderr.read().decode()
    proc.wait()
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141


def test_list_names_models_attention_and_datasets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "models:" in out and "  resnet110" in out and "attention:" in out and "  cbam+nlsam" in out
    assert main(["list", "attention"]) == 0
    assert capsys.readouterr().out.split() == ["none", *nlsam.attention.ATTENTION_NAMES]


def test_every_config_field_is_a_flag(tmp_path):
    parser = build_parser()
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    dests = {a.dest for a in train_parser._actions}
    missing = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in dests]
    assert not missing, f"config fields without a flag: {missing}"
    args = parser.parse_args(
        [
            "train",
            "--momentum",
            "0.8",
            "--nesterov",
            "--gamma",
            "0.5",
            "--warmup-lr",
            "0.01",
            "--grad-clip",
            "2",
            "--log-every",
            "7",
            "--eval-batch-size",
            "99",
            "--no-channels-last",
            "--cache-dir",
            str(tmp_path),
        ]
    )
    assert (
        args.momentum,
        args.nesterov,
        args.gamma,
        args.warmup_lr,
        args.grad_clip,
        args.log_every,
        args.eval_batch_size,
        args.channels_last,
        args.cache_dir,
    ) == (0.8, True, 0.5, 0.01, 2.0, 7, 99, False, str(tmp_path))
    assert "builtin:N_TRAIN" in train_parser.format_help()


def test_top5_only_above_five_classes():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x, y = torch.randn(6, 3, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    assert evaluate(model, [(x, y)], num_classes=3)["top5"] is None
    wide = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8))
    assert evaluate(wide, [(x, y)], num_classes=8)["top5"] is not None


def test_eval_says_which_checkpoint_it_used(files, capsys):
    capsys.readouterr()
    assert main(["eval", str(files / "run"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint {files / 'run' / 'best.pt'}, after epoch 1 of 1" in out
    assert main(["eval", str(files / "run"), "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epoch"] == 1


def test_a_network_too_deep_for_its_input_warns(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--data",
                "builtin:64:32:0",
                "--model",
                "resnet50",
                "--attention",
                "none",
                "--epochs",
                "1",
                "--batch-size",
                "32",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "warning: resnet50 reduces 32x32 images to a 1x1 last feature map" in err and "--image-size 224" in err


def test_progress_redraws_by_time_and_shows_evaluation(capsys):
    now = [0.0]
    progress = Progress(True, log_every=50, refresh_s=0.5, tty=True, clock=lambda: now[0])
    for step in range(1, 79):  # 78 steps over 7.8 s
        now[0] += 0.1
        if progress.due(step, 78):
            progress.step(0, 1, step, 78, 1.0, 0.1, 100.0)
    for step in range(1, 11):
        now[0] += 0.1
        progress.eval_step(step, 10)
    progress.end_epoch()
    err = capsys.readouterr().err
    draws = err.count("epoch 1/1 [")
    assert 14 <= draws <= 17 and "[78/78]" in err  # about every 0.5 s, and the final step
    assert "evaluating [10/10]" in err
