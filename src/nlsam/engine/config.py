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

from .._io import atomic_write_bytes

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("step", "cosine", "linear", "onecycle", "constant")
AMP_MODES = ("auto", "off", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


def _option(default: Any = None, help: str = "", *, flag: Optional[str] = None, factory: Any = None) -> Any:
    """A :class:`TrainConfig` field with its command-line help (``flag``: a name other than
    ``--FIELD-NAME``); ``nlsam train``'s flags are generated from these fields."""
    metadata = dict(help=help, flag=flag)
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything a training run depends on. Defaults are those of plain ``nlsam train``: a
    small NL-SAM ResNet on the built-in dataset, done in about two minutes on 2 CPU cores.
    Each field is a YAML key and a flag of ``nlsam train`` (``lr`` -> ``--lr``)."""

    # data
    data: str = _option("builtin", "builtin (or builtin:N_TRAIN[:N_TEST[:DATA_SEED]], e.g. builtin:20000:4000), locate[:...], "
                        "cifar10, cifar100, or PATH to an ImageFolder directory or .zip")
    data_dir: Optional[str] = _option(None, "where cifar10/cifar100 live or are downloaded to "
                                      "(default $NLSAM_DATA_DIR, else ./data)")
    download: bool = _option(False, "download CIFAR if it is missing")
    image_size: Optional[int] = _option(None, "train at this square input size (images are resized)")
    num_workers: int = _option(2, "data loader processes for large-image folders (0: load in the main process)",
                               flag="--workers")
    cache_dir: Optional[str] = _option(None, "folder of the decoded-image cache (default $NLSAM_CACHE_DIR, "
                                       "else $XDG_CACHE_HOME/nlsam, else ~/.cache/nlsam)")
    # model
    model: str = _option("resnet20", "network name (`nlsam list models`)")
    attention: Optional[str] = _option("nlsam", "attention composition (`nlsam list attention`) or none")
    imports: List[str] = _option(help="modules to import first: your own attention modules registered with "
                                 "nlsam.attention.register_attention", flag="--import", factory=list)
    init_from: Optional[str] = _option(None, "start from these weights: an nlsam run directory or checkpoint, a "
                                       "state-dict file, torchvision:ARCH[.WEIGHTS] or timm:ARCH[.TAG]; attention "
                                       "keeps its init (--model-option attention_init=identity: start as that network)")
    model_options: Dict[str, Any] = _option(help="network option KEY=VALUE, e.g. nlsam_pool=4 or "
                                            "nlsam_stages=[3] (repeat for more)", flag="--model-option", factory=dict)
    # optimisation
    epochs: int = _option(6, "training epochs")
    batch_size: int = _option(128, "training batch size (per process)")
    eval_batch_size: Optional[int] = _option(None, "test batch size (default: --batch-size)")
    optimizer: str = _option("sgd", "optimizer")
    lr: float = _option(0.1, "peak learning rate")
    momentum: float = _option(0.9, "SGD momentum")
    nesterov: bool = _option(False, "Nesterov momentum")
    weight_decay: float = _option(5e-4, "weight decay")
    scheduler: str = _option("cosine", "learning-rate schedule")
    milestones: List[int] = _option(help="epochs where 'step' multiplies the lr by --gamma", factory=list)
    gamma: float = _option(0.1, "factor of the 'step' schedule at each milestone")
    warmup_epochs: float = _option(0.0, "warm-up epochs")
    warmup_lr: Optional[float] = _option(None, "constant lr during the warm-up (default: a ramp from 0)")
    label_smoothing: float = _option(0.0, "label smoothing of the cross-entropy")
    grad_clip: Optional[float] = _option(None, "clip the gradient norm to this value")
    # reproducibility and hardware
    seed: int = _option(0, "random seed (initialisation, data order, augmentation)")
    deterministic: bool = _option(False, "deterministic algorithms (slower)")
    device: str = _option("auto", "device (auto: CUDA when present)")
    amp: str = _option("auto", "mixed precision: auto (bf16/fp16 on CUDA, bf16 on CPUs with native bf16, else off), off, bf16, fp16")
    channels_last: Optional[bool] = _option(None, "channels-last memory format (default: on)")
    compile: bool = _option(False, "torch.compile the model")
    # output
    out: Optional[str] = _option(None, "run directory (default runs/DATA-MODEL-ATTENTION-seedN)")
    resume: bool = _option(False, "continue the run in --out from its last.pt")
    tensorboard: bool = _option(False, "also log to RUN_DIR/tensorboard")
    log_every: int = _option(50, "print a progress line every N steps when not on a terminal")

    def validate(self) -> "TrainConfig":
        """Check the values that can be checked before anything runs."""
        for name, valid in CHOICES.items():
            _choice(name, getattr(self, name), valid)
        for name in ("epochs", "batch_size", "num_workers", "log_every", "eval_batch_size", "image_size"):
            value = getattr(self, name)
            if value is None and name in ("eval_batch_size", "image_size"):
                continue
            low = 0 if name == "num_workers" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                kind = "a non-negative integer (0: load in the main process)" if low == 0 else "a positive integer"
                raise ValueError(f"{name} must be {kind}, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.scheduler == "step" and not self.milestones:
            raise ValueError("scheduler 'step' needs milestones, e.g. milestones: [82, 123]")
        if any(not isinstance(m, int) or m < 1 for m in self.milestones):
            raise ValueError(f"milestones must be positive epoch numbers, got {self.milestones!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if not isinstance(self.imports, list) or not all(isinstance(m, str) for m in self.imports):
            raise ValueError(f"imports must be a list of module names, got {self.imports!r}")
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


#: The valid values of the fields that take one of a few names.
CHOICES = dict(optimizer=OPTIMIZERS, scheduler=SCHEDULERS, amp=AMP_MODES, device=DEVICES)


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
    (PyYAML), so numeric strings are accepted for float fields; integers are accepted too. YAML
    1.1 also reads ``off`` / ``on`` (and ``no`` / ``yes``) as booleans: a string field reads them
    back as ``"off"`` / ``"on"``, so ``amp: off`` and ``--set amp=off`` mean what they say.
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
    elif hint is str and isinstance(value, bool):
        return "on" if value else "off"
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
    config_file: Optional[Union[str, Path]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
    base: Optional[Mapping[str, Any]] = None,
) -> TrainConfig:
    """Defaults, then ``base`` (a resumed run's saved config), then the YAML file, then
    ``overrides`` (command-line flags that were given)."""
    values: Dict[str, Any] = {}
    if base is not None:
        values.update(_typed_values(base, "the saved config"))
    if config_file is not None:
        values.update(_typed_values(load_yaml(config_file), str(config_file)))
    values.update(_typed_values(dict(overrides or {}), "options"))
    return TrainConfig(**values).validate()  # each part was checked and typed above


def save_yaml(values: Mapping[str, Any], path: Union[str, Path]) -> None:
    atomic_write_bytes(Path(path), yaml.safe_dump(dict(values), sort_keys=False).encode())
