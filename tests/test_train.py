import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import nlsam
from nlsam.cli import main
from nlsam.engine import NonFiniteLossError, TrainConfig, lr_factor, resolve_config, train
from nlsam.engine.checkpoint import load_checkpoint

TINY = dict(data="builtin:512:256:0", model="resnet20", attention="nlsam", batch_size=64, log_every=1000)


def tiny_config(out, **kw):
    return TrainConfig.from_dict({**TINY, "out": str(out), "epochs": 2, **kw})


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLSAM_CACHE_DIR", str(tmp_path / "cache"))


def test_run_directory_contents(tmp_path):
    summary = train(tiny_config(tmp_path / "run"))
    run = tmp_path / "run"
    assert {"config.yaml", "metrics.jsonl", "last.pt", "best.pt"} <= {p.name for p in run.iterdir()}
    lines = [json.loads(row) for row in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in lines] == [1, 2]
    for key in ("epoch", "lr", "train_loss", "test_loss", "test_top1", "images_per_s"):
        assert key in lines[0]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"] == "resnet20" and saved["out"] == str(run)
    state = load_checkpoint(run / "last.pt")
    assert {"model", "optimizer", "scheduler", "scaler", "epoch", "rng", "config"} <= set(state)
    assert summary["test_top1"] == lines[-1]["test_top1"]


def test_load_model_and_eval_cli(tmp_path, capsys):
    train(tiny_config(tmp_path / "run", epochs=1))
    model = nlsam.load_model(tmp_path / "run")
    assert not model.training
    assert len(model.classes) == 8 and model.input_size == (32, 32)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"top1", "top5", "loss", "n"} <= set(result) and result["n"] == 256
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert result["top1"] == pytest.approx(metrics["test_top1"])
    assert main(["eval", str(tmp_path / "run"), "--json", "--device", "cpu", "--tta", "flip"]) == 0
    flipped = json.loads(capsys.readouterr().out)
    assert flipped["tta"] == "flip" and flipped["n"] == 256
    assert main(["eval", str(tmp_path / "run"), "--tta", "crop10"]) == 2
    assert "invalid choice: 'crop10'" in capsys.readouterr().err


