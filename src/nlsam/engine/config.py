"""Training configuration: one dataclass, loaded from YAML and command-line flags.

Every key of a YAML config is a field here; an unknown key is rejected with the list of valid
ones. The resolved configuration is written to ``RUN_DIR/config.yaml`` and into every
checkpoint, so a run can be resumed, evaluated and rebuilt from its directory alone.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import yaml

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("step", "cosine", "linear", "onecycle", "constant")
AMP_MODES = ("auto", "off", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """Everything a training run depends on. Defaults are those of plain ``nlsam train``: a
    small NL-SAM ResNet on the built-in dataset, done in about two minutes on 2 CPU cores."""

    # data
    data: str = "builtin"
    data_dir: Optional[str] = None
    download: bool = False
    image_size: Optional[int] = None
    num_workers: int = 2
    # model
    model: str = "resnet20"
    attention: Optional[str] = "nlsam"
    model_options: Dict[str, Any] = field(default_factory=dict)
    # optimisation
    epochs: int = 6
    batch_size: int = 128
    eval_batch_size: Optional[int] = None
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    scheduler: str = "cosine"
    milestones: List[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    warmup_lr: Optional[float] = None
    label_smoothing: float = 0.0
    grad_clip: Optional[float] = None
    # reproducibility and hardware
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    amp: str = "auto"
    channels_last: Optional[bool] = None
    compile: bool = False
    # output
    out: Optional[str] = None
    resume: bool = False
    tensorboard: bool = False
    log_every: int = 50

    def validate(self) -> "TrainConfig":
        """Check the values that can be checked before anything runs."""
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("scheduler", self.scheduler, SCHEDULERS)
        _choice("amp", self.amp, AMP_MODES)
        _choice("device", self.device, DEVICES)
        for name in ("epochs", "batch_size", "num_workers", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "num_workers" else 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.scheduler == "step" and not self.milestones:
            raise ValueError("scheduler 'step' needs milestones, e.g. milestones: [82, 123]")
        if any(not isinstance(m, int) or m < 1 for m in self.milestones):
            raise ValueError(f"milestones must be positive epoch numbers, got {self.milestones!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if not isinstance(self.model_options, dict):
            raise ValueError(f"model_options must be a mapping, got {self.model_options!r}")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "config") -> "TrainConfig":
        return cls(**_typed_values(values, source)).validate()


def config_keys() -> List[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def check_keys(values: Mapping[str, Any], source: str = "config") -> None:
    """Reject keys that are not :class:`TrainConfig` fields, naming the valid ones."""
    valid = config_keys()
    for key in values:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown key {key!r} in {source}{hint}; valid keys: {', '.join(valid)}")


def _typed_values(values: Mapping[str, Any], source: str) -> Dict[str, Any]:
    """``values`` with known keys only, each converted to its field's scalar type."""
    check_keys(values, source)
    hints = typing.get_type_hints(TrainConfig)
    return {key: _coerce(key, value, hints[key], source) for key, value in values.items()}


_SCALARS = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}


def _coerce(name: str, value: Any, hint: Any, source: str) -> Any:
    """``value`` as the scalar type of field ``name``, or one error naming the key and the type.

    Numbers written without a decimal point, such as ``1e-4``, are strings to YAML 1.1
    (PyYAML), so numeric strings are accepted for float fields; integers are accepted too.
    Lists and mappings are checked by :meth:`TrainConfig.validate`.
    """
    args = typing.get_args(hint)
    if typing.get_origin(hint) is Union and type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    if hint not in _SCALARS:
        return value
    if hint is float and not isinstance(value, bool):
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    elif isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ValueError(f"{name} in {source} must be {_SCALARS[hint]}, got {value!r}")


def _choice(name: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


def load_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a YAML mapping; missing files and non-mappings get one clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of option: value")
    return values


def resolve_config(
    config_file: Optional[Union[str, Path]] = None, overrides: Optional[Mapping[str, Any]] = None
) -> TrainConfig:
    """Defaults, then the YAML file, then ``overrides`` (command-line flags that were given)."""
    values: Dict[str, Any] = {}
    if config_file is not None:
        values.update(_typed_values(load_yaml(config_file), str(config_file)))
    values.update(_typed_values(dict(overrides or {}), "options"))
    return TrainConfig(**values).validate()  # each part was checked and typed above


def save_yaml(values: Mapping[str, Any], path: Union[str, Path]) -> None:
    from .checkpoint import atomic_write_bytes

    atomic_write_bytes(Path(path), yaml.safe_dump(dict(values), sort_keys=False).encode())
