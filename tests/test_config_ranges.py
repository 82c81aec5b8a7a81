"""Every numeric option has its valid range, declared once and checked before any work; YAML
values and files are read without aliases, within bounds, and quoted short in messages."""

import collections
import dataclasses
import math
import typing

import pytest
import yaml

import nlsam
from nlsam._ranges import Range, short_repr
from nlsam.cli import build_parser, main
from nlsam.engine import TrainConfig
from nlsam.engine.config import MAX_YAML_BYTES, load_yaml, resolve_config, save_yaml


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLSAM_CACHE_DIR", str(tmp_path / "cache"))


def _one_line_error(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 2, argv
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err[:2000]
    assert len(err) < 1000, f"{len(err)} characters: {err[:300]}..."
    return err.strip()


def _api_error(values):
    with pytest.raises(ValueError) as info:
        TrainConfig.from_dict(values)
    return str(info.value)


# ---------------------------------------------------------------------------------- item 1
# (flags, the same settings as config values, a fragment of the message)
BAD_SETTINGS = [
    (["--grad-clip", "-1"], dict(grad_clip=-1), "grad_clip must be a finite number > 0"),
    (["--grad-clip", "0"], dict(grad_clip=0), "none: no clipping"),
    (["--warmup-lr", "-1"], dict(warmup_lr=-1), "warmup_lr must be a finite number > 0"),
    (["--momentum", "5"], dict(momentum=5), "momentum must be a finite number in [0, 1)"),
    (["--momentum", "1"], dict(momentum=1.0), "momentum must be a finite number in [0, 1)"),
    (
        ["--warmup-epochs", "5", "--epochs", "1"],
        dict(warmup_epochs=5, epochs=1),
        "warmup_epochs (5) must be fewer than epochs (1)",
    ),
    (["--warmup-epochs", "3", "--epochs", "3"], dict(warmup_epochs=3, epochs=3), "never trains at the peak lr"),
    (["--lr", "inf"], dict(lr=float("inf")), "lr must be a finite number > 0, got inf"),
    (["--lr", "nan"], dict(lr="nan"), "lr must be a finite number > 0, got nan"),
    (["--lr", "1e999"], dict(lr="1e999"), "lr must be a finite number > 0, got inf"),
    (["--gamma", "nan"], dict(gamma=float("nan")), "gamma must be a finite number in (0, 1]"),
    (["--gamma", "2"], dict(gamma=2), "gamma must be a finite number in (0, 1]"),
    (["--weight-decay", "-1"], dict(weight_decay=-1), "weight_decay must be a finite number >= 0"),
    (["--weight-decay", "inf"], dict(weight_decay=float("inf")), "weight_decay must be a finite number >= 0"),
    (["--label-smoothing", "1"], dict(label_smoothing=1), "label_smoothing must be a finite number in [0, 1)"),
    (
        ["--epochs", "99999999999999999999999"],
        dict(epochs=99999999999999999999999),
        "epochs must be an integer in 1..10000 (the paper's longest schedule is 164 epochs",
    ),
    (["--epochs", "0"], dict(epochs=0), "epochs must be an integer in 1..10000, got 0"),
    (["--batch-size", "1000000"], dict(batch_size=10**6), "batch_size must be an integer in 1..65536"),
    (["--eval-batch-size", "0"], dict(eval_batch_size=0), "eval_batch_size must be an integer in 1..65536"),
    (["--image-size", "100000"], dict(image_size=100000), "image_size must be an integer in 1..4096"),
    (["--workers", "100000"], dict(num_workers=100000), "num_workers must be an integer in 0..256"),
    (["--log-every", "0"], dict(log_every=0), "log_every must be an integer in 1..1,000,000,000"),
    (["--seed", "-1"], dict(seed=-1), "seed must be an integer in 0..4,294,967,295"),
    (["--seed", "99999999999999999999999"], dict(seed=99999999999999999999999), "seed must be an integer"),
    (
        ["--scheduler", "step", "--milestones", "0"],
        dict(scheduler="step", milestones=[0]),
        "each of milestones must be an integer in 1..9999",
    ),
    (
        ["--scheduler", "step", "--milestones", "3", "9", "--epochs", "6"],
        dict(scheduler="step", milestones=[3, 9], epochs=6),
        "milestones [9] are not before the last epoch (6 epochs)",
    ),
    (["--data", ""], dict(data=""), "data must name a dataset"),
    (["--data", "  "], dict(data="  "), "for the current directory write ."),
]


@pytest.mark.parametrize("flags, values, fragment", BAD_SETTINGS, ids=[" ".join(f) for f, _, _ in BAD_SETTINGS])
def test_a_setting_out_of_range_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, flags, values, fragment):
    import nlsam.data

    monkeypatch.setattr(nlsam.data, "build_data", lambda *a, **k: pytest.fail("data loaded for a bad setting"))
    err = _one_line_error(capsys, ["train", *flags, "--out", str(tmp_path / "run")])
    assert fragment in err
    message = _api_error(values)
    assert fragment in message
    assert err == f"nlsam train: error: {message}"  # the CLI and the Python API say the same
    assert not (tmp_path / "run").exists()


