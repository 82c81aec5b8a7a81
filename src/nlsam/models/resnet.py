"""ResNets that carry attention modules, for CIFAR (He et al. 2015/2016) and ImageNet.

Attention sits on the residual branch of every block of the chosen stages, just before the
addition, where SE and CBAM sit and where the NL-SAM paper puts NL-SAM; a gating module's
multiply and the addition run as one pass (:func:`nlsam.attention.add_attended`). BAM, designed
for the points between stages, goes once at the end of each chosen stage except the last.

Stages are numbered as in the papers: CIFAR networks have stages 1-3 (16/32/64 channels at
32/16/8 pixels for 32x32 inputs); ImageNet networks have stages 2-5 (conv2_x .. conv5_x).

Shortcuts: CIFAR basic-block networks (resnet20..110, preresnet110) use option A of He et al.
(2015): a parameter-free identity that subsamples and zero-pads channels, which is what gives
ResNet-110 its 1.7M parameters. Bottleneck networks (resnet164, preresnet164, ResNet-50..152)
and ImageNet networks use option B: a 1x1 projection (with batch norm in post-activation nets)
when the shape changes. ``shortcut="A"`` or ``"B"`` overrides either.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Type, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .._ranges import Range, short_repr
from .._sizes import MAX_INPUT_PIXELS, SizeLike, to_2tuple
from ..attention import AttentionPlan, add_attended, identity_init, split_attention_options
from .registry import register_model

__all__ = [
    "BasicBlock",
    "Block",
    "Bottleneck",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ResNet",
    "ZeroPadShortcut",
]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: subsample by ``stride`` and zero-pad the new channels."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra > 0:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return x


def _shortcut(kind: str, in_planes: int, out_planes: int, stride: int, norm: bool) -> Optional[nn.Module]:
    if stride == 1 and in_planes == out_planes:
        return None
    if kind == "A":
        return ZeroPadShortcut(in_planes, out_planes, stride)
    layers: List[nn.Module] = [_conv1x1(in_planes, out_planes, stride)]
    if norm:
        layers.append(nn.BatchNorm2d(out_planes))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions; attention on the branch before the addition, ReLU after it."""

    expansion = 1
    preact = False

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str, attention: nn.Module) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attention = attention
        self.downsample = _shortcut(shortcut, in_planes, planes, stride, norm=True)
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if torch.jit.is_scripting():  # TorchScript runs the modules' own forward
            return self.act2(self.attention(out) + identity)
        return self.act2(add_attended(self.attention, out, identity))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand x4; attention before the addition."""

    expansion = 4
    preact = False

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str, attention: nn.Module) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = _conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = _conv1x1(planes, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.attention = attention
        self.downsample = _shortcut(shortcut, in_planes, out_planes, stride, norm=True)
        self.act3 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if torch.jit.is_scripting():  # TorchScript runs the modules' own forward
            return self.act3(self.attention(out) + identity)
        return self.act3(add_attended(self.attention, out, identity))


class PreActBasicBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016): BN-ReLU-conv twice, attention, addition.
    A projection shortcut reads the pre-activated input."""

    expansion = 1
    preact = True

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str, attention: nn.Module) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.attention = attention
        self.downsample = _shortcut(shortcut, in_planes, planes, stride, norm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        identity = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(self.act2(self.bn2(out)))
        if torch.jit.is_scripting():  # TorchScript runs the modules' own forward
            return self.attention(out) + identity
        return add_attended(self.attention, out, identity)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (He et al. 2016), as in ResNet-164 (pre-act)."""

    expansion = 4
    preact = True

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str, attention: nn.Module) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = _conv1x1(in_planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.act3 = nn.ReLU(inplace=True)
        self.conv3 = _conv1x1(planes, out_planes)
        self.attention = attention
        self.downsample = _shortcut(shortcut, in_planes, out_planes, stride, norm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        identity = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(self.act2(self.bn2(out)))
        out = self.conv3(self.act3(self.bn3(out)))
        if torch.jit.is_scripting():  # TorchScript runs the modules' own forward
            return self.attention(out) + identity
        return add_attended(self.attention, out, identity)


#: The residual block classes a :class:`ResNet` is built from.
Block = Type[Union[BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck]]


def _check_attention_shape(module: nn.Module, plan: AttentionPlan, shape: Sequence[int], where: str) -> None:
    """Raise a ``ValueError`` naming the module unless ``module`` (built by ``plan``) maps a
    ``shape`` = (C, H, W) feature map to one of the same shape.

    nlsam's own modules keep the shape by construction (and are tested), so only a composition
    with a part registered from outside is tried: once, on zeros at batch 2, in eval mode,
    without gradient and without touching the random state. On the meta device it costs nothing.
    """
    outside = plan.outside_parts
    if not outside or isinstance(module, nn.Identity):
        return
    named = ", ".join(f"{p.name!r} ({getattr(p.builder, '__qualname__', p.builder)})" for p in outside)
    first = next(iter([*module.parameters(), *module.buffers()]), None)
    device = first.device if first is not None else torch.empty(0).device
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.get_default_dtype()
    x = torch.zeros(2, *shape, device=device, dtype=dtype)
    modes = [(m, m.training) for m in module.modules()]
    size = "x".join(map(str, shape))
    try:
        module.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = module(x)
    except NotImplementedError:
        if device.type == "meta":  # an operator without a meta kernel: nothing to learn here
            return
        raise
    except Exception as error:
        raise ValueError(
            f"attention {named} fails on the {size} feature map {where} "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from None
    finally:
        for sub, training in modes:
            sub.training = training
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(x.shape):
        got = "x".join(map(str, out.shape[1:])) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"attention {named} changes the feature map {where}: it is given {size} and returns "
            f"{got}; an attention module must return a map of its input's shape (C x H x W)"
        )


#: The valid values of :class:`ResNet`'s numeric options (``--model-option KEY=VALUE``).
_OPTION_RANGES = dict(
    in_chans=Range(
        1, 1024, integer=True, why="image channels: 3 for RGB", why_high="more bands than any imaging sensor gives"
    ),
    num_classes=Range(0, 100_000, integer=True, why="0: no classifier", why_high="ImageNet-21k has 21,841 classes"),
    drop_rate=Range(0, 1, high_open=True, why="the dropout probability before the classifier"),
    stem_width=Range(1, 4096, integer=True, why="channels of the first convolution", why_high="ResNets use 64 at most"),
    input_size=Range(
        1,
        MAX_INPUT_PIXELS,
        integer=True,
        why="pixels a side",
        why_high="activations grow with H x W: at 4096 x 4096 a ResNet's first feature map alone is 1 GiB per image",
    ),
)


class ResNet(nn.Module):
    """A ResNet with attention, for CIFAR (``stem="cifar"``) or ImageNet (``stem="imagenet"``).

    Args:
        block: the residual block class.
        layers: blocks per stage.
        widths: base width (``planes``) per stage; a stage outputs ``width * block.expansion``.
        stem: ``"cifar"`` (3x3 conv, stride 1) or ``"imagenet"`` (7x7 stride 2 + max pool).
        num_classes: classifier outputs; 0 gives a network without classifier (``fc`` is
            ``nn.Identity``).
        in_chans: input image channels.
        input_size: training resolution (int or (H, W)); it fixes the feature size of each
            stage and so the size of NL-SAM's fully-connected layers. The network still runs at
            other sizes (see :class:`nlsam.NLSAM`).
        attention: a composition name (see :func:`nlsam.attention.list_attention`) or None.
        shortcut: ``"A"`` (zero-padding identity) or ``"B"`` (projection) on shape changes.
        drop_rate: dropout before the classifier.
        zero_init_residual: zero the last BN of each post-activation block.
        attention_options: options of the attention parts, split by part and checked, as
            :func:`nlsam.attention.split_attention_options` gives them from the flat keys that
            :func:`nlsam.create_model` takes: ``{"nlsam": {"stages": [2, 3], "pool": 2,
            "reduction": 8}, "se": {"reduction": 4}, ...}`` (``stages``: the stages whose blocks
            get the part, default the last two for NL-SAM and all for the others; ``pool`` k and
            ``reduction`` r, each an int or a dict stage -> value; ``init``: ``"identity"`` to
            start as the identity). A part left out takes its module's defaults.
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        widths: Sequence[int],
        *,
        stem: str = "imagenet",
        num_classes: int = 1000,
        in_chans: int = 3,
        input_size: SizeLike = 224,
        attention: Optional[str] = None,
        shortcut: str = "B",
        drop_rate: float = 0.0,
        zero_init_residual: bool = False,
        stem_width: Optional[int] = None,
        attention_options: Optional[Mapping[str, Mapping[str, Any]]] = None,
    ) -> None:
        super().__init__()
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"unknown stem {short_repr(stem)}; valid: cifar, imagenet")
        if shortcut not in ("A", "B"):
            raise ValueError(f"unknown shortcut {short_repr(shortcut)}; valid: A (zero-pad), B (projection)")
        for name, value in (
            ("in_chans", in_chans),
            ("num_classes", num_classes),
            ("drop_rate", drop_rate),
            ("stem_width", stem_width),
        ):
            if value is not None or name != "stem_width":
                _OPTION_RANGES[name].check(name, value)
        if not isinstance(zero_init_residual, bool):
            raise ValueError(f"zero_init_residual must be true or false, got {short_repr(zero_init_residual)}")
        input_size = to_2tuple(input_size, "input_size")
        if max(input_size) > MAX_INPUT_PIXELS:
            _OPTION_RANGES["input_size"].check("input_size", max(input_size))
        first_stage = 1 if stem == "cifar" else 2
        stage_ids = list(range(first_stage, first_stage + len(layers)))
        plan = AttentionPlan(attention, attention_options, stage_ids)  # an unknown attention fails here

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.input_size = to_2tuple(input_size, "input_size")
        self.attention_name = plan.name
        self.drop_rate = drop_rate
        self.preact = block.preact
        self.stage_ids = stage_ids
        self.grad_checkpointing = False

        height, width = self.input_size
        in_planes = stem_width or widths[0]
        if stem == "cifar":
            self.conv1 = _conv3x3(in_chans, in_planes)
            stem_stride = 1
        else:
            self.conv1 = nn.Conv2d(in_chans, in_planes, 7, stride=2, padding=3, bias=False)
            stem_stride = 4
        # a pre-activation network normalises inside its first block instead
        self.bn1 = nn.Identity() if self.preact else nn.BatchNorm2d(in_planes)
        self.act1 = nn.Identity() if self.preact else nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()
        height, width = math.ceil(height / stem_stride), math.ceil(width / stem_stride)

        self.feature_info = []
        reduction = stem_stride
        self.stages = nn.Sequential()
        for index, (stage, depth, planes) in enumerate(zip(stage_ids, layers, widths)):
            stride = 1 if index == 0 else 2
            height, width = math.ceil(height / stride), math.ceil(width / stride)
            reduction *= stride
            out_planes = planes * block.expansion

            # the stage's numbers are bound as defaults: a closure would see the loop's later values
            def attention_at(
                placement: str,
                out_planes: int = out_planes,
                height: int = height,
                width: int = width,
                stage: int = stage,
            ) -> nn.Module:
                module = plan.build(out_planes, (height, width), stage=stage, placement=placement)
                _check_attention_shape(module, plan, (out_planes, height, width), f"of stage {stage}")
                return module

            blocks: List[nn.Module] = [
                block(
                    in_planes if i == 0 else out_planes,
                    planes,
                    stride if i == 0 else 1,
                    shortcut,
                    attention_at("block"),
                )
                for i in range(depth)
            ]
            in_planes = out_planes
            after_stage = attention_at("stage") if stage != stage_ids[-1] else nn.Identity()
            if not isinstance(after_stage, nn.Identity):  # BAM, once between stages
                blocks.append(after_stage)
            name = f"layer{index + 1}"
            self.stages.add_module(name, nn.Sequential(*blocks))
            self.feature_info.append(
                dict(num_chs=out_planes, reduction=reduction, module=f"stages.{name}", stage=stage)
            )
        self.num_features = in_planes
        self.head_hidden_size = in_planes
        self.final_norm = nn.BatchNorm2d(in_planes) if self.preact else nn.Identity()
        self.final_act = nn.ReLU(inplace=True) if self.preact else nn.Identity()
        self.global_pool: nn.Module = nn.AdaptiveAvgPool2d(1)  # nn.Identity without pooling
        self.flatten: nn.Module = nn.Flatten(1)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_planes, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(zero_init_residual)
        identity_init(self, built_identity_only=True)  # the convolution init above must not undo an identity start

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for timm's layer-wise lr decay: stem, each block (or stage), final norm."""
        return dict(
            stem=r"^conv1|^bn1",
            blocks=[
                (r"^stages\.layer(\d+)" if coarse else r"^stages\.layer(\d+)\.(\d+)", None),
                (r"^final_norm", (99999,)),
            ],
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every residual block in the backward pass instead of keeping its activations."""
        self.grad_checkpointing = enable

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` outputs (0: none).

        ``global_pool``: ``"avg"``, or ``""`` for none (only with ``num_classes=0``); None keeps
        the current one."""
        if global_pool is None:
            global_pool = "" if isinstance(self.global_pool, nn.Identity) else "avg"
        if global_pool not in ("avg", ""):
            raise ValueError(f"unsupported global_pool {global_pool!r}; valid: avg, ''")
        if global_pool == "" and num_classes > 0:
            raise ValueError("global_pool='' (no pooling) needs num_classes=0")
        self.num_classes = num_classes
        self.global_pool = nn.AdaptiveAvgPool2d(1) if global_pool == "avg" else nn.Identity()
        self.flatten = nn.Flatten(1) if global_pool == "avg" else nn.Identity()
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError("expected input of shape (B, {}, H, W), got {}".format(self.in_chans, list(x.shape)))
        return self.maxpool(self.act1(self.bn1(self.conv1(x))))

    @torch.jit.unused
    def _forward_stages_checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            if isinstance(stage, nn.Sequential):
                for block in stage:
                    x = checkpoint(block, x, use_reentrant=False)
            else:  # a stage that prune_intermediate_layers replaced with nn.Identity
                x = stage(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and all stages: B x ``num_features`` x H/32 x W/32 (H/4 on CIFAR)."""
        x = self.forward_stem(x)
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            x = self._forward_stages_checkpointed(x)
        else:
            x = self.stages(x)
        return self.final_act(self.final_norm(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global pool, dropout and (unless ``pre_logits``) the classifier."""
        x = self.flatten(self.global_pool(x))
        x = self.head_drop(x)
        return x if pre_logits else self.fc(x)

    def _take_indices(self, indices: Optional[Union[int, Sequence[int]]]) -> List[int]:
        """timm's convention over the stages: None -> all, int n -> last n, a sequence -> those
        (negative counts from the end)."""
        n = len(self.stages)
        if indices is None:
            indices = n
        if isinstance(indices, int):
            if not 0 < indices <= n:
                raise ValueError(f"last-n indices must be in 1..{n}, got {indices}")
            return list(range(n - indices, n))
        take = []
        for i in indices:
            j = n + i if i < 0 else i
            if not 0 <= j < n:
                raise ValueError(f"stage index {i} out of range for {n} stages")
            take.append(j)
        return take

    @torch.jit.unused
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, Sequence[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """timm's feature API: the outputs of stages ``indices``; unless ``intermediates_only``,
        the ``forward_features`` output first. ``norm`` applies a pre-activation network's final
        BN-ReLU to the last stage."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take = self._take_indices(indices)
        last = len(self.stages) - 1
        stop = max(take) if stop_early or intermediates_only else last
        intermediates = []
        x = self.forward_stem(x)
        for i, stage in enumerate(self.stages):
            if i > stop:
                break
            x = checkpoint(stage, x, use_reentrant=False) if self.grad_checkpointing and self.training else stage(x)
            if i in take:
                intermediates.append(self.final_act(self.final_norm(x)) if norm and i == last else x)
        if intermediates_only:
            return intermediates
        return self.final_act(self.final_norm(x)), intermediates

    @torch.jit.unused
    def prune_intermediate_layers(
        self, indices: Optional[Union[int, Sequence[int]]] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> List[int]:
        """Drop the stages after the last of ``indices`` (and the head); return the indices kept."""
        take = self._take_indices(indices)
        names = list(self.stages._modules)
        for name in names[max(take) + 1 :]:
            setattr(self.stages, name, nn.Identity())
        if prune_norm or max(take) < len(names) - 1:
            self.final_norm = nn.Identity()
            self.final_act = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------
# Builders: they only fill in numbers. The NL-SAM defaults are the paper's:
# CIFAR: NL-SAM in stages 2 and 3 with k = 2, r = 8 (its Table 4); SE/GE/CBAM ratio 4 as in its
#   CIFAR combination experiments.
# ImageNet: NL-SAM in stages 3, 4 and 5 (its Table 6, whose numbers did not survive). We pool
#   every stage to the same 7 x 7 grid at 224 px (k = 4, 2, 1) and use r = 2, which puts the
#   overhead of ResNet-50 + NL-SAM at +0.032M parameters and +0.0063 GFLOPs, the paper's
#   "+0.03M and +0.007G". SE/GE/CBAM/BAM use their own papers' ratio 16.
# ---------------------------------------------------------------------------------------------
_CIFAR_NETWORK_DEFAULTS: Dict[str, Any] = dict(stem="cifar", num_classes=10, input_size=32)
_CIFAR_ATTENTION_DEFAULTS: Dict[str, Any] = dict(
    nlsam_stages=(2, 3),
    nlsam_pool=2,
    nlsam_reduction=8,
    channel_reduction=4,
)
_IMAGENET_NETWORK_DEFAULTS: Dict[str, Any] = dict(stem="imagenet", num_classes=1000, input_size=224)
_IMAGENET_ATTENTION_DEFAULTS: Dict[str, Any] = dict(
    nlsam_stages=(3, 4, 5),
    nlsam_pool={3: 4, 4: 2, 5: 1},
    nlsam_reduction=2,
    channel_reduction=16,
)
#: Every default of a builder, the network's and the attention's (flat ``PART_OPTION`` keys).
_CIFAR_DEFAULTS: Dict[str, Any] = {**_CIFAR_NETWORK_DEFAULTS, **_CIFAR_ATTENTION_DEFAULTS}
_IMAGENET_DEFAULTS: Dict[str, Any] = {**_IMAGENET_NETWORK_DEFAULTS, **_IMAGENET_ATTENTION_DEFAULTS}


def _with_attention_defaults(
    defaults: Mapping[str, Any], attention_options: Optional[Mapping[str, Mapping[str, Any]]]
) -> Dict[str, Dict[str, Any]]:
    """A builder's attention defaults (flat keys, split by part here) with the caller's options
    (already split) over them, option by option."""
    options = split_attention_options(defaults)
    for part, given in (attention_options or {}).items():
        options.setdefault(part, {}).update(given)
    return options


def _cifar_resnet(
    block: Block,
    blocks_per_stage: int,
    attention_options: Optional[Mapping[str, Mapping[str, Any]]] = None,
    **kwargs: Any,
) -> ResNet:
    options = dict(_CIFAR_NETWORK_DEFAULTS, shortcut="A" if block.expansion == 1 else "B")
    options.update(kwargs)
    attention = _with_attention_defaults(_CIFAR_ATTENTION_DEFAULTS, attention_options)
    return ResNet(block, [blocks_per_stage] * 3, [16, 32, 64], **options, attention_options=attention)


def _imagenet_resnet(
    block: Block,
    layers: Sequence[int],
    attention_options: Optional[Mapping[str, Mapping[str, Any]]] = None,
    **kwargs: Any,
) -> ResNet:
    options = dict(_IMAGENET_NETWORK_DEFAULTS, shortcut="B")
    options.update(kwargs)
    attention = _with_attention_defaults(_IMAGENET_ATTENTION_DEFAULTS, attention_options)
    return ResNet(block, layers, [64, 128, 256, 512], **options, attention_options=attention)


@register_model
def resnet20(**kwargs) -> ResNet:
    """CIFAR ResNet-20 (6n+2, n=3, basic blocks)."""
    return _cifar_resnet(BasicBlock, 3, **kwargs)


@register_model
def resnet32(**kwargs) -> ResNet:
    """CIFAR ResNet-32 (n=5)."""
    return _cifar_resnet(BasicBlock, 5, **kwargs)


@register_model
def resnet44(**kwargs) -> ResNet:
    """CIFAR ResNet-44 (n=7)."""
    return _cifar_resnet(BasicBlock, 7, **kwargs)


@register_model
def resnet56(**kwargs) -> ResNet:
    """CIFAR ResNet-56 (n=9)."""
    return _cifar_resnet(BasicBlock, 9, **kwargs)


@register_model
def resnet110(**kwargs) -> ResNet:
    """CIFAR ResNet-110 (n=18), the paper's main CIFAR network."""
    return _cifar_resnet(BasicBlock, 18, **kwargs)


@register_model
def resnet164(**kwargs) -> ResNet:
    """CIFAR ResNet-164 (9n+2, n=18, bottleneck blocks, post-activation)."""
    return _cifar_resnet(Bottleneck, 18, **kwargs)


@register_model
def preresnet110(**kwargs) -> ResNet:
    """CIFAR pre-activation ResNet-110 (He et al. 2016)."""
    return _cifar_resnet(PreActBasicBlock, 18, **kwargs)


@register_model
def preresnet164(**kwargs) -> ResNet:
    """CIFAR pre-activation ResNet-164 with bottlenecks (He et al. 2016)."""
    return _cifar_resnet(PreActBottleneck, 18, **kwargs)


@register_model
def resnet18(**kwargs) -> ResNet:
    """ImageNet ResNet-18."""
    return _imagenet_resnet(BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model
def resnet34(**kwargs) -> ResNet:
    """ImageNet ResNet-34."""
    return _imagenet_resnet(BasicBlock, [3, 4, 6, 3], **kwargs)


@register_model
def resnet50(**kwargs) -> ResNet:
    """ImageNet ResNet-50, the paper's ImageNet network."""
    return _imagenet_resnet(Bottleneck, [3, 4, 6, 3], **kwargs)


@register_model
def resnet101(**kwargs) -> ResNet:
    """ImageNet ResNet-101."""
    return _imagenet_resnet(Bottleneck, [3, 4, 23, 3], **kwargs)


@register_model
def resnet152(**kwargs) -> ResNet:
    """ImageNet ResNet-152."""
    return _imagenet_resnet(Bottleneck, [3, 8, 36, 3], **kwargs)
