"""timm integration: nlsam's networks as ``timm.create_model`` entry points.

After ``import nlsam`` (timm is optional), every network of :mod:`nlsam.models` is available
to timm under the name ``{attention}_{arch}``::

    >>> import nlsam, timm
    >>> model = timm.create_model("nlsam_resnet50")              # ResNet-50 + NL-SAM
    >>> model = timm.create_model("se_nlsam_resnet110", num_classes=100)
    >>> timm.list_models("*nlsam_*")                              # every NL-SAM network

Naming scheme, ``{attention}_{arch}``:

===============  ==========================  ==========================================
``attention``    nlsam ``attention=``        meaning
===============  ==========================  ==========================================
``nlsam``        ``"nlsam"``                 NL-SAM alone
``se_nlsam``     ``"se+nlsam"``              SE, then NL-SAM
``ge_nlsam``     ``"ge+nlsam"``              gather-excite, then NL-SAM
``cbam_nlsam``   ``"cbam+nlsam"``            CBAM with NL-SAM as its spatial gate
``se``           ``"se"``                    baseline: squeeze-and-excitation
``ge``           ``"ge"``                    baseline: gather-excite
``cbam``         ``"cbam"``                  baseline: CBAM
``bam``          ``"bam"``                   baseline: BAM (once between stages)
``base``         ``None``                    baseline: the same ResNet, no attention
===============  ==========================  ==========================================

and ``arch`` one of the ImageNet networks ``resnet18 resnet34 resnet50 resnet101 resnet152``
(224 x 224 inputs, 1000 classes) or the CIFAR networks ``resnet20 resnet32 resnet44 resnet56
resnet110 resnet164 preresnet110 preresnet164`` (32 x 32 inputs, 10 classes). None of these
names is one of timm's own (timm's SE-ResNet is ``seresnet50``; ``se_resnet50`` here is nlsam's,
built by the same code as the NL-SAM networks so that comparisons are like for like).
``timm.list_models(module="timm_models")`` lists them all.

Keyword arguments of ``timm.create_model`` reach :class:`nlsam.models.ResNet` and override the
builder's defaults: ``num_classes``, ``in_chans``, ``drop_rate``, ``input_size`` (or timm's
``img_size``; the training resolution, which sizes NL-SAM's layers), ``shortcut``,
``zero_init_residual`` and the attention options of :mod:`nlsam.attention.registry`
(``nlsam_stages``, ``nlsam_pool``, ``nlsam_reduction``, ``nlsam_interpolation``,
``channel_stages``, ``channel_reduction``, ``attention_init``...). The attention is fixed by the name.
``features_only=True`` (with ``out_indices``) returns the output of every stage, as listed in
``model.feature_info``.

nlsam's released weights (:func:`nlsam.list_pretrained`) are timm pretrained tags,
``MODEL.TAG``: ``timm.list_pretrained("*nlsam*")`` lists them, ``timm.create_model(
"ge_nlsam_resnet20.c10jpg_30ep", pretrained=True)`` loads one, and a network with a released
weight loads it as its default tag (``timm.create_model("ge_nlsam_resnet20", pretrained=True)``).
Every other network raises on ``pretrained=True`` unless a weight source is given, e.g.
``pretrained_cfg_overlay=dict(file="resnet50_a1_in1k.pth")`` (timm then drops or adapts the
classifier ``fc`` and first convolution ``conv1`` as usual), or use ``checkpoint_path=``. A timm
or torchvision ResNet's state dict works as such a file: its names are mapped onto nlsam's and
the attention modules keep their init (``attention_init="identity"`` to start as the identity).

Registration is lazy: importing this module does not import timm (which would add seconds to
``import nlsam``). If timm is already imported the models are registered at once; otherwise a
one-shot import hook registers them right after timm's own import finishes. If timm is not
installed nothing happens. :func:`register_timm_models` registers explicitly.
"""

from __future__ import annotations

import importlib.abc
import inspect
import math
import sys
import threading
import warnings
from functools import partial
from typing import Any, Callable, Dict, Optional, Tuple

from .._normalisation import CIFAR10_MEAN, CIFAR10_STD
from .._normalisation import IMAGENET_MEAN as _IMAGENET_MEAN
from .._normalisation import IMAGENET_STD as _IMAGENET_STD
from .._sizes import to_2tuple
from ..attention import check_attention_name, list_attention
from .factory import create_model as _nlsam_create_model
from .pretrained import _full_state_dict
from .registry import _ATTENTION_OPTIONS
from .registry import is_model as _nlsam_is_model
from .released import PretrainedWeight, list_pretrained, shipped_file
from .resnet import _CIFAR_DEFAULTS, _IMAGENET_DEFAULTS, ResNet