def _numeric(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) is list:
        hint = typing.get_args(hint)[0]
    return hint if hint in (int, float) else None


def test_every_numeric_field_declares_its_range_once():
    hints = typing.get_type_hints(TrainConfig)
    numeric = [f for f in dataclasses.fields(TrainConfig) if _numeric(hints[f.name])]
    assert {f.name for f in numeric} >= {"epochs", "batch_size", "lr", "momentum", "grad_clip", "warmup_lr", "seed"}
    for f in numeric:
        valid = f.metadata.get("valid")
        assert isinstance(valid, Range), f"{f.name} has no declared range"
        assert valid.integer == (_numeric(hints[f.name]) is int), f.name
        if valid.integer:
            assert valid.high is not None, f"{f.name}: an integer field needs an upper bound"
        # the default is in its own range
        default = TrainConfig().to_dict()[f.name]
        for value in default if isinstance(default, list) else [default]:
            assert value is None or valid.contains(value), f.name


@pytest.mark.parametrize(
    "name", [f.name for f in dataclasses.fields(TrainConfig) if _numeric(typing.get_type_hints(TrainConfig)[f.name])]
)
def test_validate_checks_each_field_from_its_declaration(name):
    hints = typing.get_type_hints(TrainConfig)
    valid = TrainConfig.__dataclass_fields__[name].metadata["valid"]
    kind = _numeric(hints[name])
    is_list = typing.get_origin(hints[name]) is list
    bad = [float("inf"), float("nan"), float("-inf")] if kind is float else []
    if valid.high is not None:
        bad.append(valid.high + 1 if kind is int else valid.high * 2 + 1)
    if valid.low is not None:
        bad.append(valid.low - 1)
    for value in bad:
        with pytest.raises(ValueError, match=rf"^(each of )?{name} must be"):
            TrainConfig(**{name: [value] if is_list else value}).validate()
    if kind is int:
        with pytest.raises(ValueError, match=name):
            TrainConfig(**{name: [True] if is_list else True}).validate()


def test_help_shows_the_ranges():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    text = " ".join(train.format_help().split())
    for fragment in (
        "training epochs; valid: 1..10000",
        "SGD momentum; valid: [0, 1)",
        "peak learning rate; valid: > 0",
        "valid: > 0 or none",
        "valid: (0, 1]",
        "valid: 0..256",
    ):
        assert fragment in text, fragment


