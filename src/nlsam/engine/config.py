"""Training configuration: one dataclass, loaded from YAML and command-line flags.

Every key of a YAML config is a field here; an unknown key is rejected with the list of valid
ones. The resolved configuration is written to ``RUN_DIR/config.yaml`` and into every
checkpoint, so a run can be resumed, evaluated and rebuilt from its directory alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import yaml

from .._io import atomic_write_bytes
from .._ranges import Range, short_repr
from .._sizes import MAX_INPUT_PIXELS

__all__ = [
    "AMP_MODES",
    "CHOICES",
    "MAX_BATCH",
    "MAX_EPOCHS",
    "MAX_YAML_BYTES",
    "MAX_YAML_DEPTH",
    "TrainConfig",
    "config_keys",
    "load_yaml",
    "parse_yaml",
    "resolve_config",
    "save_yaml",
]

_OPTIMIZERS = ("sgd", "adamw")
_SCHEDULERS = ("step", "cosine", "linear", "onecycle", "constant")
AMP_MODES = ("auto", "off", "bf16", "fp16")
_DEVICES = ("auto", "cpu", "cuda")


def _option(
    default: Any = None,
    help: str = "",
    *,
    flag: Optional[str] = None,
    factory: Any = None,
    valid: Optional[Range] = None,
) -> Any:
    """A :class:`TrainConfig` field with its command-line help (``flag``: a name other than
    ``--FIELD-NAME``) and, for a number (or a list of numbers), its ``valid`` range: the one
    declaration :meth:`TrainConfig.validate` checks and ``nlsam train --help`` shows. ``nlsam
    train``'s flags are generated from these fields."""
    metadata = dict(help=help, flag=flag, valid=valid)
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


#: The longest training :class:`TrainConfig` accepts, in epochs (and so the largest milestone).
MAX_EPOCHS = 10_000
#: The largest batch (per process) :class:`TrainConfig` accepts.
MAX_BATCH = 65_536

_EPOCHS = Range(
    1, MAX_EPOCHS, integer=True, why_high="the paper's longest schedule is 164 epochs; a longer one is surely a typo"
)
_BATCH = Range(
    1, MAX_BATCH, integer=True, why="images per process and step", why_high="a larger batch does not fit in memory"
)
_POSITIVE = Range(0, None, low_open=True)