__all__ = [
    "ATTENTION_TAGS",
    "CIFAR_ARCHS",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_ARCHS",
    "TIMM_MODEL_NAMES",
    "model_of_timm_name",
    "register_timm_models",
    "timm_model_name",
]

# model-name prefix -> nlsam attention composition (None: no attention), from the attention
# registry: "se+nlsam" is "se_nlsam"; compositions registered after this import get no timm names
ATTENTION_TAGS: Dict[str, Optional[str]] = {
    **{name.replace("+", "_"): name for name in list_attention()},
    "base": None,
}
IMAGENET_ARCHS: Tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
CIFAR_ARCHS: Tuple[str, ...] = (
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet164",
    "preresnet110",
    "preresnet164",
)

# name -> (arch, attention)
_VARIANTS: Dict[str, Tuple[str, Optional[str]]] = {
    f"{tag}_{arch}": (arch, attention)
    for tag, attention in ATTENTION_TAGS.items()
    for arch in IMAGENET_ARCHS + CIFAR_ARCHS
}
TIMM_MODEL_NAMES: Tuple[str, ...] = tuple(_VARIANTS)

# keyword arguments that timm's create_model / build_model_with_cfg consume themselves
_TIMM_KWARGS = frozenset(
    {
        "pretrained_cfg",
        "pretrained_cfg_overlay",
        "cache_dir",
        "pretrained_model_args",
        "features_only",
        "out_indices",
        "feature_cls",
        "feature_cfg",
        "pretrained_strict",
    }
)


def _resnet_kwargs() -> Optional[frozenset]:
    """The keyword arguments ResNet accepts (None: it takes any, or the attention options that
    :func:`nlsam.create_model` checks and splits, so nothing to check here)."""
    params = list(inspect.signature(ResNet.__init__).parameters.values())
    if any(p.kind == p.VAR_KEYWORD or p.name == _ATTENTION_OPTIONS for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)) - {
        "self",
        "block",
        "layers",
        "widths",
    }


_lock = threading.RLock()
_registered = False
default_cfgs: Dict[str, Any] = {}  # filled by register_timm_models; timm's register_model reads it


def timm_model_name(arch: str, attention: Optional[str] = "nlsam") -> str:
    """The timm name of nlsam network ``arch`` with ``attention`` (an nlsam composition name):
    ``timm_model_name("resnet50", "se+nlsam") == "se_nlsam_resnet50"``."""
    attention = check_attention_name(attention)
    for tag, value in ATTENTION_TAGS.items():
        if value == attention:
            name = f"{tag}_{arch}"
            if name in _VARIANTS:
                return name
    valid = ", ".join(IMAGENET_ARCHS + CIFAR_ARCHS)
    raise ValueError(f"no timm entry point for arch {arch!r}; valid: {valid}")


def model_of_timm_name(name: str) -> Tuple[str, Optional[str]]:
    """``(arch, attention)`` of a timm name: ``model_of_timm_name("se_nlsam_resnet50") ==
    ("resnet50", "se+nlsam")``; a ``ValueError`` for a name that is none of nlsam's."""
    if name not in _VARIANTS:
        raise ValueError(
            f"{name!r} is not one of nlsam's timm names ({{attention}}_{{arch}}, e.g. "
            f"nlsam_resnet20, se_nlsam_resnet50; TIMM_MODEL_NAMES lists them)"
        )
    return _VARIANTS[name]


def _family(arch: str) -> str:
    return "imagenet" if arch in IMAGENET_ARCHS else "cifar"


def _builder_defaults(arch: str) -> dict:
    return _IMAGENET_DEFAULTS if _family(arch) == "imagenet" else _CIFAR_DEFAULTS


def _num_stages(arch: str) -> int:
    return 4 if _family(arch) == "imagenet" else 3


def _output_stride(arch: str) -> int:
    return 32 if _family(arch) == "imagenet" else 4


def _spatial_size(value: Any, name: str) -> Tuple[int, int]:
    """An input size as (H, W); a timm-style (C, H, W) triple is accepted too."""
    if not isinstance(value, int) and len(tuple(value)) == 3:
        value = tuple(value)[1:]
    return to_2tuple(value, name)


def _channels(value: Any) -> Optional[int]:
    """The C of a timm-style (C, H, W) input size, else None."""
    if not isinstance(value, int) and len(tuple(value)) == 3:
        return tuple(value)[0]
    return None


def _pool_size(arch: str, size: Tuple[int, int]) -> Tuple[int, int]:
    stride = _output_stride(arch)
    return math.ceil(size[0] / stride), math.ceil(size[1] / stride)


def _label(attention: str) -> str:
    return " + ".join(part.upper().replace("NLSAM", "NL-SAM") for part in attention.split("+"))


