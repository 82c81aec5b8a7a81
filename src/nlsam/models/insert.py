"""Put attention into a network you already have: :func:`insert`.

**A ResNet** from torchvision (incl. Wide ResNet and ResNeXt), timm or nlsam. The attention goes
on the residual branch of every block of the chosen stages, just before the addition, where the
paper puts NL-SAM (its Fig. 2/3) and where SE and CBAM sit. Load pretrained weights *first*:
insertion renames the wrapped batch norms (``bn3`` becomes ``bn3.0``)::

    >>> import torch, torchvision, nlsam
    >>> model = torchvision.models.resnet50()   # e.g. weights="IMAGENET1K_V2"
    >>> report = nlsam.insert(model, "nlsam", init="identity")   # stages 3, 4, 5 at 224 px
    >>> print(report)                                             # doctest: +SKIP
    NL-SAM inserted in ResNet at 3x224x224, init 'identity': 13 modules, +31,525 params (+0.123%), +6.29 MFLOPs
    module          stage  C x H x W   Params  MFLOPs
    --------------  -----  ----------  ------  ------
    layer2.0.bn3.1      3  512x28x28    2,425   0.809
    ...
    layer4.2.bn3.1      5  2048x7x7     2,425   0.206
    total               -  -           31,525   6.293

``init="identity"`` starts every inserted module as the identity (the network computes exactly
what it computed before, and the modules learn from there); ``init="paper"`` (the default) keeps
the paper's modules as they are.

**Any other network** (VGG, MobileNet, your own CNN): name the modules whose output gets the
attention, or give a predicate ``(name, module) -> bool``; channels and feature sizes come from
a dry forward pass::

    >>> vgg = torchvision.models.vgg11()
    >>> print(nlsam.insert(vgg, "nlsam", after=["features.7", "features.12"]))   # doctest: +SKIP
    NL-SAM inserted in VGG at 3x224x224, init 'paper': 2 modules, +164,174 params (+0.124%), +2.74 MFLOPs
    module         stage  C x H x W   Params  MFLOPs
    -------------  -----  ---------  -------  ------
    features.7.1       -  256x56x56  154,546   1.920
    features.12.1      -  512x28x28    9,628   0.823
    total              -  -          164,174   2.744

Feature sizes are always measured (one forward pass at ``input_size``, no gradient, eval mode),
never computed by hand.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .._ranges import check_model_argument
from .._sizes import SizeLike, check_max_side, to_2tuple
from ..attention import (
    INITS,
    AttentionPlan,
    AttentionSequence,
    attention_option_keys,
    attention_parts,
    attention_placement,
    attention_types,
    check_attention_name,
    identity_init,
    list_attention,
    split_attention_options,
)
from ..cost import profile, render_table
from .resnet import (
    _CIFAR_DEFAULTS,
    _IMAGENET_DEFAULTS,
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    ResNet,
    _check_attention_shape,
)

__all__ = ["After", "INIT_MODES", "InsertReport", "Insertion", "insert"]

#: ``"paper"``: the modules as the paper defines them; ``"identity"``: each module starts as the
#: identity (:func:`nlsam.attention.identity_init`). The same tuple as :data:`nlsam.attention.INITS`.
INIT_MODES = INITS

#: Where :func:`insert` puts the modules in a network that is not a ResNet: the names of the
#: modules to follow, or a function of a module's name and the module that says whether to.
After = Union[Sequence[str], Callable[[str, nn.Module], bool]]

# Options for a network that is not a ResNet (``after=``): the paper's CIFAR choices, k = 2
# (its Table 2) and r = 8 (its Table 1); ratio 16 for SE, GE, CBAM and BAM, as in their papers.
_GENERIC_DEFAULTS: Dict[str, Any] = dict(input_size=224, nlsam_pool=2, nlsam_reduction=8, channel_reduction=16)


@dataclass
class Insertion:
    """One inserted attention module."""

    path: str  #: where the module now is in the network
    stage: Optional[int]  #: the stage of the block (None with ``after=``)
    channels: int
    feature_size: Tuple[int, int]  #: (H, W) at the insertion's input size
    params: int
    flops: int  #: FLOPs of one forward pass of the module, batch 1 (see :func:`nlsam.profile`)
    module: nn.Module = field(repr=False, compare=False)

    @property
    def shape(self) -> str:
        return f"{self.channels}x{self.feature_size[0]}x{self.feature_size[1]}"


@dataclass
class InsertReport:
    """What :func:`insert` did: one :class:`Insertion` per module, and the totals."""

    model: str
    attention: str
    init: str
    input_size: Tuple[int, int, int]  #: (C, H, W) of the dry pass
    params_before: int
    insertions: List[Insertion]

    @property
    def params(self) -> int:
        """Parameters added."""
        return sum(i.params for i in self.insertions)

    @property
    def flops(self) -> int:
        """FLOPs added (batch 1, at ``input_size``)."""
        return sum(i.flops for i in self.insertions)

    def __len__(self) -> int:
        return len(self.insertions)

    def __iter__(self) -> Iterator[Insertion]:
        return iter(self.insertions)

    def summary(self) -> str:
        """One line: what went where, and what it costs."""
        c, h, w = self.input_size
        share = 100.0 * self.params / self.params_before if self.params_before else 0.0
        label = " + ".join(p.upper().replace("NLSAM", "NL-SAM") for p in self.attention.split("+"))
        return (
            f"{label} inserted in {self.model} at {c}x{h}x{w}, init {self.init!r}: "
            f"{len(self)} modules, +{self.params:,} params (+{share:.3f}%), "
            f"+{self.flops / 1e6:.2f} MFLOPs"
        )

    def table(self, markdown: bool = False) -> str:
        """The summary line, then one row per insertion and a total row."""
        headers = ["module", "stage", "C x H x W", "Params", "MFLOPs"]
        rows = [
            [i.path, "-" if i.stage is None else str(i.stage), i.shape, f"{i.params:,}", f"{i.flops / 1e6:.3f}"]
            for i in self.insertions
        ]
        rows.append(["total", "-", "-", f"{self.params:,}", f"{self.flops / 1e6:.3f}"])
        return self.summary() + "\n" + render_table(headers, rows, markdown=markdown)

    def __str__(self) -> str:
        return self.table()


@dataclass
class _Target:
    """A place for one attention module: ``probe`` is the module whose output it reads,
    ``install`` puts the built module there."""

    name: str
    probe: nn.Module
    install: Callable[[nn.Module], None]
    stage: Optional[int] = None
    placement: str = "block"


def _wrap(parent: nn.Module, attr: str) -> Callable[[nn.Module], None]:
    """Install as ``parent.attr = nn.Sequential(parent.attr, attention)``."""

    def install(attention: nn.Module) -> None:
        setattr(parent, attr, nn.Sequential(getattr(parent, attr), attention))

    return install


def _fill_slot(parent: nn.Module, attr: str) -> Callable[[nn.Module], None]:
    """Install in an attention slot (timm's ``se``, nlsam's ``attention``); a module already
    there runs first, the pair made by :meth:`~nlsam.attention.AttentionSequence.of`: when the new
    module hands out its gate, an nlsam block still fuses it into the residual addition
    (:func:`nlsam.attention.add_attended`); its state dict keys are ``0.``, ``1.`` either way."""

    def install(attention: nn.Module) -> None:
        old = getattr(parent, attr, None)
        if old is None or isinstance(old, nn.Identity):
            setattr(parent, attr, attention)
        else:
            setattr(parent, attr, AttentionSequence.of(old, attention))

    return install


def _append(stage: Union[nn.Sequential, nn.ModuleList]) -> Callable[[nn.Module], None]:
    """Install at the end of a stage (BAM's place, between stages)."""

    def install(attention: nn.Module) -> None:
        stage.add_module(str(len(stage)), attention)

    return install


# --- residual networks ------------------------------------------------------------------------

_NLSAM_BLOCKS = (BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck)


def _block_families() -> List[Tuple[str, Tuple[type, ...]]]:
    """(family, block classes) for every ResNet implementation that is installed."""
    families: List[Tuple[str, Tuple[type, ...]]] = [("nlsam", _NLSAM_BLOCKS)]
    try:
        from torchvision.models import resnet as tv

        families.append(("torchvision", (tv.BasicBlock, tv.Bottleneck)))
    except ImportError:
        pass
    try:
        from timm.models import resnet as tm

        families.append(("timm", (tm.BasicBlock, tm.Bottleneck)))
    except ImportError:
        pass
    return families


@dataclass
class _Block:
    path: str
    stage: int
    family: str
    module: nn.Module
    stage_module: nn.Module  #: the module holding the block (an nn.Sequential in the known ResNets)


_LAYER = re.compile(r"(?:^|\.)layer(\d+)\.\d+$")


def _find_blocks(model: nn.Module) -> Tuple[List[_Block], Dict[str, Any]]:
    """The residual blocks of ``model`` and nlsam's ResNet defaults for its kind.

    Stages are numbered as in the papers: 1-3 on nlsam's CIFAR ResNets, 2-5 (conv2_x .. conv5_x,
    torchvision's layer1 .. layer4) on ImageNet ResNets."""
    cifar = isinstance(model, ResNet) and model.stage_ids[0] == 1
    first_stage = 1 if cifar else 2
    modules = dict(model.named_modules())
    families = _block_families()
    blocks = []
    for path, module in modules.items():
        family = next((f for f, classes in families if isinstance(module, classes)), None)
        if family is None:
            continue
        match = _LAYER.search(path)
        if match is None:
            raise ValueError(
                f"insert: residual block {path!r} is not in a stage named layer<i>; name the places with after=[...]"
            )
        stage = first_stage + int(match.group(1)) - 1
        blocks.append(_Block(path, stage, family, module, modules[path.rsplit(".", 1)[0]]))
    return blocks, dict(_CIFAR_DEFAULTS if cifar else _IMAGENET_DEFAULTS)


def _block_target(block: _Block) -> _Target:
    """The end of a block's residual branch, just before the addition (the paper's Fig. 2/3)."""
    module = block.module
    if block.family == "nlsam":  # the block's own attention slot
        assert isinstance(module, _NLSAM_BLOCKS)
        name, probe, install = f"{block.path}.attention", module.attention, _fill_slot(module, "attention")
    else:
        last_bn = "bn3" if hasattr(module, "bn3") else "bn2"
        probe = getattr(module, last_bn)
        if block.family == "timm":  # timm applies `se` to the branch just before the addition
            name, install = f"{block.path}.se", _fill_slot(module, "se")
        else:  # torchvision: wrapping the branch's last batch norm keeps torchvision's forward
            name, install = f"{block.path}.{last_bn}", _wrap(module, last_bn)
    return _Target(name, probe, install, block.stage, "block")


def _residual_targets(
    model: nn.Module, attention: str, placement: str
) -> Tuple[List[_Target], List[int], Dict[str, Any]]:
    """Every place of ``placement`` in a ResNet, its stage numbers and nlsam's defaults for it."""
    blocks, defaults = _find_blocks(model)
    if not blocks:
        example = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), "...")
        raise ValueError(
            f"insert: found no residual block (torchvision, timm or nlsam ResNet) in "
            f"{type(model).__name__}; name the modules to put attention after, e.g. "
            f"insert(model, {attention!r}, after=[{example!r}]) or after=lambda name, module: ..."
        )
    stage_ids = sorted({b.stage for b in blocks})
    if placement == "block":
        return [_block_target(b) for b in blocks], stage_ids, defaults
    # BAM sits between stages (its paper): at the end of every stage but the last
    last_blocks = {b.stage: b for b in blocks}
    targets = []
    for stage, b in last_blocks.items():
        if stage == stage_ids[-1]:
            continue
        name, holder = b.path.rsplit(".", 1)[0], b.stage_module
        if not isinstance(holder, (nn.Sequential, nn.ModuleList)):
            raise ValueError(
                f"insert: {name!r} holds its blocks in a {type(holder).__name__}, not an nn.Sequential, "
                f"so {attention} cannot go at its end; name the places with after=[...]"
            )
        targets.append(_Target(name, holder, _append(holder), stage, "stage"))
    return targets, stage_ids, defaults