@dataclass
class TrainConfig:
    """Everything a training run depends on. Defaults are those of plain ``nlsam train``: a
    small NL-SAM ResNet on the built-in dataset, done in about two minutes on 2 CPU cores.
    Each field is a YAML key and a flag of ``nlsam train`` (``lr`` -> ``--lr``)."""

    # data
    data: str = _option(
        "builtin",
        "builtin (or builtin:N_TRAIN[:N_TEST[:DATA_SEED]], e.g. builtin:20000:4000), locate[:...], "
        "cifar10, cifar100, or PATH to an ImageFolder directory or .zip",
    )
    data_dir: Optional[str] = _option(
        None, "where cifar10/cifar100 live or are downloaded to (default $NLSAM_DATA_DIR, else ./data)"
    )
    download: bool = _option(False, "download CIFAR if it is missing")
    image_size: Optional[int] = _option(
        None,
        "train at this square input size (images are resized)",
        valid=Range(
            1,
            MAX_INPUT_PIXELS,
            integer=True,
            why_high=(
                "pixels a side; activations grow with its square: at 4096 a "
                "ResNet's first feature map alone is 1 GiB per image"
            ),
        ),
    )
    num_workers: int = _option(
        2,
        "data loader processes for large-image folders (0: load in the main process)",
        flag="--workers",
        valid=Range(
            0,
            256,
            integer=True,
            why="0: load in the main process",
            why_high="more processes than a machine has cores only cost memory",
        ),
    )
    cache_dir: Optional[str] = _option(
        None,
        "folder of the decoded-image cache (default $NLSAM_CACHE_DIR, else $XDG_CACHE_HOME/nlsam, else ~/.cache/nlsam)",
    )
    # model
    model: str = _option("resnet20", "network name (`nlsam list models`)")
    attention: Optional[str] = _option("nlsam", "attention composition (`nlsam list attention`) or none")
    imports: List[str] = _option(
        help="modules to import first: your own attention modules registered with nlsam.attention.register_attention",
        flag="--import",
        factory=list,
    )
    init_from: Optional[str] = _option(
        None,
        "start from these weights: an nlsam run directory or checkpoint, a "
        "state-dict file, torchvision:ARCH[.WEIGHTS] or timm:ARCH[.TAG]; attention "
        "keeps its init (--model-option attention_init=identity: start as that network)",
    )
    model_options: Dict[str, Any] = _option(
        help="network option KEY=VALUE, e.g. nlsam_pool=4 or nlsam_stages=[3] (repeat for more)",
        flag="--model-option",
        factory=dict,
    )
    # optimisation
    epochs: int = _option(6, "training epochs", valid=_EPOCHS)
    batch_size: int = _option(128, "training batch size (per process)", valid=_BATCH)
    eval_batch_size: Optional[int] = _option(None, "test batch size (default: --batch-size)", valid=_BATCH)
    optimizer: str = _option("sgd", "optimizer")
    lr: float = _option(0.1, "peak learning rate", valid=_POSITIVE)
    momentum: float = _option(
        0.9,
        "SGD momentum",
        valid=Range(
            0,
            1,
            high_open=True,
            why=("the share of the last update kept in the next; 1 or more never forgets and diverges"),
        ),
    )
    nesterov: bool = _option(False, "Nesterov momentum")
    weight_decay: float = _option(5e-4, "weight decay", valid=Range(0, None))
    scheduler: str = _option("cosine", "learning-rate schedule")
    milestones: List[int] = _option(
        help="epochs where 'step' multiplies the lr by --gamma",
        factory=list,
        valid=Range(1, MAX_EPOCHS - 1, integer=True, why="epoch numbers, each before the last epoch"),
    )
    gamma: float = _option(
        0.1,
        "factor of the 'step' schedule at each milestone",
        valid=Range(0, 1, low_open=True, why="a decay: each milestone multiplies the lr by it"),
    )
    warmup_epochs: float = _option(
        0.0, "warm-up epochs (fewer than --epochs)", valid=Range(0, MAX_EPOCHS, high_open=True, why="0: no warm-up")
    )
    warmup_lr: Optional[float] = _option(
        None, "constant lr during the warm-up (default: a ramp from 0)", valid=_POSITIVE
    )
    label_smoothing: float = _option(
        0.0,
        "label smoothing of the cross-entropy",
        valid=Range(0, 1, high_open=True, why="the share of the target spread over the other classes"),
    )
    grad_clip: Optional[float] = _option(
        None,
        "clip the gradient norm to this value (default: no clipping)",
        valid=Range(0, None, low_open=True, why=("the largest gradient norm; none: no clipping")),
    )
    # reproducibility and hardware
    seed: int = _option(
        0,
        "random seed (initialisation, data order, augmentation)",
        valid=Range(0, 2**32 - 1, integer=True, why="the seeds NumPy takes"),
    )
    deterministic: bool = _option(False, "deterministic algorithms (slower)")
    device: str = _option("auto", "device (auto: CUDA when present)")
    amp: str = _option(
        "auto", "mixed precision: auto (bf16/fp16 on CUDA, bf16 on CPUs with native bf16, else off), off, bf16, fp16"
    )
    channels_last: Optional[bool] = _option(None, "channels-last memory format (default: on)")
    compile: bool = _option(False, "torch.compile the model")
    # output
    out: Optional[str] = _option(None, "run directory (default runs/DATA-MODEL-ATTENTION-seedN)")
    resume: bool = _option(False, "continue the run in --out from its last.pt")
    tensorboard: bool = _option(False, "also log to RUN_DIR/tensorboard")
    log_every: int = _option(
        50,
        "print a progress line every N steps when not on a terminal",
        valid=Range(1, 10**9, integer=True, why_high="no epoch has more steps"),
    )

    def validate(self) -> "TrainConfig":
        """Check the values that can be checked before anything runs: each numeric field against
        the range its declaration gives (:func:`_option`), the names, and the settings that
        depend on each other. Raises one ``ValueError`` naming the field and what is valid."""
        for name, valid in CHOICES.items():
            _choice(name, getattr(self, name), valid)
        for f in dataclasses.fields(self):
            if f.metadata.get("valid") is not None:
                _check_range(f.name, getattr(self, f.name), f.metadata["valid"])
        if not isinstance(self.data, str) or not self.data.strip():
            raise ValueError(
                f"data must name a dataset (`nlsam list datasets`: builtin, locate, cifar10, "
                f"cifar100) or an ImageFolder directory or .zip; got {short_repr(self.data)} (for "
                "the current directory write .)"
            )
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs:g}) must be fewer than epochs ({self.epochs}): the lr "
                "reaches its peak (lr) only when the warm-up ends, so a warm-up as long as the run never "
                "trains at the peak lr"
            )
        if self.scheduler == "step" and not self.milestones:
            raise ValueError("scheduler 'step' needs milestones, e.g. milestones: [82, 123]")
        late = [m for m in self.milestones if m >= self.epochs]
        if late and self.scheduler == "step":
            raise ValueError(
                f"milestones {short_repr(late)} are not before the last epoch ({self.epochs} epochs): "
                "a milestone there never lowers the lr; valid milestones: 1.."
                f"{max(self.epochs - 1, 1)}"
            )
        if not isinstance(self.imports, list) or not all(isinstance(m, str) for m in self.imports):
            raise ValueError(f"imports must be a list of module names, got {short_repr(self.imports)}")
        if not isinstance(self.model_options, dict):
            raise ValueError(f"model_options must be a mapping, got {short_repr(self.model_options)}")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "config") -> "TrainConfig":
        return cls(**_typed_values(values, source)).validate()


def config_keys() -> List[str]:
    """The names of the :class:`TrainConfig` fields, in their order."""
    return [f.name for f in dataclasses.fields(TrainConfig)]


