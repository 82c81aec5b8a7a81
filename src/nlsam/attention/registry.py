"""One registry for attention: every module registers its *part* in one line, every list of
attention names is derived from here, and compositions are sequences of part names.

A part is a module class (or any builder) with a name. Its builder is called with ``channels``
and ``feature_size`` where its signature takes them, plus its own keyword options::

    register_attention("nlsam", NLSAM, spatial_map=True, default_stages=2)   # in nlsam.py
    register_attention("se", SqueezeExcite, groups=("channel",))              # in se.py
    register_composition("se+nlsam", ("se", "nlsam"))                         # in __init__.py

A user gives options to the parts by name, as flat keywords ``PART_OPTION`` (or
``GROUP_OPTION`` for every part of a group): ``nlsam_pool=2``, ``nlsam_reduction={3: 4, 4: 2}``
(a value per stage), ``se_reduction=4``, ``channel_reduction=4`` (SE, GE, CBAM and BAM at
once), ``nlsam_stages=[3]`` (the stages that get the part), ``attention_init="identity"``
(every part). A part-specific key wins over a group key.

Those flat keys are split by part once, where a user gives them (:func:`nlsam.create_model`,
:func:`nlsam.insert`, :func:`create_attention`), by :func:`split_attention_options`, which also
names any key no part takes. Everything below takes the split options: an
:class:`AttentionPlan` holds them for one network and builds its modules place by place.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Type

import torch
from torch import nn

from .._ranges import short_repr
from .._sizes import to_2tuple
from .gate import INITS, apply_init

__all__ = [
    "AttentionPart",
    "AttentionPlan",
    "AttentionSequence",
    "INITS",
    "UnknownOptionError",
    "attention_option_keys",
    "attention_parts",
    "attention_placement",
    "attention_types",
    "check_attention_name",
    "create_attention",
    "identity_init",
    "is_builtin_part",
    "list_attention",
    "register_attention",
    "register_composition",
    "spatial_attention_types",
    "split_attention_options",
]

_PLACEMENTS = ("block", "stage")
#: The arguments a network gives a part's builder where its signature names them (the rest are
#: the part's options).
_STRUCTURAL_ARGUMENTS = ("channels", "feature_size")
#: The group every part belongs to, for its ``init`` option only: ``attention_init="identity"``.
_ALL_PARTS = "attention"
#: Names that mean "no attention" (:func:`check_attention_name`): never a registered name.
_NO_ATTENTION_NAMES = ("none", "null")


class UnknownOptionError(ValueError, TypeError):
    """A keyword option nothing takes: a ``TypeError`` as Python raises for an unexpected keyword
    argument, and a ``ValueError`` like every other bad input of nlsam."""


@dataclass(frozen=True)
class AttentionPart:
    """A registered attention module.

    Attributes:
        name: the name networks and options use (``nlsam``, ``se``, ``cbam_spatial``, ...).
        builder: the module class (or a function) building it.
        placement: ``"block"``: on the residual branch of every block of its stages, just before
            the addition (SE, CBAM, NL-SAM); ``"stage"``: once after each of its stages but the
            last (BAM).
        spatial_map: instances have ``attention_map(x)`` giving a B x 1 x H x W map, which
            ``nlsam attention`` shows.
        groups: option groups the part also answers to (``channel`` for SE, GE, CBAM and BAM).
        default_stages: the number of last stages a network gives the part by default (None: all).
        listed: whether the part is an attention name by itself (CBAM's gates are not).
        options: the keyword options its builder takes (read from its signature once, when it
            is registered).
        arguments: which of ``channels`` and ``feature_size`` its builder takes (idem).
    """

    name: str
    builder: Callable[..., nn.Module]
    placement: str = "block"
    spatial_map: bool = False
    groups: Tuple[str, ...] = ()
    default_stages: Optional[int] = None
    listed: bool = True
    options: Tuple[str, ...] = field(default=(), compare=False)
    arguments: Tuple[str, ...] = field(default=(), compare=False)

    def build(self, channels: int, feature_size: Tuple[int, int], **options: Any) -> nn.Module:
        """The part's module for a ``channels`` x ``feature_size`` feature map, with ``options``
        (already split and checked: its own option names, one value each)."""
        given = {"channels": channels, "feature_size": feature_size}
        return self.builder(**{a: given[a] for a in self.arguments}, **options)


_PARTS: Dict[str, AttentionPart] = {}
_COMPOSITIONS: Dict[str, Tuple[str, ...]] = {}
# what nlsam itself registers (recorded once, when nlsam.attention is imported)
_BUILTIN_PARTS: Dict[str, AttentionPart] = {}
_BUILTIN_COMPOSITIONS: Dict[str, Tuple[str, ...]] = {}


def _record_builtins() -> None:
    """Remember the parts and compositions registered so far as nlsam's own (its import calls
    this once, after its modules registered theirs)."""
    _BUILTIN_PARTS.update(_PARTS)
    _BUILTIN_COMPOSITIONS.update(_COMPOSITIONS)


def is_builtin_part(part: AttentionPart) -> bool:
    """Whether ``part`` is one of nlsam's own modules (not a user's, nor a replacement)."""
    return _BUILTIN_PARTS.get(part.name) is part


def _check_free_name(name: str, overwrite: bool) -> None:
    """Refuse a name that means no attention or names an option group (always), and the name of
    a built-in part or composition unless ``overwrite``."""
    groups = sorted({g for p in _PARTS.values() for g in p.groups if g not in _PARTS})
    if name in _NO_ATTENTION_NAMES:
        why = "it means no attention"
    elif name == _ALL_PARTS:
        why = f"the option group of every part ({_ALL_PARTS}_init)"
    elif name in groups:
        members = ", ".join(p.name for p in _PARTS.values() if name in p.groups)
        why = f"the option group of {members} ({name}_reduction, ...)"
    else:
        why = None
    if why is not None:
        raise ValueError(f"attention name {name!r} is reserved: {why}; choose another name")
    if (name in _BUILTIN_PARTS or name in _BUILTIN_COMPOSITIONS) and not overwrite:
        raise ValueError(
            f"{name!r} is a built-in attention of nlsam: registering it again would replace it in "
            "every network that names it (the paper's CIFAR and ImageNet ResNets too); choose "
            "another name, or pass overwrite=True to replace it on purpose"
        )


def _parameters(builder: Callable[..., Any]) -> Dict[str, inspect.Parameter]:
    target = builder
    if isinstance(builder, type):
        cls: Type[Any] = builder  # the class's own __init__ (mypy refuses __init__ of a mere `type`)
        target = cls.__init__
    return {k: p for k, p in inspect.signature(target).parameters.items() if k != "self"}


def register_attention(
    name: str,
    builder: Callable[..., nn.Module],
    *,
    placement: str = "block",
    spatial_map: bool = False,
    groups: Sequence[str] = (),
    default_stages: Optional[int] = None,
    listed: bool = True,
    overwrite: bool = False,
) -> Callable[..., nn.Module]:
    """Register an attention part; return ``builder`` (so it also works as a decorator's body).

    ``builder`` is called with ``channels`` and ``feature_size`` (the (H, W) of the feature map at
    the training resolution) where its signature names them, and with the part's options.
    It must take ``init`` (``"paper"`` or ``"identity"``: a gate that starts as the identity, see
    :func:`identity_init`); a module built with ``init="identity"`` keeps it as ``self.init`` and
    has ``reset_identity()``, which networks call again after their own weight init
    (:func:`nlsam.attention.apply_init` does both, in one line at the end of a constructor).
    Registering one of your own names again replaces that part. The names of nlsam's own
    parts and compositions are refused unless ``overwrite=True`` (which replaces the built-in
    everywhere); ``none``, ``null`` and the option groups' names (``attention``, ``channel``)
    are always refused.
    """
    if not isinstance(name, str) or not name or "+" in name or name.lower() != name:
        raise ValueError(f"attention part name must be a lower-case name without '+', got {name!r}")
    _check_free_name(name, overwrite)
    if placement not in _PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; valid: {', '.join(_PLACEMENTS)}")
    params = _parameters(builder)
    if "init" not in params:
        raise ValueError(f"attention part {name!r}: its builder must take an `init` option ({', '.join(INITS)})")
    options = tuple(
        k
        for k, p in params.items()
        if k not in _STRUCTURAL_ARGUMENTS and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    )
    arguments = tuple(a for a in _STRUCTURAL_ARGUMENTS if a in params)
    _PARTS[name] = AttentionPart(
        name, builder, placement, spatial_map, tuple(groups), default_stages, listed, options, arguments
    )
    if listed:
        _COMPOSITIONS[name] = (name,)
    return builder


def register_composition(name: str, parts: Sequence[str], *, overwrite: bool = False) -> None:
    """Register ``name`` as the parts applied one after another, e.g.
    ``register_composition("cbam+nlsam", ("cbam_channel", "nlsam"))``. A built-in name is
    refused unless ``overwrite=True``; ``none`` and the option groups' names always are."""
    if not isinstance(name, str) or not name or name.lower() != name:
        raise ValueError(f"attention composition name must be a lower-case name, got {name!r}")
    _check_free_name(name, overwrite)
    unknown = [p for p in parts if p not in _PARTS]
    if unknown or not parts:
        raise ValueError(f"composition {name!r}: unknown parts {unknown}; registered: {', '.join(_PARTS)}")
    if _PARTS[parts[0]].placement != "block" and len(parts) > 1:
        raise ValueError(f"composition {name!r}: a part placed after stages cannot be combined")
    _COMPOSITIONS[name] = tuple(parts)


def list_attention() -> List[str]:
    """Every attention name, in registration order (without ``none``)."""
    return list(_COMPOSITIONS)


def attention_parts(name: Optional[str]) -> Tuple[AttentionPart, ...]:
    """The parts of a composition (empty for no attention)."""
    name = check_attention_name(name)
    return () if name is None else tuple(_PARTS[p] for p in _COMPOSITIONS[name])


def check_attention_name(name: Optional[str]) -> Optional[str]:
    """Return ``name`` normalised (``None``, ``"none"`` and ``""`` mean no attention).

    Raises ``ValueError`` naming the valid choices for anything else.
    """
    if name is None or (isinstance(name, str) and name.strip().lower() in ("", "none", "null")):
        return None
    if not isinstance(name, str) or name.strip().lower() not in _COMPOSITIONS:
        close = difflib.get_close_matches(str(name), list(_COMPOSITIONS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown attention {short_repr(name)}{hint}; valid: none, {', '.join(_COMPOSITIONS)}")
    return name.strip().lower()


def attention_placement(name: Optional[str]) -> str:
    """``"block"`` or ``"stage"``: where the composition ``name`` goes in a ResNet."""
    parts = attention_parts(name)
    return parts[0].placement if parts else "block"


def spatial_attention_types() -> Tuple[Type[nn.Module], ...]:
    """The module classes whose ``attention_map(x)`` gives a spatial map."""
    return tuple(p.builder for p in _PARTS.values() if p.spatial_map and isinstance(p.builder, type))


def attention_types() -> Tuple[Type[nn.Module], ...]:
    """Every registered attention module class (the cost counter and hooks look for these)."""
    return tuple(dict.fromkeys(p.builder for p in _PARTS.values() if isinstance(p.builder, type)))


# ----------------------------------------------------------------------------- options
def _targets() -> Dict[str, List[AttentionPart]]:
    """Option prefixes: each part's name, and each group's name (all its parts)."""
    targets: Dict[str, List[AttentionPart]] = {}
    for part in _PARTS.values():
        targets.setdefault(part.name, []).append(part)
        for group in (*part.groups, _ALL_PARTS):
            targets.setdefault(group, []).append(part)
    return targets


def attention_option_keys() -> List[str]:
    """Every flat option key the parts take, e.g. ``nlsam_pool``, ``channel_reduction``."""
    keys: Set[str] = set()
    for target, parts in _targets().items():
        for part in parts:
            keys.update(f"{target}_{o}" for o in _target_options(target, part))
    return sorted(keys)


def _target_options(target: str, part: AttentionPart) -> Tuple[str, ...]:
    return ("init",) if target == _ALL_PARTS else (*part.options, "stages")


def split_attention_options(options: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """``{"nlsam_pool": 2, "channel_reduction": 4}`` -> ``{"nlsam": {"pool": 2}, "se": {"reduction":
    4}, ...}`` for every registered part (group keys first, part keys over them).

    Raises :class:`UnknownOptionError` for a key no part takes, naming the valid ones.
    """
    targets = _targets()
    per_part: Dict[str, Dict[str, Any]] = {name: {} for name in _PARTS}
    resolved: List[Tuple[bool, str, Any, List[AttentionPart]]] = []
    for key, value in options.items():
        match = max((t for t in targets if key.startswith(t + "_")), key=len, default=None)
        option = key[len(match) + 1 :] if match is not None else ""
        parts = [] if match is None else [p for p in targets[match] if option in _target_options(match, p)]
        if not parts:
            close = difflib.get_close_matches(key, attention_option_keys(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownOptionError(
                f"unknown attention option {short_repr(key)}{hint}; valid: {', '.join(attention_option_keys())}"
            )
        specific = match in _PARTS and len(parts) == 1 and parts[0].name == match
        resolved.append((specific, option, value, parts))
    for _specific, option, value, parts in sorted(resolved, key=lambda r: r[0]):  # group keys first
        for part in parts:
            per_part[part.name][option] = value
    return per_part


def _stage_value(value: Any, stage: Optional[int], option: str) -> Any:
    """An option's value for ``stage``: ``value`` itself, or ``value[stage]`` for a dict."""
    if not isinstance(value, dict):
        return value
    if stage not in value:
        raise ValueError(
            f"{option} has no value for stage {stage}; give one value or a dict with keys for every "
            f"stage that gets the part, got {short_repr(value)}"
        )
    return value[stage]


def _part_stages(part: AttentionPart, options: Mapping[str, Any], stage_ids: Sequence[int]) -> List[int]:
    """The stages of a network (numbered ``stage_ids``) that get ``part``."""
    chosen = options.get("stages")
    if chosen is None:
        return list(stage_ids) if part.default_stages is None else list(stage_ids)[-part.default_stages :]
    name, valid = f"{part.name}_stages", list(stage_ids)
    if not isinstance(chosen, (list, tuple)) or not chosen:
        raise ValueError(
            f"{name} must be a non-empty list of this network's stages {valid}, e.g. "
            f"[{valid[-1]}], got {short_repr(chosen)} (for no {part.name}, choose another attention)"
        )
    bad = [s for s in chosen if isinstance(s, bool) or s not in stage_ids]
    if bad:
        raise ValueError(f"{name} {short_repr(bad)} out of range for this network; valid stages: {valid}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"{name} names a stage more than once, got {short_repr(list(chosen))}; valid stages: {valid}")
    return list(chosen)


#: Options split by part, as :func:`split_attention_options` gives them:
#: ``{"nlsam": {"pool": 2}, "se": {"reduction": 4}, ...}`` (a part left out takes its defaults).
_PartOptions = Mapping[str, Mapping[str, Any]]


class AttentionSequence(nn.Sequential):
    """The parts of a composition (``"se+nlsam"``: SE, then NL-SAM), applied one after another:
    an ``nn.Sequential`` (its state dict keys are ``0.``, ``1.``, ...) that hands out its last
    part's gate (:func:`nlsam.attention.add_attended`). A composition whose last part has no
    ``split_gate`` is built as a plain ``nn.Sequential``."""

    @classmethod
    def of(cls, *modules: nn.Module) -> nn.Sequential:
        """``modules`` applied one after another: an :class:`AttentionSequence` when the last
        hands out its gate (``split_gate``), else a plain ``nn.Sequential`` (the same state dict
        keys either way)."""
        return cls(*modules) if hasattr(modules[-1], "split_gate") else nn.Sequential(*modules)

    def split_gate(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(features, gate)``: every part but the last applied to ``x``, and the last part's
        gate on the result, so that ``self(x) == apply_gate(features, gate)``."""
        *first, last = list(self)
        for module in first:
            x = module(x)
        return last.split_gate(x)  # type: ignore[operator]  # built only when the last part has it


class AttentionPlan:
    """The attention composition ``name`` of one network, with its options: builds the module of
    each place of the network (:meth:`build`).

    Args:
        name: a composition name (``"se+nlsam"``, ...) or None for no attention.
        options: the parts' options, already split by part and checked
            (:func:`split_attention_options`, where a user gives flat ``PART_OPTION`` keys); an
            option may hold one value or a dict stage -> value.
        stage_ids: all the network's stages; with them each part goes only to its own stages
            (its ``stages`` option, else its last ``default_stages``, else all), checked at its
            first module. Without them every part goes everywhere.

    One plan serves every block of a network: nothing is split or inspected per module (each
    builder's signature is read once, when its part is registered).

    Attributes:
        name: the composition's normalised name (None: no attention).
        parts: its parts, in the order they are applied.
        options: each part's options, by part name.
        outside_parts: the parts registered from outside nlsam (not one of its own modules).
    """

    def __init__(
        self,
        name: Optional[str],
        options: Optional[_PartOptions] = None,
        stage_ids: Optional[Sequence[int]] = None,
    ) -> None:
        self.name = check_attention_name(name)
        self.parts = attention_parts(self.name)
        given = options or {}
        self.options: Dict[str, Dict[str, Any]] = {part.name: dict(given.get(part.name, {})) for part in self.parts}
        self.outside_parts = tuple(p for p in self.parts if not is_builtin_part(p))
        self.stage_ids = None if stage_ids is None else list(stage_ids)
        self._stages: Dict[str, List[int]] = {}  # each part's stages, checked at its first module

    def _stages_of(self, part: AttentionPart) -> List[int]:
        if part.name not in self._stages:
            assert self.stage_ids is not None
            self._stages[part.name] = _part_stages(part, self.options[part.name], self.stage_ids)
        return self._stages[part.name]

    def build(
        self,
        channels: int,
        feature_size: Any,
        *,
        stage: Optional[int] = None,
        placement: str = "block",
        place_options: Optional[_PartOptions] = None,
    ) -> nn.Module:
        """The attention module for a ``channels`` x ``feature_size`` feature map of ``stage``:
        the parts placed at ``placement`` (``"block"`` or ``"stage"``) that go to ``stage``, one
        after another; ``nn.Identity`` where none does. ``place_options`` (split by part) hold
        values for this one place, over the plan's (:func:`nlsam.insert`'s pooling kernel
        fitted to each feature map)."""
        size = to_2tuple(feature_size)
        modules = []
        for part in self.parts:
            if part.placement != placement:
                continue
            if self.stage_ids is not None and stage not in self._stages_of(part):
                continue
            opts = self.options[part.name]
            if place_options and part.name in place_options:
                opts = {**opts, **place_options[part.name]}
            kwargs = {k: _stage_value(v, stage, f"{part.name}_{k}") for k, v in opts.items() if k != "stages"}
            try:
                modules.append(part.build(channels, size, **kwargs))
            except ValueError as error:
                named = _name_option(error, part, stage)
                if named is None:
                    raise
                raise named from None
        if not modules:
            return nn.Identity()
        if len(modules) == 1:
            return modules[0]
        return AttentionSequence.of(*modules)


def create_attention(
    name: Optional[str],
    channels: int,
    feature_size: Any,
    *,
    stage: Optional[int] = None,
    stage_ids: Optional[Sequence[int]] = None,
    placement: str = "block",
    **options: Any,
) -> nn.Module:
    """Build the attention composition ``name`` for a ``channels`` x ``feature_size`` feature map.

    ``options`` are flat ``PART_OPTION`` keys (see the module docstring), split by part here.
    In a network, ``stage`` (the stage this map belongs to) and ``stage_ids`` (all its stages)
    keep only the parts that go to this stage, resolve per-stage values, and ``placement`` only
    the parts placed there. ``None``, or no part left, gives ``nn.Identity``. A network builds
    all its modules from one :class:`AttentionPlan` instead.
    """
    plan = AttentionPlan(name, split_attention_options(options), stage_ids)
    return plan.build(channels, feature_size, stage=stage, placement=placement)


def _name_option(error: ValueError, part: AttentionPart, stage: Optional[int]) -> Optional[ValueError]:
    """A builder's "reduction must be ..." as the network option a user gives,
    "nlsam_reduction at stage 3 must be ..."; None where the message names no option."""
    if type(error) is not ValueError or not error.args or not isinstance(error.args[0], str):
        return None
    message = error.args[0]
    option = next((o for o in part.options if message.startswith(o + " ")), None)
    if option is None:
        return None
    where = f" at stage {stage}" if stage is not None else ""
    return ValueError(f"{part.name}_{option}{where}{message[len(option) :]}")


def identity_init(module: nn.Module, *, built_identity_only: bool = False) -> nn.Module:
    """Start the attention modules inside ``module`` as the identity and return ``module``: each
    gets ``init="identity"`` (:func:`nlsam.attention.apply_init`: the gate becomes 2 * sigmoid and
    the layer before it starts at zero, so the module returns its input unchanged until it learns
    otherwise).

    ``built_identity_only``: only the modules that already have ``init == "identity"`` (built with
    it). A network calls this after its own weight init, which would undo their start; the
    others keep the paper's init.
    """
    kinds = attention_types()
    for sub in module.modules():
        if built_identity_only:
            chosen = getattr(sub, "init", None) == "identity"
        else:
            chosen = isinstance(sub, kinds)
        if chosen and hasattr(sub, "reset_identity"):
            apply_init(sub, "identity")
    return module
