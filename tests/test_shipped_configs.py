"""The paper's training configs and study files ship inside the package and are reached by name:
``nlsam train -c NAME``, ``nlsam study NAME``, ``nlsam list configs``; a path still works and an
existing one wins; an unknown name is one line that lists the valid ones."""

import importlib
import importlib.resources
from pathlib import Path

import pytest
import yaml

from nlsam.cli import main
from nlsam.configs import config_path, description, list_configs, list_studies, study_path
from nlsam.engine import TrainConfig, resolve_config

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(data="builtin:256:64:0", model="resnet20", attention="nlsam", batch_size=64, epochs=1)


@pytest.fixture
def trained(monkeypatch):
    """``nlsam train``'s training replaced by a recorder of the config it was given."""
    seen = []
    monkeypatch.setattr(importlib.import_module("nlsam.engine.train"), "train", seen.append)
    return seen


def _one_line_error(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_the_paper_configs_and_studies_are_shipped():
    assert {
        "cifar10_resnet110_nlsam",
        "cifar100_resnet110_nlsam",
        "imagenet_resnet50_nlsam",
        "cifar10_resnet20_fast",
    } <= set(list_configs())
    assert {
        "table1_reduction",
        "table2_stage_k",
        "table3_interpolation",
        "table5_depth",
        "table7_imagenet",
        "figure4_combinations",
    } <= set(list_studies())
    assert list_configs() == sorted(list_configs()) and list_studies() == sorted(list_studies())
    assert not set(list_configs()) & set(list_studies())


@pytest.mark.parametrize("name", list_configs())
def test_every_shipped_config_loads_and_validates_by_name(name):
    path = config_path(name)
    assert path.is_file() and path.name == f"{name}.yaml"
    assert config_path(f"{name}.yaml") == path
    cfg = resolve_config(path)
    assert isinstance(cfg, TrainConfig) and cfg.model and cfg.epochs >= 1
    assert description(path), f"{name}.yaml has no leading comment saying what it is for"


def test_train_takes_a_config_by_name(trained, tmp_path):
    assert (
        main(
            [
                "train",
                "-c",
                "cifar10_resnet110_nlsam",
                "--data",
                "builtin",
                "--lr",
                "0.05",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    (cfg,) = trained
    assert (cfg.model, cfg.attention, cfg.epochs, cfg.milestones) == ("resnet110", "nlsam", 164, [82, 123])
    assert (cfg.data, cfg.lr) == ("builtin", 0.05)  # the flags override the config


@pytest.mark.parametrize("name", list_studies())
def test_every_shipped_study_parses_by_name(name, tmp_path, capsys):
    assert study_path(name).is_file() and study_path(f"{name}.yaml") == study_path(name)
    assert description(study_path(name)), f"studies/{name}.yaml has no leading comment saying what it asks"
    # the data is the one thing a dry run looks for: the built-in set stands in for the files, and
    # where the grid names CIFAR, download=true lets it be absent (a dry run downloads nothing)
    argv = ["study", name, "--dry-run", "--set", "data=builtin", "--set", "download=true", "--out", str(tmp_path)]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "attention=" in out or "seed=" in out, out


@pytest.mark.parametrize(
    "argv, kind, names",
    [
        (["train", "-c", "cifar10_resnet21_nlsam"], "config", list_configs),
        (["train", "-c", "cifar10_resnet21_nlsam.yaml"], "config", list_configs),
        (["study", "table9_depth", "--dry-run"], "study", list_studies),
    ],
)
def test_an_unknown_name_is_one_line_listing_the_valid_names(argv, kind, names, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _one_line_error(capsys, argv)
    wrong = argv[2 if argv[0] == "train" else 1].removesuffix(".yaml")
    assert f"error: unknown {kind} {wrong!r}" in err and "nlsam list configs" in err
    assert all(name in err for name in names())
    assert list(tmp_path.iterdir()) == []  # refused before any work


def test_an_old_repository_path_points_to_the_name(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _one_line_error(capsys, ["study", "configs/studies/table5_depth.yaml", "--dry-run"])
    assert "study file not found: configs/studies/table5_depth.yaml" in err and "`nlsam study table5_depth`" in err
    err = _one_line_error(capsys, ["train", "-c", "configs/cifar10_resnet20_fast.yaml"])
    assert "config file not found" in err and "`nlsam train -c cifar10_resnet20_fast`" in err
    err = _one_line_error(capsys, ["train", "-c", "mine/recipe.yaml"])
    assert "config file not found: mine/recipe.yaml" in err and "nlsam list configs" in err
    err = _one_line_error(capsys, ["train", "-c", ""])
    assert "empty config name" in err


def test_a_path_still_works_and_an_existing_file_wins_over_a_name(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "cifar10_resnet20_fast.yaml"  # the name of a shipped config, in the current folder
    mine.write_text(yaml.safe_dump(dict(TINY, lr=0.05)))
    assert config_path("cifar10_resnet20_fast.yaml") == Path("cifar10_resnet20_fast.yaml")
    assert config_path("cifar10_resnet20_fast") != Path("cifar10_resnet20_fast.yaml")  # no file of that name
    assert config_path(mine) == mine
    assert main(["train", "-c", str(mine), "--out", str(tmp_path / "run")]) == 0
    assert main(["train", "-c", "cifar10_resnet20_fast.yaml", "--out", str(tmp_path / "run")]) == 0
    assert [(c.data, c.lr) for c in trained] == [(TINY["data"], 0.05)] * 2

    study = tmp_path / "table5_depth.yaml"
    study.write_text(yaml.safe_dump(dict(base=TINY, grid=dict(attention=[None, "nlsam"]), seeds=[0])))
    assert study_path("table5_depth.yaml") == Path("table5_depth.yaml")
    capsys.readouterr()
    assert main(["study", "table5_depth.yaml", "--dry-run", "--out", str(tmp_path / "s")]) == 0
    assert "2 to start" in capsys.readouterr().out  # the local two-run study, not the shipped 24


def test_list_configs_names_each_file_with_its_description(capsys):
    assert main(["list", "configs"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "configs (nlsam train -c NAME):"
    assert "studies (nlsam study NAME):" in lines
    split = lines.index("studies (nlsam study NAME):")
    assert [line.split()[0] for line in lines[1:split]] == list_configs()
    assert [line.split()[0] for line in lines[split + 1 :]] == list_studies()
    for line, name in zip(lines[1:split], list_configs()):
        assert line.startswith(f"  {name} ") and line.endswith(description(config_path(name)))
    for line, name in zip(lines[split + 1 :], list_studies()):
        assert line.startswith(f"  {name} ") and line.endswith(description(study_path(name)))
    assert "  table5_depth" in out and "Table 5" in out
    assert main(["list"]) == 0  # every list, the configs among them
    everything = capsys.readouterr().out
    assert "models:" in everything and out in everything


def test_description_is_the_first_line_of_the_leading_comment(tmp_path):
    commented = tmp_path / "a.yaml"
    commented.write_text("# What it is for: the rest,\n# more.\nepochs: 1\n")
    assert description(commented) == "What it is for: the rest"
    bare = tmp_path / "b.yaml"
    bare.write_text("epochs: 1  # not a leading comment\n")
    assert description(bare) == ""


def test_the_package_data_holds_every_config_and_study():
    # read from the installed package, as a wheel's user reads them
    shipped = importlib.resources.files("nlsam.configs")
    files = {item.name for item in shipped.iterdir() if item.is_file()}
    studies = {item.name for item in (shipped / "studies").iterdir() if item.is_file()}
    assert {f"{name}.yaml" for name in list_configs()} <= files
    assert {f"{name}.yaml" for name in list_studies()} == {n for n in studies if n.endswith(".yaml")}
    for name in list_studies():
        assert yaml.safe_load((shipped / "studies" / f"{name}.yaml").read_text(encoding="utf-8"))["base"]


def test_pyproject_puts_every_shipped_file_in_the_wheel():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("needs the repository's pyproject.toml")
    globs = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]["nlsam.configs"]
    folder = ROOT / "src" / "nlsam" / "configs"
    data = {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts
    }
    assert data and all(any(Path(f).match(g) and f.count("/") == g.count("/") for g in globs) for f in data), globs
    assert not (ROOT / "configs").exists(), "the configs live in src/nlsam/configs/ only"