#: The valid values of the fields that take one of a few names.
CHOICES = dict(optimizer=_OPTIMIZERS, scheduler=_SCHEDULERS, amp=AMP_MODES, device=_DEVICES)


def _check_keys(values: Mapping[str, Any], source: str = "config") -> None:
    """Reject keys that are not :class:`TrainConfig` fields, naming the valid ones."""
    valid = config_keys()
    for key in values:
        if key not in valid:
            close = difflib.get_close_matches(str(key)[:100], valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown key {short_repr(key)} in {source}{hint}; valid keys: {', '.join(valid)}")


def _typed_values(values: Mapping[str, Any], source: str) -> Dict[str, Any]:
    """``values`` with known keys only, each converted to its field's scalar type."""
    _check_keys(values, source)
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
    raise ValueError(f"{name} in {source} must be {_SCALARS[hint]}, got {short_repr(value)}")


def _choice(name: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {short_repr(value)}; valid: {', '.join(valid)}")


@functools.lru_cache(maxsize=None)
def _field_hints() -> Dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _check_range(name: str, value: Any, valid: Range) -> None:
    """``value`` of field ``name`` in its declared range: ``None`` passes for an optional field,
    a list field is checked item by item."""
    hint = _field_hints()[name]
    if value is None and type(None) in typing.get_args(hint):
        return
    if typing.get_origin(hint) is list or isinstance(value, list):
        if not isinstance(value, list):
            raise ValueError(f"{name} must be a list of {valid.kind()}s in {valid.text()}, got {short_repr(value)}")
        for item in value:
            if not valid.contains(item):
                raise ValueError(valid.message(f"each of {name}", item))
        return
    valid.check(name, value)


#: The largest config or study file :func:`load_yaml` reads. Such a file is a few kilobytes (the
#: largest shipped one 2 KB), and PyYAML reads about 10 KB a second on a small CPU.
MAX_YAML_BYTES = 64 << 10
#: The deepest nesting of lists and mappings a YAML value may have (a config needs 3 or 4).
MAX_YAML_DEPTH = 32


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, without anchors and aliases and with bounded nesting.

    An alias repeats a value without writing it out, so a few lines can stand for billions of
    values (the "billion laughs"); nothing in a config needs one. Deep nesting would exhaust
    Python's recursion limit in the composer.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            sign = "*" if isinstance(event, yaml.AliasEvent) else "&"
            raise yaml.composer.ComposerError(
                None,
                None,
                f"YAML anchors and aliases ({sign}{str(event.anchor)[:40]}) are not accepted: write "
                "the value out in full",
                event.start_mark,
            )
        depth = getattr(self, "_depth", 0)
        if depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"lists and mappings nested more than {MAX_YAML_DEPTH} deep are not accepted",
                event.start_mark,
            )
        self._depth = depth + 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth


def _yaml_error_line(error: Exception) -> str:
    """One line for a YAML error (PyYAML's own message spans several lines, with an excerpt of
    the text): what was wrong and where."""
    if isinstance(error, yaml.MarkedYAMLError):
        problem = " ".join(str(error.problem or error.context or "invalid YAML").split())
        mark = error.problem_mark or error.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return problem + where
    return " ".join(str(error).split())[:200]


def parse_yaml(text: str) -> Any:
    """``text`` as YAML with :class:`_StrictLoader`; raises ``ValueError`` with one line (also for
    values Python cannot hold, such as an integer of more than 4300 digits)."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ValueError(_yaml_error_line(exc)) from None
    except (ValueError, OverflowError, RecursionError) as exc:
        if "4300" in str(exc):  # CPython's limit on int('...'), with advice for programmers
            raise ValueError("a number has more than 4300 digits") from None
        raise ValueError(" ".join(str(exc).split())[:200]) from None


def load_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a YAML mapping from a config (or study) file. A missing file, a directory, a file
    over :data:`MAX_YAML_BYTES`, one that is not UTF-8 text, invalid YAML (anchors and aliases
    included) and a non-mapping each get one line naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"config file {path} is a directory; give the YAML file itself")
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_YAML_BYTES:
        raise ValueError(
            f"config file {path} is larger than {MAX_YAML_BYTES >> 10} KiB; a config or study "
            "file is a few kilobytes of YAML"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"config file {path} is not UTF-8 text (byte {exc.start}: "
            f"{data[exc.start : exc.start + 1]!r}); give a YAML file"
        ) from None
    try:
        values = parse_yaml(text)
    except ValueError as exc:
        raise ValueError(f"config file {path} is not valid YAML: {exc}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(
            f"config file {path} must hold a mapping of option: value, got {type(values).__name__} {short_repr(values)}"
        )
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


class _PlainDumper(yaml.SafeDumper):
    """A safe dumper that writes every value out: no anchors and aliases, which
    :func:`load_yaml` refuses, even where one object appears twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def save_yaml(values: Mapping[str, Any], path: Union[str, Path]) -> None:
    """Write ``values`` to ``path`` as YAML, in their order and without anchors or aliases (which
    :func:`load_yaml` refuses), atomically."""
    atomic_write_bytes(Path(path), yaml.dump(dict(values), Dumper=_PlainDumper, sort_keys=False).encode())