def _check_stages(stages: Union[int, Sequence[int]], stage_ids: Sequence[int]) -> List[int]:
    chosen = [stages] if isinstance(stages, int) else list(stages)
    bad = [s for s in chosen if s not in stage_ids]
    if bad:
        raise ValueError(
            f"insert: stage(s) {bad} do not exist in this network; valid stages: {', '.join(map(str, stage_ids))}"
        )
    return chosen


# --- any network: after= ----------------------------------------------------------------------


def _after_targets(model: nn.Module, after: After, placement: str) -> List[_Target]:
    modules = dict(model.named_modules())
    del modules[""]
    if callable(after):
        names = [n for n, m in modules.items() if after(n, m)]
        if not names:
            raise ValueError("insert: the after= predicate selected no module")
    else:
        names = [after] if isinstance(after, str) else list(after)
        for name in names:
            if name not in modules:
                close = difflib.get_close_matches(str(name), list(modules), n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ValueError(f"insert: {name!r} (in after=) is not a module of {type(model).__name__}{hint}")
    targets = []
    for name in names:
        parent, _, attr = name.rpartition(".")
        targets.append(_Target(name, modules[name], _wrap(model.get_submodule(parent), attr), None, placement))
    return targets


# --- what is already there -------------------------------------------------------------------


def _as_attention(module: nn.Module) -> List[nn.Module]:
    """The attention modules ``module`` is made of: itself, or every module of a Sequential made
    only of attention (a composition, or a slot holding several); [] for anything else."""
    if isinstance(module, attention_types()):
        return [module]
    if isinstance(module, nn.Sequential) and len(module):
        parts = [_as_attention(child) for child in module]
        if all(parts):
            return [m for part in parts for m in part]
    return []


def _held_at_end(module: nn.Module) -> List[nn.Module]:
    """The attention modules an earlier insert put at the end of a Sequential (after a wrapped
    module, or at the end of a stage), and inside the wrapped module when it is one too."""
    if not isinstance(module, nn.Sequential):
        return []
    held: List[nn.Module] = []
    children = list(module)
    for index in range(len(children) - 1, -1, -1):
        found = _as_attention(children[index])
        if not found:
            if index == 0:  # the wrapped original: Sequential(Sequential(bn, NLSAM), SE)
                held += _held_at_end(children[0])
            break
        held += found
    return held


def _held(model: nn.Module, target: _Target) -> List[nn.Module]:
    """The attention modules already reading the output ``target`` would give its attention:
    in the place itself (a slot, a wrapper), or right after it in its Sequential."""
    modules = dict(model.named_modules())
    places = [target.probe]
    slot = modules.get(target.name)
    if slot is not None and slot is not target.probe:  # timm's `se` slot, read after bn3
        places.append(slot)
    held = [m for place in places for m in (_as_attention(place) or _held_at_end(place))]
    parent = modules.get(target.name.rpartition(".")[0])
    if isinstance(parent, nn.Sequential):
        children = list(parent)
        index = next((i for i, child in enumerate(children) if child is target.probe), None)
        if index is not None and index + 1 < len(children):
            held += _as_attention(children[index + 1])
    return held


def _refuse_stacking(model: nn.Module, name: str, built: Sequence[Tuple[_Target, nn.Module, Any]]) -> None:
    """Refuse to put a module where an earlier insert already put one of the same kind: a second
    NL-SAM in every block is never what a second call means (re-running a notebook cell, say)."""
    kinds = attention_types()
    clashes: Dict[str, List[str]] = {}
    for target, module, _ in built:
        new = {type(m) for m in module.modules() if isinstance(m, kinds)}
        same = sorted({type(m).__name__ for m in _held(model, target) if type(m) in new})
        if same:
            clashes[target.name] = same
    if clashes:
        names = list(clashes)
        shown = ", ".join(names[:4]) + (f", ... ({len(names) - 4} more)" if len(names) > 4 else "")
        kinds_held = ", ".join(sorted({k for v in clashes.values() for k in v}))
        raise ValueError(
            f"insert: {len(names)} of the {len(built)} places for {name!r} already hold {kinds_held} "
            f"(an earlier insert, or a model built with it): {shown}; inserting again would stack a "
            "second one in each. Insert into a fresh model (load its weights first), "
            "or choose other stages or places"
        )


# --- the dry pass -----------------------------------------------------------------------------


def _input_shape(model: nn.Module, input_size: Optional[SizeLike], default: int) -> Tuple[int, int, int]:
    """(C, H, W): ``input_size`` (H, (H, W) or (C, H, W)), else the model's own (nlsam's
    ``input_size``, timm's ``pretrained_cfg``), else ``default``."""
    channels = getattr(model, "in_chans", None)
    if channels is None:
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        channels = conv.in_channels if conv is not None else 3
    size: Any = input_size
    if size is None:
        size = getattr(model, "input_size", None)
    if size is None:
        cfg = getattr(model, "pretrained_cfg", None)
        size = tuple(cfg["input_size"]) if isinstance(cfg, dict) and cfg.get("input_size") else default
    if not isinstance(size, int) and len(tuple(size)) == 3:
        channels, size = tuple(size)[0], tuple(size)[1:]
    height, width = to_2tuple(size, "input_size")
    check_max_side(height, width, "insert: input_size")  # before the dry pass allocates its input
    return int(channels), height, width


def _dry_pass(model: nn.Module, targets: Sequence[_Target], shape: Tuple[int, int, int]) -> List[torch.Tensor]:
    """One forward pass (batch 1, no gradient, eval mode; every module's mode restored after)
    recording each target's probe output; returns an empty tensor of its shape, dtype, device."""
    seen: List[List[Any]] = [[] for _ in targets]

    def hook(index: int) -> Callable[..., None]:
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                output = torch.empty(output.shape, dtype=output.dtype, device=output.device)
            seen[index].append(output)

        return record

    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    x = torch.randn(1, *shape, device=device, dtype=dtype)
    modes = [(m, m.training) for m in model.modules()]
    handles = [t.probe.register_forward_hook(hook(i)) for i, t in enumerate(targets)]
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    except Exception as error:
        raise ValueError(
            f"insert: the dry forward pass at input size {shape[0]}x{shape[1]}x{shape[2]} "
            f"failed ({type(error).__name__}: {error}); give an input_size the network takes"
        ) from error
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training

    outputs = []
    for target, runs in zip(targets, seen):
        if len(runs) != 1:
            what = "did not run" if not runs else f"ran {len(runs)} times (a shared module)"
            raise ValueError(
                f"insert: {target.name!r} {what} in the forward pass; attention needs a module "
                "that runs once per forward"
            )
        if not isinstance(runs[0], torch.Tensor) or runs[0].dim() != 4:
            got = list(runs[0].shape) if isinstance(runs[0], torch.Tensor) else type(runs[0]).__name__
            raise ValueError(f"insert: {target.name!r} outputs {got}, not a B x C x H x W feature map")
        outputs.append(runs[0])
    return outputs


# --- building ---------------------------------------------------------------------------------


def _divisors(height: int, width: int) -> List[int]:
    common = math.gcd(height, width)
    return [k for k in range(1, common + 1) if common % k == 0]


def _preferred_pool(value: Union[int, Mapping[int, int]], stage: Optional[int]) -> int:
    """The default k for ``stage``: its entry, or the nearest stage's, in a per-stage default."""
    if isinstance(value, Mapping):
        nearest = min(value, key=lambda s: abs(s - stage)) if stage is not None else max(value)
        value = value[nearest]
    return max(int(value), 1)


def _network_options(
    attention: str,
    defaults: Mapping[str, Any],
    stages: Optional[List[int]],
    options: Mapping[str, Any],
    attention_options: Mapping[str, Mapping[str, Any]],
) -> Dict[str, Dict[str, Any]]:
    """The plan's options, split by part: nlsam's defaults for the network (its NL-SAM stages, r,
    the channel ratio; k is fitted to each place by :func:`_build`), the user's
    ``attention_options`` (``options`` split) over them, and ``stages`` for every part of
    ``attention`` whose own ``PART_stages`` key is not in ``options``."""
    valid = set(attention_option_keys())
    merged = split_attention_options({k: v for k, v in defaults.items() if k in valid and k != "nlsam_pool"})
    for name, given in attention_options.items():
        merged.setdefault(name, {}).update(given)
    if stages is not None:
        for part in attention_parts(attention):
            if f"{part.name}_stages" not in options:
                merged[part.name]["stages"] = stages
    return merged


def _build(
    plan: AttentionPlan,
    target: _Target,
    feature: torch.Tensor,
    default_pool: Union[int, Mapping[int, int]],
    input_hw: Tuple[int, int],
) -> nn.Module:
    """The attention module for one place (``nn.Identity`` where no part goes to its stage).

    NL-SAM's k, unless given, is the network's default (per stage at 224 px, 4/2/1 in ImageNet
    stages 3/4/5) or, where that does not divide the feature map, the largest k below it that
    does."""
    attention = plan.name
    channels, height, width = feature.shape[1:]
    valid = _divisors(height, width)
    place_options = None
    nlsam_part = next((part for part in plan.parts if part.name == "nlsam"), None)
    if nlsam_part is not None and "pool" in nlsam_part.options and "pool" not in plan.options["nlsam"]:
        preferred = _preferred_pool(default_pool, target.stage)
        place_options = {"nlsam": {"pool": max(k for k in valid if k <= preferred)}}
    try:
        module = plan.build(
            channels, (height, width), stage=target.stage, placement=target.placement, place_options=place_options
        )
    except ValueError as error:
        where = f" (stage {target.stage})" if target.stage is not None else ""
        pools = f"; valid nlsam_pool k here: {', '.join(map(str, valid))}" if nlsam_part is not None else ""
        raise ValueError(
            f"insert: {attention!r} does not fit {target.name}{where}, a {channels}x{height}x"
            f"{width} feature map at input size {input_hw[0]}x{input_hw[1]}: {error}{pools}"
        ) from None
    _check_attention_shape(module, plan, (channels, height, width), f"at {target.name}")
    return module


def insert(
    model: nn.Module,
    attention: str = "nlsam",
    stages: Optional[Union[int, Sequence[int]]] = None,
    input_size: Optional[SizeLike] = None,
    init: str = "paper",
    after: Optional[After] = None,
    **options: Any,
) -> InsertReport:
    """Insert ``attention`` into ``model`` in place and report what went where.

    Args:
        model: a torchvision, timm or nlsam ResNet, or (with ``after``) any network.
        attention: a composition name of :func:`nlsam.create_attention` (``"nlsam"``, ``"se"``,
            ``"se+nlsam"``, ...).
        stages: ResNets only: the stages whose blocks get every part, numbered as in the papers
            (2-5 on ImageNet ResNets, 1-3 on nlsam's CIFAR ones). Default, as nlsam's own
            ResNets: NL-SAM in stages 3, 4, 5 (CIFAR: 2, 3), the other parts in every stage.
        input_size: the training resolution, H, (H, W) or (C, H, W); it fixes the feature sizes
            and so NL-SAM's fc layers. Default: the model's own (nlsam ``input_size``, timm
            ``pretrained_cfg``), else 224.
        init: ``"paper"`` (the modules as the papers define them) or ``"identity"`` (each starts
            as the identity, see :func:`nlsam.attention.identity_init`, and still learns).
        after: instead of residual blocks: module names, or a predicate ``(name, module) ->
            bool``; each chosen module becomes ``nn.Sequential(module, attention)``.
        **options: attention options for :func:`nlsam.create_attention` (``nlsam_pool``,
            ``nlsam_reduction``, ``nlsam_interpolation``, ``channel_reduction``, ``se_stages``,
            ...; per-stage values as dicts). Unset, they are nlsam's ResNet defaults for the
            network (ImageNet at 224 px: k = 4/2/1 in stages 3/4/5, r = 2, ratio 16; CIFAR at
            32 px: k = 2, r = 8, ratio 4; other networks: k = 2, r = 8), k lowered where it does
            not divide a feature map.

    Placement follows the paper (its Fig. 2/3): on the residual branch, after the last batch
    norm, before the addition. torchvision's ``bn2``/``bn3`` becomes ``nn.Sequential(bn,
    attention)``; timm's ``se`` slot and nlsam's ``attention`` slot take it (after any module
    already there). BAM, designed for the points between stages, goes at the end of every stage
    but the last. Everything is built before the model is touched: an error leaves it unchanged.

    A second call with an attention already inserted at the same places is refused (naming
    them) rather than stacking a second module in each; another attention there (SE after
    NL-SAM, say) runs after the one already there.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` (a model's name: build it with
            :func:`nlsam.create_model`, torchvision or timm first).
        ValueError: an unknown attention, option or init; a network without residual blocks
            and no ``after``; a stage that does not exist; a name in ``after`` that is not a
            module; a pooling kernel that does not divide a feature map; places that already
            hold the attention from an earlier insert.
    """
    check_model_argument(model, "insert")
    name = check_attention_name(attention)
    if name is None:
        raise ValueError(f"insert: attention is {attention!r}; name one of {', '.join(list_attention())}")
    if init not in INITS:
        raise ValueError(f"insert: unknown init {init!r}; valid: {', '.join(INITS)}")
    attention_options = split_attention_options(options)  # the one check: an unknown option fails here
    placement = attention_placement(name)
    if after is not None:
        if stages is not None:
            raise ValueError("insert: stages= chooses residual blocks; with after= name the modules")
        targets, stage_ids, defaults = _after_targets(model, after, placement), None, _GENERIC_DEFAULTS
    else:
        targets, stage_ids, defaults = _residual_targets(model, name, placement)
        stages = None if stages is None else _check_stages(stages, stage_ids)
    shape = _input_shape(model, input_size, defaults["input_size"])
    features = _dry_pass(model, targets, shape)

    plan = AttentionPlan(name, _network_options(name, defaults, stages, options, attention_options), stage_ids)
    built = []
    for target, feature in zip(targets, features):
        module = _build(plan, target, feature, defaults["nlsam_pool"], shape[1:])
        if not isinstance(module, nn.Identity):
            if init == "identity":
                module = identity_init(module)
            module = module.to(device=feature.device, dtype=feature.dtype)
            built.append((target, module, feature))
    if not built:
        raise ValueError(f"insert: {name!r} goes to none of the chosen stages {stages}")
    _refuse_stacking(model, name, built)

    params_before = sum(p.numel() for p in model.parameters())
    for target, module, _ in built:
        target.install(module)
    paths = {id(m): p for p, m in model.named_modules()}
    insertions = [
        Insertion(
            path=paths[id(module)],
            stage=target.stage,
            channels=feature.shape[1],
            feature_size=(feature.shape[2], feature.shape[3]),
            params=sum(p.numel() for p in module.parameters()),
            flops=profile(module, tuple(feature.shape[1:])).flops,
            module=module,
        )
        for target, module, feature in built
    ]
    return InsertReport(type(model).__name__, name, init, shape, params_before, insertions)