def _cfg(arch: str, attention: Optional[str]) -> Dict[str, Any]:
    defaults = _builder_defaults(arch)
    size = to_2tuple(defaults["input_size"])
    what = f"{_label(attention)} attention" if attention else "no attention"
    common = dict(
        url="",
        num_classes=defaults["num_classes"],
        input_size=(3, *size),
        pool_size=_pool_size(arch, size),
        interpolation="bilinear",
        first_conv="conv1",
        classifier="fc",
    )
    if _family(arch) == "imagenet":
        return dict(
            common,
            crop_pct=0.875,
            mean=_IMAGENET_MEAN,
            std=_IMAGENET_STD,
            description=f"ImageNet {arch} with {what} (nlsam); no pretrained weights",
        )
    return dict(
        common,
        crop_pct=1.0,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        description=f"CIFAR {arch} with {what} (nlsam); no pretrained weights",
    )


def _released_cfg(weight: PretrainedWeight, path: str) -> Dict[str, Any]:
    """The pretrained cfg of a released weight shipped at ``path``."""
    base = _cfg(weight.arch, weight.attention)
    return dict(
        base,
        file=path,
        num_classes=weight.num_classes,
        input_size=weight.input_size,
        pool_size=_pool_size(weight.arch, (weight.input_size[1], weight.input_size[2])),
        mean=weight.mean,
        std=weight.std,
        label_names=weight.classes,
        license=weight.license.lower(),
        description=f"{base['description'].split(';')[0]}; trained {weight.epochs} epochs on {weight.data}, "
        f"top-1 {weight.top1:.2f}% (nlsam.list_pretrained())",
        paper_ids="doi:10.1177/1729881420938927",
    )


def _pretrained_cfgs() -> Dict[str, Any]:
    """Every network's cfg (no weights) and, after it, one per shipped released weight: timm
    then makes the release its network's default tag."""
    cfgs: Dict[str, Any] = {name: _cfg(arch, attention) for name, (arch, attention) in _VARIANTS.items()}
    for weight in list_pretrained():
        path = shipped_file(weight)
        if weight.model in _VARIANTS and path is not None:
            cfgs[weight.name] = _released_cfg(weight, str(path))
    return cfgs


def _has_weight_source(cfg: Any) -> bool:
    return bool(
        getattr(cfg, "url", None)
        or getattr(cfg, "file", None)
        or getattr(cfg, "hf_hub_id", None)
        or getattr(cfg, "state_dict", None)
    )


def _create(variant: str, arch: str, attention: Optional[str], pretrained: bool = False, /, **kwargs):
    from timm.models import build_model_with_cfg, resolve_pretrained_cfg

    if "attention" in kwargs:
        requested = check_attention_name(kwargs.pop("attention"))
        if requested != attention:
            raise ValueError(
                f"the attention of {variant!r} is fixed by its name ({attention!r}); for "
                f"{requested!r} create {timm_model_name(arch, requested)!r}"
            )

    # timm spells the spatial size img_size; nlsam's ResNet calls it input_size
    img_size = kwargs.pop("img_size", None)
    if img_size is not None:
        if "input_size" in kwargs and _spatial_size(kwargs["input_size"], "input_size") != (
            _spatial_size(img_size, "img_size")
        ):
            raise ValueError(f"img_size={img_size!r} and input_size={kwargs['input_size']!r} disagree; give one")
        kwargs["input_size"] = img_size
    if "input_size" in kwargs:
        chans = _channels(kwargs["input_size"])
        if chans is not None:
            if kwargs.setdefault("in_chans", chans) != chans:
                raise ValueError(
                    f"input_size={kwargs['input_size']!r} and in_chans={kwargs['in_chans']!r} disagree; give one"
                )
        kwargs["input_size"] = _spatial_size(kwargs["input_size"], "input_size")

    global_pool = kwargs.pop("global_pool", "avg")
    if global_pool not in ("avg", ""):
        raise ValueError(f"unsupported global_pool {global_pool!r}; valid: 'avg', '' (no pooling)")
    if global_pool == "" and kwargs.get("num_classes", 1) != 0 and not kwargs.get("features_only"):
        raise ValueError("global_pool='' (no pooling) needs num_classes=0 (no classifier)")
    device = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)

    accepted = _resnet_kwargs()
    unknown = [] if accepted is None else sorted(set(kwargs) - accepted - _TIMM_KWARGS)
    if accepted is not None and unknown:
        valid = ", ".join(sorted(accepted - {"attention"}))
        raise TypeError(
            f"{variant}: unexpected keyword argument(s) {', '.join(unknown)}; the nlsam ResNet "
            f"accepts {valid} (plus timm's img_size, global_pool, device, dtype, features_only, "
            f"out_indices, feature_cls, pretrained_cfg, pretrained_cfg_overlay)"
        )

    # the pretrained cfg describes the network as built: record a non-default input size there
    # (there are no weights whose training resolution it would otherwise document)
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    if "input_size" in kwargs and "input_size" not in overlay:
        size = kwargs["input_size"]
        if size != to_2tuple(_builder_defaults(arch)["input_size"]):
            overlay["input_size"] = (3, *size)
            overlay.setdefault("pool_size", _pool_size(arch, size))

    if pretrained:
        cfg = resolve_pretrained_cfg(
            variant,
            pretrained_cfg=kwargs.get("pretrained_cfg"),
            pretrained_cfg_overlay=overlay,
        )
        if not _has_weight_source(cfg):
            released = ", ".join(w.name for w in list_pretrained()) or "none"
            raise RuntimeError(
                f"nlsam publishes no pretrained weights for {variant!r} (released: {released}); create it with "
                f"pretrained=False (the default) and train it, or load your own weights with "
                f"timm.create_model({variant!r}, pretrained=True, "
                f"pretrained_cfg_overlay=dict(file='checkpoint.pth')) or checkpoint_path=..."
            )

    # FeatureListNet finds the stages ("stages.layerN" in feature_info) one Sequential deep
    feature_cfg = dict(flatten_sequential=True, out_indices=tuple(range(_num_stages(arch))))
    feature_cfg.update(kwargs.pop("feature_cfg", None) or {})
    model = build_model_with_cfg(
        partial(_nlsam_create_model, arch),
        variant,
        pretrained,
        pretrained_cfg_overlay=overlay or None,
        pretrained_filter_fn=_pretrained_filter,
        feature_cfg=feature_cfg,
        attention=attention,
        **kwargs,
    )
    if global_pool != "avg" and isinstance(model, ResNet):  # a features_only model has no head
        model.reset_classifier(model.num_classes, global_pool=global_pool)
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