def test_an_optional_number_can_be_unset_by_a_flag(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("grad_clip: 2.0\nimage_size: 64\n")
    args = build_parser().parse_args(["train", "-c", str(config), "--grad-clip", "none", "--image-size", "None"])
    assert (args.grad_clip, args.image_size) == (None, None)
    cfg = resolve_config(config, {"grad_clip": args.grad_clip, "image_size": args.image_size})
    assert (cfg.grad_clip, cfg.image_size) == (None, None)


def test_valid_edges_are_accepted():
    TrainConfig(
        epochs=10_000,
        momentum=0.0,
        label_smoothing=0.0,
        gamma=1.0,
        warmup_epochs=9.5,
        seed=2**32 - 1,
        num_workers=0,
        scheduler="step",
        milestones=[1, 9_999],
        grad_clip=1e-6,
    ).validate()
    TrainConfig.from_dict(dict(epochs=2, warmup_epochs=1.5, lr="1e-4", warmup_lr=1e-5))


BAD_MODEL_OPTIONS = [
    # (attention, option, fragment)
    ("nlsam", "nlsam_reduction=100000", "nlsam_reduction at stage 2 must be an integer in 1..64"),
    ("nlsam", "nlsam_reduction={2: 8, 3: 17}", "nlsam_reduction at stage 3 must be an integer in 1..16"),
    ("nlsam", "nlsam_pool=-1", "nlsam_pool at stage 2 must be an integer >= 0 (0 or 1 means no pooling)"),
    ("nlsam", "nlsam_pool=true", "nlsam_pool at stage 2 must be an integer >= 0"),
    ("se", "channel_reduction=1000", "se_reduction at stage 1 must be an integer in 1..16"),
    ("ge", "ge_reduction=17", "ge_reduction at stage 1 must be an integer in 1..16"),
    ("cbam", "channel_reduction=17", "cbam_channel_reduction at stage 1 must be an integer in 1..16"),
    ("cbam", "cbam_spatial_kernel_size=4", "cbam_spatial_kernel_size at stage 1 must be an integer in 1..63 (odd"),
    ("bam", "bam_dilation=0", "bam_dilation at stage 1 must be an integer in 1..64"),
    ("bam", "bam_reduction=1000", "bam_reduction at stage 1 must be an integer in 1..16"),
    ("nlsam", "nlsam_stages=3", "nlsam_stages must be a non-empty list of this network's stages [1, 2, 3]"),
    ("nlsam", "nlsam_stages=[]", "nlsam_stages must be a non-empty list"),
    ("nlsam", "nlsam_stages=[3, 3]", "nlsam_stages names a stage more than once"),
    ("nlsam", "nlsam_stages=[true]", "nlsam_stages [True] out of range for this network"),
    ("nlsam", "drop_rate=nan", "drop_rate must be a finite number in [0, 1)"),
    ("nlsam", "drop_rate=.nan", "drop_rate must be a finite number in [0, 1)"),
    ("nlsam", "num_classes=1000000000", "num_classes must be an integer in 0..100,000"),
    ("nlsam", "stem_width=0", "stem_width must be an integer in 1..4096"),
    ("nlsam", "in_chans=0", "in_chans must be an integer in 1..1024"),
    ("none", "input_size=100000", "input_size must be an integer in 1..4096"),
    ("none", "input_size=2.5", "input_size must be a positive int or a pair"),
    ("none", "zero_init_residual=5", "zero_init_residual must be true or false"),
]


@pytest.mark.parametrize("attention, option, fragment", BAD_MODEL_OPTIONS, ids=[o for _, o, _ in BAD_MODEL_OPTIONS])
def test_a_model_option_out_of_range_is_one_line(tmp_path, capsys, monkeypatch, attention, option, fragment):
    import nlsam.data

    monkeypatch.setattr(nlsam.data, "build_data", lambda *a, **k: pytest.fail("data loaded for a bad option"))
    err = _one_line_error(
        capsys, ["train", "--attention", attention, "--model-option", option, "--out", str(tmp_path / "run")]
    )
    assert fragment in err
    key, value = option.split("=", 1)
    with pytest.raises(ValueError) as info:
        nlsam.create_model(
            "resnet20", attention=None if attention == "none" else attention, **{key: yaml.safe_load(value)}
        )
    assert fragment in str(info.value)


def test_reduction_is_refused_where_it_would_clamp_and_accepted_to_its_edge():
    from nlsam.attention.se import _reduced_channels

    module = nlsam.NLSAM((8, 8), pool=2, reduction=16)  # N = 16 positions, one unit
    assert module.fc1.out_features == 1
    with pytest.raises(ValueError, match=r"reduction must be an integer in 1\.\.16 .*N = 16 positions .*got 17"):
        nlsam.NLSAM((8, 8), pool=2, reduction=17)
    with pytest.raises(ValueError, match=r"1\.\.16"):
        nlsam.SqueezeExcite(16, reduction=32)
    assert _reduced_channels(16, 16) == 1
    model = nlsam.create_model("resnet20", attention="se+nlsam", nlsam_reduction={2: 64, 3: 16}, channel_reduction=16)
    widths = sorted({m.fc1.out_features for m in model.modules() if isinstance(m, nlsam.NLSAM)})
    assert widths == [1]


def test_stage_messages_quote_a_value_short():
    with pytest.raises(ValueError) as info:
        nlsam.create_model("resnet20", attention="nlsam", nlsam_stages=list(range(100_000)))
    assert len(str(info.value)) < 300 and "list of 99,997 items" in str(info.value)


# ---------------------------------------------------------------------------------- item 2
def _bomb(levels: int, width: int = 9) -> str:
    lines = [f"  a0: &a0 [{', '.join(['1'] * width)}]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines)


def test_an_unfinished_model_option_is_one_line(capsys, tmp_path):
    err = _one_line_error(capsys, ["train", "--model-option", "nlsam_stages=[", "--out", str(tmp_path / "run")])
    assert "argument --model-option" in err and "'['" in err and "is not valid YAML" in err and "line 1" in err
    err = _one_line_error(capsys, ["study", str(tmp_path / "s.yaml"), "--set", "model_options.nlsam_pool={"])
    assert "argument --set" in err and "is not valid YAML" in err


def test_yaml_aliases_are_refused_in_configs_studies_and_options(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("x:\n" + _bomb(9) + "\n")
    err = _one_line_error(capsys, ["train", "-c", str(bomb), "--out", str(tmp_path / "run")])
    assert f"config file {bomb} is not valid YAML: YAML anchors and aliases (&a0) are not accepted" in err
    # nested in a network option: before, a one-line error that quoted every value of the expansion
    nested = tmp_path / "nested.yaml"
    nested.write_text("model_options:\n  nlsam_stages: [*a4]\nanchors:\n" + _bomb(5) + "\n")
    err = _one_line_error(capsys, ["train", "-c", str(nested), "--out", str(tmp_path / "run")])
    assert "anchors and aliases" in err and "line 2" in err
    err = _one_line_error(capsys, ["study", str(bomb)])
    assert f"config file {bomb} is not valid YAML" in err
    err = _one_line_error(
        capsys, ["train", "--model-option", "nlsam_stages=[&a [3], *a]", "--out", str(tmp_path / "r")]
    )
    assert "anchors and aliases (&a) are not accepted" in err
    with pytest.raises(ValueError, match="anchors and aliases"):
        load_yaml(bomb)


def test_deep_nesting_and_large_files_are_refused(tmp_path, capsys):
    deep = tmp_path / "deep.yaml"
    deep.write_text("model_options: {nlsam_stages: " + "[" * 5000 + "]" * 5000 + "}\n")
    err = _one_line_error(capsys, ["train", "-c", str(deep), "--out", str(tmp_path / "run")])
    assert "nested more than 32 deep" in err
    err = _one_line_error(
        capsys, ["train", "--model-option", "nlsam_stages=" + "[" * 5000, "--out", str(tmp_path / "r")]
    )
    assert "nested more than 32 deep" in err
    large = tmp_path / "large.yaml"
    large.write_text("epochs: 1\n" + "# padding\n" * (MAX_YAML_BYTES // 10 + 1))
    err = _one_line_error(capsys, ["train", "-c", str(large), "--out", str(tmp_path / "run")])
    assert f"config file {large} is larger than 64 KiB" in err
    huge_int = tmp_path / "int.yaml"
    huge_int.write_text("epochs: " + "9" * 5000 + "\n")
    assert "a number has more than 4300 digits" in _one_line_error(capsys, ["train", "-c", str(huge_int)])


def test_a_long_value_is_quoted_short(tmp_path, capsys):
    config = tmp_path / "long.yaml"
    config.write_text(
        "model_options: {nlsam_stages: ["
        + ", ".join(["7"] * 10_000)
        + "]}\nepochs: ["
        + ", ".join(["1"] * 5000)
        + "]\n"
    )
    err = _one_line_error(capsys, ["train", "-c", str(config), "--out", str(tmp_path / "run")])
    assert "epochs in" in err and "list of 5,000 items" in err
    config.write_text("model_options: {nlsam_stages: [" + ", ".join(["7"] * 10_000) + "]}\n")
    err = _one_line_error(capsys, ["train", "-c", str(config), "--out", str(tmp_path / "run")])
    assert "nlsam_stages [7, 7" in err and "list of 10,000 items" in err
    config.write_text("attention: " + "x" * 50_000 + "\n")
    err = _one_line_error(capsys, ["train", "-c", str(config), "--out", str(tmp_path / "run")])
    assert "unknown attention 'xxxx" in err and "str of 50,000 characters" in err
    err = _one_line_error(
        capsys, ["train", "--model-option", "nlsam_pool=" + "9" * 20_000, "--out", str(tmp_path / "r")]
    )
    assert "at most 10,000 are accepted" in err


def test_written_configs_hold_no_aliases(tmp_path):
    shared = [2, 3]
    save_yaml(dict(milestones=shared, model_options=dict(nlsam_stages=shared)), tmp_path / "c.yaml")
    assert "&" not in (tmp_path / "c.yaml").read_text()
    assert load_yaml(tmp_path / "c.yaml") == dict(milestones=[2, 3], model_options=dict(nlsam_stages=[2, 3]))


def test_short_repr():
    assert short_repr([1, 2]) == "[1, 2]"
    assert short_repr("x" * 10) == "'xxxxxxxxxx'"
    text = short_repr(list(range(10**6)))
    assert len(text) < 100 and text.endswith("... (list of 1,000,000 items)")
    assert len(short_repr(10**5000)) < 100
    assert len(short_repr({i: [i] * 1000 for i in range(1000)})) < 100


def test_short_repr_quotes_sets_and_container_subclasses_as_repr_does():
    point = collections.namedtuple("Point", "x y")
    for value in (set(), frozenset(), frozenset({1}), {1}, point(1, 2), collections.OrderedDict(a=1), (1,), {}):
        assert short_repr(value) == repr(value)
    text = short_repr(frozenset(range(10**6)))
    assert text.startswith("frozenset({0, 1, ") and text.endswith("... (frozenset of 1,000,000 items)")


# ---------------------------------------------------------------------------------- item 3
def test_a_config_or_study_file_that_is_not_text_is_named(tmp_path, capsys):
    binary = tmp_path / "config.yaml"
    binary.write_bytes(b"epochs: 1\n\xff\xfe\x00garbage")
    err = _one_line_error(capsys, ["train", "-c", str(binary), "--out", str(tmp_path / "run")])
    assert f"config file {binary} is not UTF-8 text" in err
    err = _one_line_error(capsys, ["study", str(binary)])
    assert f"config file {binary} is not UTF-8 text" in err
    with pytest.raises(ValueError, match="not UTF-8 text"):
        resolve_config(binary)


def test_a_directory_given_as_config_is_named(tmp_path, capsys):
    err = _one_line_error(capsys, ["train", "-c", str(tmp_path), "--out", str(tmp_path / "run")])
    assert f"config file {tmp_path} is a directory" in err and "not found" not in err
    err = _one_line_error(capsys, ["study", str(tmp_path)])
    assert "is a directory" in err


def test_a_config_that_is_not_a_mapping_says_what_it_holds(tmp_path, capsys):
    config = tmp_path / "list.yaml"
    config.write_text("- epochs: 1\n")
    err = _one_line_error(capsys, ["train", "-c", str(config)])
    assert "must hold a mapping of option: value, got list" in err


def test_shipped_configs_stay_in_range():
    from nlsam.configs import config_path, list_configs

    for name in list_configs():
        resolve_config(config_path(name))
    assert math.isfinite(TrainConfig().lr)