def test_flip_tta_averages_the_probabilities_of_image_and_mirror():
    from nlsam.engine.evaluate import evaluate

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 5, 3))
    x, y = torch.randn(6, 3, 4, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        prob = (model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2
    result = evaluate(model, [(x, y)], num_classes=3, tta="flip")
    assert result["top1"] == pytest.approx(100 * (prob.argmax(1) == y).float().mean().item())
    assert result["loss"] == pytest.approx(-prob[torch.arange(6), y].log().mean().item(), rel=1e-5)
    plain = evaluate(model, [(x, y)], num_classes=3)
    assert plain["loss"] != pytest.approx(result["loss"])
    with pytest.raises(ValueError, match="unknown tta 'crop'; valid: none, flip"):
        evaluate(model, [(x, y)], num_classes=3, tta="crop")


def _weights(path):
    return load_checkpoint(path)["model"]


def test_resume_after_interrupt_gives_identical_weights(tmp_path):
    full = train(tiny_config(tmp_path / "full", epochs=3, deterministic=True))

    def stop_after_first(summary):
        if summary["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path / "cut", epochs=3, deterministic=True), on_epoch_end=stop_after_first)
    resumed = train(tiny_config(tmp_path / "cut", epochs=3, deterministic=True, resume=True))
    a, b = _weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "cut" / "last.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed["test_top1"] == full["test_top1"]


def test_resume_says_when_the_precision_changes(tmp_path, capsys):
    train(tiny_config(tmp_path / "run", epochs=1, amp="off"))
    assert load_checkpoint(tmp_path / "run" / "last.pt")["precision"] == "float32"
    capsys.readouterr()
    train(tiny_config(tmp_path / "run", epochs=2, amp="bf16", resume=True))
    err = capsys.readouterr()
    assert "trained in float32 so far and continues in bfloat16" in err.out + err.err
    assert load_checkpoint(tmp_path / "run" / "last.pt")["precision"] == "bfloat16"


def test_tensorboard_logs_every_epoch_metric(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tiny_config(tmp_path / "run", tensorboard=True))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    metrics = [json.loads(row) for row in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for key in ("lr", "train_loss", "test_loss", "test_top1", "images_per_s"):
        logged = events.Scalars(key)
        assert [e.step for e in logged] == [1, 2], key
        assert [e.value for e in logged] == pytest.approx([m[key] for m in metrics], rel=1e-6), key


def test_killed_process_resumes_to_the_same_result(tmp_path):
    """SIGKILL a real `python -m nlsam train` mid-run, resume it, compare with a clean run."""
    args = ["--data", "builtin:1024:128:0", "--epochs", "3", "--batch-size", "64", "--deterministic", "--device", "cpu"]
    env = dict(os.environ, NLSAM_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "nlsam", "train", *args, "--out", str(tmp_path / "killed")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= 1:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "killed" / "last.pt").exists()
    assert main(["train", *args, "--out", str(tmp_path / "killed"), "--resume"]) == 0
    assert main(["train", *args, "--out", str(tmp_path / "clean")]) == 0
    a, b = _weights(tmp_path / "killed" / "last.pt"), _weights(tmp_path / "clean" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["epoch"] for row in lines] == [1, 2, 3]


class _NaNLoss(torch.nn.CrossEntropyLoss):
    def forward(self, logits, labels):
        return super().forward(logits, labels) * float("nan")


def test_nan_loss_stops_with_a_clear_message_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    train(tiny_config(tmp_path / "run", epochs=1))
    before = _weights(tmp_path / "run" / "last.pt")
    import importlib

    train_module = importlib.import_module("nlsam.engine.optimisation")  # where the loss is made

    monkeypatch.setattr(train_module.nn, "CrossEntropyLoss", _NaNLoss)
    with pytest.raises(NonFiniteLossError, match="training loss became nan at epoch 2"):
        train(tiny_config(tmp_path / "run", epochs=2, resume=True))
    after = _weights(tmp_path / "run" / "last.pt")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    train(tiny_config(tmp_path / "run", epochs=1))
    assert main(["train", "--data", TINY["data"], "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    assert "already holds a run; add --resume" in capsys.readouterr().err


def test_config_file_and_flag_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: resnet32\nepochs: 5\nlr: 0.05\nmodel_options: {nlsam_pool: 4}\n")
    cfg = resolve_config(path, {"epochs": 2})
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.model_options) == ("resnet32", 2, 0.05, {"nlsam_pool": 4})


def test_config_values_take_their_field_type(tmp_path, capsys):
    # YAML 1.1 reads 1e-4 (no decimal point) as a string: a float field takes it as the number
    path = tmp_path / "c.yaml"
    path.write_text("weight_decay: 1e-4\nlr: 1\nepochs: 3.0\nwarmup_lr: null\n")
    cfg = resolve_config(path)
    assert (cfg.weight_decay, cfg.lr, cfg.epochs, cfg.warmup_lr) == (1e-4, 1.0, 3, None)
    assert isinstance(cfg.lr, float) and isinstance(cfg.epochs, int)
    # YAML 1.1 reads `off` as false: a string field reads it back as the word
    path.write_text("amp: off\n")
    assert resolve_config(path).amp == "off"
    for text, message in [
        ("amp: on\n", "unknown amp 'on'; valid: auto, off, bf16, fp16"),
        ("weight_decay: lots\n", "weight_decay in {} must be a number, got 'lots'"),
        ("epochs: 2.5\n", "epochs in {} must be an integer, got 2.5"),
        ("nesterov: 'yes'\n", "nesterov in {} must be true or false, got 'yes'"),
        ("model: 20\n", "model in {} must be a string, got 20"),
    ]:
        path.write_text(text)
        assert main(["train", "-c", str(path)]) == 2
        assert message.format(path) in capsys.readouterr().err


def test_bad_config_inputs(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("epoch: 5\n")
    assert main(["train", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'epoch'" in err and "did you mean 'epochs'" in err and "valid keys:" in err
    assert main(["train", "-c", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["train", "--scheduler", "poly", "--out", str(tmp_path / "x")]) == 2
    assert (
        "argument --scheduler: invalid choice: 'poly' (choose from 'step', 'cosine', 'linear', 'onecycle', 'constant')"
    ) in capsys.readouterr().err
    assert (
        main(["train", "--model", "resnet21", "--epochs", "1", "--data", TINY["data"], "--out", str(tmp_path / "y")])
        == 2
    )
    assert "unknown model 'resnet21'" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "z")]) == 2
    assert main(["train", "--device", "cuda", "--out", str(tmp_path / "w")]) == (0 if torch.cuda.is_available() else 2)


def test_shipped_configs_are_valid():
    from nlsam.configs import config_path, list_configs

    assert list_configs(), "no configs shipped"
    for name in list_configs():
        cfg = resolve_config(config_path(name))
        nlsam.create_model(cfg.model, attention=cfg.attention, **cfg.model_options)


def test_paper_schedule():
    cfg = TrainConfig(epochs=164, lr=0.1, scheduler="step", milestones=[82, 123], warmup_epochs=1, warmup_lr=0.01)
    assert lr_factor(cfg, 0.5) == pytest.approx(0.1)
    assert lr_factor(cfg, 1.0) == 1.0
    assert lr_factor(cfg, 82.0) == pytest.approx(0.1)
    assert lr_factor(cfg, 123.5) == pytest.approx(0.01)
    cos = TrainConfig(epochs=10, scheduler="cosine")
    assert lr_factor(cos, 0) == 1.0 and lr_factor(cos, 10) == pytest.approx(0.0)
    lin = TrainConfig(epochs=30, scheduler="linear", warmup_epochs=4.5)
    assert lr_factor(lin, 2.25) == pytest.approx(0.5, abs=1e-3)  # half-way up the warm-up ramp
    assert lr_factor(lin, 4.5) == 1.0
    assert lr_factor(lin, 17.25) == pytest.approx(0.5)  # half-way down: the decay is a straight line
    assert lr_factor(lin, 30) == pytest.approx(0.0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, out, result_dir):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size)
    )
    torch.set_num_threads(1)
    summary = train(TrainConfig.from_dict({**TINY, "epochs": 2, "out": out, "device": "cpu"}))
    Path(result_dir, f"rank{rank}.json").write_text(json.dumps(summary))


def test_ddp_two_gloo_processes_keep_weights_identical(tmp_path):
    import torch.multiprocessing as mp

    out, results = str(tmp_path / "ddp"), tmp_path / "results"
    results.mkdir()
    mp.spawn(_ddp_worker, args=(2, _free_port(), out, str(results)), nprocs=2, join=True)
    r0, r1 = (json.loads((results / f"rank{i}.json").read_text()) for i in range(2))
    assert r0["param_checksum"] == r1["param_checksum"]
    assert r0["test_top1"] == r1["test_top1"]  # metrics are reduced over both ranks
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # only rank 0 writes
    assert r0["images_per_s"] > 0


def _write_folder(root, size, mode, per_class=6):
    from PIL import Image

    for split in ("train", "test"):
        for c, colour in enumerate((0, 255)):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.new(mode, (size, size), colour if mode == "L" else (colour, i * 10, 0)).save(d / f"{i}.png")


def test_other_peoples_data_28px_grayscale_is_resized_to_fit(tmp_path, capsys):
    _write_folder(tmp_path / "digits", 28, "L")
    summary = train(
        TrainConfig.from_dict(dict(data=str(tmp_path / "digits"), epochs=1, batch_size=4, out=str(tmp_path / "run")))
    )
    assert "resizing them to the network's native 32x32" in capsys.readouterr().out
    model = nlsam.load_model(tmp_path / "run")
    assert model.input_size == (32, 32) and model.classes == ["class0", "class1"]
    assert summary["epoch"] == 1


def test_other_peoples_data_64px_rgb_trains_at_its_own_size(tmp_path):
    _write_folder(tmp_path / "tiles", 64, "RGB")
    train(TrainConfig.from_dict(dict(data=str(tmp_path / "tiles"), epochs=1, batch_size=4, out=str(tmp_path / "run"))))
    model = nlsam.load_model(tmp_path / "run")
    assert model.input_size == (64, 64)
    sizes = {m.feature_size for m in model.modules() if isinstance(m, nlsam.NLSAM)}
    assert sizes == {(32, 32), (16, 16)}


def test_variants_with_one_seed_start_from_the_same_shared_layers(tmp_path):
    """Attention modules draw random numbers while the network is built; the layers every
    variant shares must start alike anyway, so runs with one seed are paired."""
    starts = {}
    for attention in ("none", "nlsam", "se+nlsam", "cbam"):
        out = tmp_path / attention
        train(tiny_config(out, attention=attention, epochs=1, lr=1e-30, momentum=0.0, weight_decay=0.0, seed=3))
        starts[attention] = _weights(out / "last.pt")  # lr 1e-30: the weights it started from
    plain = starts.pop("none")
    for attention, weights in starts.items():
        shared = [k for k in plain if k in weights and "num_batches_tracked" not in k and "running" not in k]
        assert len(shared) == len([k for k in plain if "num_batches_tracked" not in k and "running" not in k])
        for key in shared:
            # (a step at lr 1e-30 moves zero biases by ~1e-32; different inits differ by ~0.01-1)
            torch.testing.assert_close(weights[key], plain[key], rtol=0, atol=1e-20, msg=f"{attention} {key}")
        assert len(weights) > len(plain)  # and the attention modules are there
