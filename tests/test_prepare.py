"""What a run settles before its loop (``nlsam.engine.prepare``): the network built once for
real (and its plain twin for the paired initialisation), the data loaded once, the image size
settled before either, and nothing written when the network's options are wrong."""

import functools
import importlib

import pytest
import torch

import nlsam.data
import nlsam.engine.prepare as prepare_module
from nlsam.engine import TrainConfig, train
from nlsam.models import ResNet

TINY = dict(data="builtin:128:64:0", model="resnet20", batch_size=64, log_every=1000, epochs=1)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLSAM_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def counts(monkeypatch):
    """How many networks were built (``ResNet.__init__`` entered) and datasets loaded."""
    seen = dict(networks=0, data=0)
    build_resnet, build_data = ResNet.__init__, prepare_module.build_data

    @functools.wraps(build_resnet)  # the registry reads the options from its signature
    def counted_resnet(self, *args, **kwargs):
        seen["networks"] += 1
        build_resnet(self, *args, **kwargs)

    def counted_data(*args, **kwargs):
        seen["data"] += 1
        return build_data(*args, **kwargs)

    monkeypatch.setattr(ResNet, "__init__", counted_resnet)
    monkeypatch.setattr(prepare_module, "build_data", counted_data)
    return seen


@pytest.mark.parametrize("attention", ["nlsam", "none"])
def test_a_run_builds_its_network_and_its_plain_twin_and_loads_the_data_once(tmp_path, counts, attention):
    train(TrainConfig.from_dict(dict(TINY, attention=attention, out=str(tmp_path / "run"))))
    assert counts == dict(networks=2, data=1)


def test_a_resumed_run_builds_its_network_once(tmp_path, counts):
    train(TrainConfig.from_dict(dict(TINY, attention="nlsam", out=str(tmp_path / "run"))))
    counts.update(networks=0, data=0)
    train(TrainConfig.from_dict(dict(TINY, attention="nlsam", epochs=2, resume=True, out=str(tmp_path / "run"))))
    assert counts == dict(networks=1, data=1)


def test_images_that_do_not_fit_are_resized_before_the_data_is_loaded(tmp_path, counts, capsys):
    from PIL import Image

    for split in ("train", "test"):
        for label in ("a", "b"):
            (tmp_path / "images" / split / label).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (28, 28), (40 * i, 90, 200)).save(tmp_path / "images" / split / label / f"{i}.png")
    cfg = TrainConfig.from_dict(dict(TINY, data=str(tmp_path / "images"), attention="nlsam", out=str(tmp_path / "run")))
    train(cfg)
    assert "images of 28x28 do not fit resnet20 + nlsam; resizing them to the network's native 32x32" in (
        capsys.readouterr().out
    )
    assert counts["data"] == 1
    saved = nlsam.engine.load_checkpoint(tmp_path / "run" / "last.pt")
    assert saved["config"]["image_size"] == 32 and saved["meta"]["input_size"] == [32, 32]


def test_wrong_network_options_fail_before_anything_is_written(tmp_path, counts):
    cfg = TrainConfig.from_dict(
        dict(TINY, attention="nlsam", out=str(tmp_path / "run"), model_options=dict(nlsam_poool=2))
    )
    with pytest.raises(ValueError, match="unknown option .nlsam_poool."):
        train(cfg)
    assert not (tmp_path / "run").exists() and counts["data"] == 0


def test_the_prepared_run_is_what_the_loop_trains(tmp_path, monkeypatch):
    seen = {}

    def loop(run, on_epoch_end):
        seen["run"] = run
        return {}

    monkeypatch.setattr(importlib.import_module("nlsam.engine.train"), "_train", loop)  # the module, not train()
    train(TrainConfig.from_dict(dict(TINY, attention="se+nlsam", out=str(tmp_path / "run"))))
    run = seen["run"]
    assert run.cfg.out == str(tmp_path / "run") and run.run_dir == tmp_path / "run"
    assert run.resume_state is None and run.start_epoch == 0 and run.history == ()
    assert run.meta["input_size"] == [32, 32] and run.meta["classes"] == list(nlsam.data.BUILTIN_CLASSES)
    assert run.optimisation.model is run.model and run.precision in ("float32", "bfloat16")
    assert run.model.fc.out_features == 8 and next(run.model.parameters()).device == torch.device("cpu")
    assert (tmp_path / "run" / "config.yaml").is_file() and (tmp_path / "run" / "meta.json").is_file()