def _pretrained_filter(state_dict: Dict[str, Any], model: Any) -> Dict[str, Any]:
    """timm's hook between reading weights and loading them: torchvision / timm ResNet names
    (``layer1.0.conv1``) become nlsam's (``stages.layer1.0.conv1``); attention keeps its init."""
    return _full_state_dict(model, state_dict)


def _make_entrypoint(name: str, arch: str, attention: Optional[str]) -> Callable[..., Any]:
    def entrypoint(pretrained: bool = False, **kwargs):
        return _create(name, arch, attention, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    what = f"attention {attention!r}" if attention else "no attention"
    entrypoint.__doc__ = (
        f"nlsam {arch} with {what}, as a timm entry point (no pretrained weights). Keyword "
        f"arguments override the defaults of ``nlsam.create_model({arch!r}, ...)``."
    )
    return entrypoint


def register_timm_models() -> bool:
    """Register nlsam's networks with timm (see the module docstring for the names).

    Idempotent. Returns False (and does nothing) when timm is not installed.
    """
    global _registered, default_cfgs
    with _lock:
        if _registered:
            return True
        try:
            from timm.models import generate_default_cfgs, register_model
        except ImportError:
            return False

        module = sys.modules[__name__]
        default_cfgs = generate_default_cfgs(_pretrained_cfgs())
        public = list(__all__)
        for name, (arch, attention) in _VARIANTS.items():
            if not _nlsam_is_model(arch):  # pragma: no cover - the builders live in resnet.py
                raise RuntimeError(f"nlsam has no builder {arch!r} for timm entry point {name!r}")
            fn = _make_entrypoint(name, arch, attention)
            setattr(module, name, fn)
            register_model(fn)
        # timm's register_model appends each entry point to the module's __all__; they are timm's
        # names (TIMM_MODEL_NAMES lists them), not this module's API
        __all__[:] = public
        _registered = True
        _remove_hook()
        return True


# --- registration when timm gets imported -----------------------------------------------------


class _TimmImportHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of the top-level ``timm`` package so that
    :func:`register_timm_models` runs once timm's own ``__init__`` has finished."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "timm":
            return None
        spec = None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_register(module):
            try:
                exec_module(module)
            finally:
                try:
                    del loader.exec_module  # back to the class's method
                except AttributeError:
                    pass
            try:
                register_timm_models()
            except Exception as error:  # never break `import timm` itself
                warnings.warn(f"nlsam: could not register its models with timm: {error!r}", stacklevel=2)

        try:
            loader.exec_module = exec_then_register
        except AttributeError:  # a loader that does not take attributes: leave timm alone
            pass
        return spec


_hook: Optional[_TimmImportHook] = None


def _remove_hook() -> None:
    global _hook
    if _hook is not None:
        try:
            sys.meta_path.remove(_hook)
        except ValueError:
            pass
        _hook = None


def _install() -> None:
    global _hook
    with _lock:
        if sys.modules.get("timm") is not None and register_timm_models():
            return
        if _hook is None and not _registered:
            _hook = _TimmImportHook()
            sys.meta_path.insert(0, _hook)


_install()
