"""A trained run as a Hugging Face Hub folder that timm loads: :func:`export_hub`
(``nlsam export RUN --format hub --out DIR``), and the model card every released weight has
(:func:`model_card`).

The folder holds what timm's ``push_to_hf_hub`` writes: ``config.json`` (timm's layout: the
architecture as a timm name, its ``model_args``, and a ``pretrained_cfg`` with the input size,
mean and std the network trained with), ``model.safetensors`` (the state dict) and ``README.md``
(the model card). Upload it as it is (``huggingface-cli upload USER/NAME DIR``); locally::

    >>> import nlsam, timm
    >>> model = timm.create_model("local-dir:DIR", pretrained=True)   # doctest: +SKIP

loads the network with the weights, giving the run's logits.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .._io import atomic_write_bytes, file_sha256
from ..cost import profile
from ..engine.checkpoint import load_checkpoint, resolve_checkpoint_path
from ..engine.loading import model_from_checkpoint
from ..engine.run_dir import recorded_machines
from ..models import create_model
from ..models.timm_models import register_timm_models, timm_model_name
from .export import check_export

__all__ = ["CardFacts", "export_hub", "hub_config", "model_card"]

#: The files of a Hub folder, in the order they are written.
_HUB_FILES = ("model.safetensors", "config.json", "README.md")

_PAPER_BIBTEX = """@article{chen2020nlsam,
  author  = {Chen, Bingling and Huang, Yan and Xia, Qiaoqiao and Zhang, Qinglin},
  title   = {Nonlocal spatial attention module for image classification},
  journal = {International Journal of Advanced Robotic Systems},
  volume  = {17},
  number  = {5},
  year    = {2020},
  doi     = {10.1177/1729881420938927}
}"""

#: What every figure measured on the CIFAR-10 JPEG copy has to be read with.
_JPEG_COPY_NOTE = (
    "The CIFAR-10 JPEG copy (`cifar10-jpg.zip`: every image of the official CIFAR-10 saved once as "
    "a JPEG, quality 75, in the ImageFolder layout) is a *shifted* data set: akamaster's public "
    "ResNet-20, 91.78% on the official CIFAR-10 test set, scores 81.03% on this copy's test split "
    "(ResNet-56: 93.62% and 83.20%). Top-1 figures on the copy compare with other networks measured "
    "on the copy, not with published CIFAR-10 figures."
)


@dataclass
class CardFacts:
    """What a model card says: one trained network, where it came from and how well it does.

    ``top1`` is the network's own top-1 (%) on ``data``'s test split, with ``top1_how`` saying
    how it was measured (e.g. "fp32 eval of the final weights"); ``variant`` is the seed summary
    of its variant (e.g. "87.21 ± 0.18 % over 3 seeds"), empty when there is none.
    """

    name: str
    model: str  #: the timm name
    arch: str
    attention: Optional[str]
    num_classes: int
    input_size: Tuple[int, int, int]
    mean: Sequence[float]
    std: Sequence[float]
    data: str
    top1: Optional[float]
    top1_how: str
    params: int
    flops: int
    recipe: str = ""  #: the training settings, one line
    command: str = ""  #: the command that trained it
    precision: str = ""
    machine: str = ""
    data_sha256: str = ""
    variant: str = ""
    license: str = "mit"
    notes: List[str] = field(default_factory=list)  #: paragraphs added after "Data"


def _label(attention: Optional[str]) -> str:
    if not attention:
        return "no attention"
    return " + ".join(part.upper().replace("NLSAM", "NL-SAM") for part in attention.split("+"))


def model_card(facts: CardFacts) -> str:
    """The model card (markdown with the Hub's YAML metadata block) of one trained network."""
    c, h, w = facts.input_size
    top1 = f"{facts.top1:.2f}%" if facts.top1 is not None else "not measured"
    if "." in facts.name:  # a released weight: MODEL.TAG
        usage = f'model = timm.create_model("{facts.name}", pretrained=True).eval()'
    else:  # a Hub folder: from the Hub once uploaded, or from the folder itself
        usage = (
            f'model = timm.create_model("hf-hub:USER/{facts.name}", pretrained=True).eval()  '
            f'# or "local-dir:{facts.name}"'
        )
    lines = [
        "---",
        "tags:",
        "- image-classification",
        "- timm",
        "- nlsam",
        "library_name: timm",
        f"license: {facts.license}",
        "---",
        f"# Model card for {facts.name}",
        "",
        f"A {facts.arch} with {_label(facts.attention)} attention, built by nlsam (the nonlocal spatial "
        f"attention module, NL-SAM) and trained on {facts.data}.",
        "",
        "## Model details",
        f"- **Network:** {facts.arch}, attention `{facts.attention or 'none'}` (timm name `{facts.model}`)",
        f"- **Params (M):** {facts.params / 1e6:.3f}",
        f"- **GFLOPs:** {facts.flops / 1e9:.4f} (one {c} x {h} x {w} image, `nlsam profile`)",
        f"- **Image size:** {h} x {w}; mean {tuple(round(x, 4) for x in facts.mean)}, "
        f"std {tuple(round(x, 4) for x in facts.std)}",
        f"- **Classes:** {facts.num_classes}",
        f"- **Data:** {facts.data}" + (f" (sha256 `{facts.data_sha256}`)" if facts.data_sha256 else ""),
    ]
    if facts.recipe:
        lines.append(f"- **Recipe:** {facts.recipe}")
    if facts.command:
        lines.append(f"- **Command:** `{facts.command}`")
    if facts.precision or facts.machine:
        lines.append(
            f"- **Trained in:** {facts.precision or 'precision not recorded'}"
            + (f" on {facts.machine}" if facts.machine else "")
        )
    lines += [
        f"- **Licence:** {facts.license.upper() if facts.license == 'mit' else facts.license}",
        "- **Paper:** Nonlocal spatial attention module for image classification (Chen et al., 2020), "
        "https://doi.org/10.1177/1729881420938927",
        "",
        "## Results",
        f"- **Top-1:** {top1} ({facts.top1_how})",
    ]
    if facts.variant:
        lines.append(f"- **Its variant over seeds:** {facts.variant}")
    lines += ["", "## Data"]
    if "jpeg copy" in facts.data.lower():
        lines.append(_JPEG_COPY_NOTE)
    else:
        lines.append(f"Trained and measured on {facts.data}.")
    for note in facts.notes:
        lines += ["", note]
    lines += [
        "",
        "## Usage",
        "```python",
        "import nlsam, timm",
        "",
        usage,
        "```",
        "",
        "## Citation",
        "```bibtex",
        _PAPER_BIBTEX,
        "```",
        "",
    ]
    return "\n".join(lines)


def hub_config(model: nn.Module, config: Mapping[str, Any], meta: Mapping[str, Any]) -> Dict[str, Any]:
    """``config.json`` in timm's layout for the network a run's ``config`` and data ``meta``
    describe (``model`` is that network; it gives the number of features)."""
    size = tuple(meta["input_size"])
    model_args: Dict[str, Any] = dict(config.get("model_options") or {})
    model_args["input_size"] = list(size)
    if int(meta.get("in_chans", 3)) != 3:
        model_args["in_chans"] = int(meta["in_chans"])
    num_classes = len(meta["classes"])
    return {
        "architecture": timm_model_name(config["model"], config.get("attention")),
        "num_classes": num_classes,
        "num_features": int(getattr(model, "num_features", 0)),
        "global_pool": "avg",
        "model_args": model_args,
        "label_names": list(meta["classes"]),
        "pretrained_cfg": {
            "input_size": [int(meta.get("in_chans", 3)), *size],
            "fixed_input_size": False,
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": list(meta["mean"]),
            "std": list(meta["std"]),
            "num_classes": num_classes,
            "first_conv": "conv1",
            "classifier": "fc",
            "license": "mit",
        },
        "nlsam": {"model": config["model"], "attention": config.get("attention")},
    }


def _run_card_facts(state: Mapping[str, Any], model: nn.Module, name: str, machines: Sequence[str] = ()) -> CardFacts:
    """The card of a checkpoint ``state``'s network: its last recorded test top-1, its recipe,
    precision and ``machines`` as the run recorded them, and its cost from :func:`nlsam.profile`."""
    config, meta = state["config"], state.get("meta", {})
    size = (int(meta.get("in_chans", 3)), *tuple(meta["input_size"]))
    cost = profile(model, input_size=size)
    data_path = Path(str(config.get("data") or ""))
    data = str(meta.get("data") or config.get("data") or "")
    metrics = state.get("metrics") or {}
    top1 = metrics.get("test_top1")
    epochs = metrics.get("epoch", state.get("epoch"))
    recipe = (
        f"{config.get('epochs')} epochs ({epochs} trained), batch {config.get('batch_size')}, "
        f"{config.get('optimizer')} lr {config.get('lr')} ({config.get('scheduler')}), weight decay "
        f"{config.get('weight_decay')}, label smoothing {config.get('label_smoothing')}, seed {config.get('seed')}"
    )
    return CardFacts(
        name=name,
        model=timm_model_name(config["model"], config.get("attention")),
        arch=config["model"],
        attention=config.get("attention"),
        num_classes=len(meta["classes"]),
        input_size=size,
        mean=meta["mean"],
        std=meta["std"],
        data=data,
        data_sha256=file_sha256(data_path) if data_path.is_file() else "",
        top1=float(top1) if top1 is not None else None,
        top1_how=f"test split, as evaluated at the end of epoch {epochs} during training",
        params=int(cost.params),
        flops=int(cost.flops),
        recipe=recipe,
        precision=str(state.get("precision") or ""),
        machine=", ".join(str(m) for m in machines),
    )


def _check_target(out: Path) -> None:
    """``out`` must be a new or empty folder, or one this function wrote before (its
    ``config.json`` names nlsam); nothing of anyone else's is overwritten."""
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"--out {out} is a file; --format hub writes a folder (config.json, model.safetensors, README.md)"
        )
    if not out.is_dir():
        return
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    config = out / "config.json"
    ours = False
    if config.is_file() and set(entries) <= set(_HUB_FILES):
        try:
            ours = "nlsam" in json.loads(config.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            ours = False
    if not ours:
        raise ValueError(
            f"--out {out} is a folder with other files ({', '.join(entries[:5])}); "
            f"give a new or empty folder (a Hub folder nlsam wrote before is replaced)"
        )


def export_hub(
    checkpoint: Union[str, Path], out: Union[str, Path], *, check: bool = True, tolerance: float = 1e-5
) -> Dict[str, Any]:
    """Write a checkpoint (or run directory) as a Hub folder ``out`` (see the module docstring).

    With ``check``, the folder is loaded back (through timm's ``local-dir:`` when timm is
    installed, else through nlsam) and its logits compared with the checkpoint's network on
    random inputs (:func:`nlsam.analysis.export.check_export`, batches 1 and 3); the largest difference relative to max(1, max |logit|) must be within
    ``tolerance``, else nothing is left in ``out``. Returns ``{"path", "files", "max_diff",
    "loader"}``.
    """
    from safetensors.torch import save

    out = Path(out)
    _check_target(out)
    path = resolve_checkpoint_path(checkpoint)
    state = load_checkpoint(path)
    model = model_from_checkpoint(state)
    name = out.name or "model"
    config = hub_config(model, state["config"], state.get("meta", {}))
    card = model_card(_run_card_facts(state, model, name, recorded_machines(path.parent)))
    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    for file_name, data in (
        ("model.safetensors", save(weights)),
        ("config.json", (json.dumps(config, indent=2) + "\n").encode()),
        ("README.md", card.encode()),
    ):
        atomic_write_bytes(out / file_name, data)
        written.append(out / file_name)
    result: Dict[str, Any] = dict(path=str(out), files=[str(p) for p in written], max_diff=None, loader="")
    if check:
        try:
            reloaded, loader = _reload(out)
            with torch.no_grad():
                diff = max(check_export(model, reloaded.eval()).values())
        except Exception:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        if not diff <= tolerance:
            for p in written:
                p.unlink(missing_ok=True)
            raise ValueError(
                f"the Hub folder's network differs from the checkpoint's by up to {diff:.3g} of the "
                f"logits' scale (tolerance {tolerance:g}); nothing written"
            )
        result.update(max_diff=diff, loader=loader)
    return result


def _reload(folder: Path) -> Tuple[nn.Module, str]:
    """The network of a Hub folder, through timm when it is installed."""
    if importlib.util.find_spec("timm") is not None:
        import timm

        register_timm_models()
        return timm.create_model(f"local-dir:{folder}", pretrained=True).eval(), "timm local-dir:"
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    args = dict(config["model_args"])
    args["input_size"] = tuple(args["input_size"])
    model = create_model(
        config["nlsam"]["model"], attention=config["nlsam"]["attention"], num_classes=config["num_classes"], **args
    )
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval(), "nlsam"
