"""What the benchmarks of NL-SAM's cost share: random networks with a trained network's activation
scale, their ONNX export the way ``nlsam export`` writes it, onnxruntime sessions, the page's
printing and writing.

The benchmark scripts import it by name (``from _common import ...``): Python puts a script's
folder first on ``sys.path`` when it runs, and each script adds it when it is imported by path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import torch
from torch import nn

from nlsam.analysis.export import export_model
from nlsam.engine.checkpoint import save_checkpoint

if TYPE_CHECKING:
    import onnxruntime


@torch.no_grad()
def set_batchnorm_statistics(
    model: nn.Module, shape: Tuple[int, int, int], batches: int = 2, batch_size: int = 8, seed: int = 0
) -> None:
    """Replace the running statistics of every batch-norm layer by those of ``batches`` random
    batches of ``shape`` (C, H, W) (a cumulative average) and leave ``model`` in eval mode, so
    that activations and logits have the scale of a trained network's. Fresh statistics (mean 0,
    variance 1) let the plain ResNet-50's logits grow to about 100, where float32 rounding alone
    brings onnxruntime near ``nlsam export``'s check tolerance (1e-4). The time of a forward
    pass does not depend on these values."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(batches):
        model(torch.randn(batch_size, *shape, generator=generator))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


@torch.no_grad()
def share_weights(model: nn.Module, partner: nn.Module) -> int:
    """Copy into ``model`` every parameter and buffer of ``partner`` it has too: the same name
    and shape, or the same shape where a block's one attention module became the first or only
    part of a composition (``attention.X`` and ``attention.0.X``). Seeded construction alone
    does not give a pair the same backbone weights: the attention modules built between its
    layers draw from the random stream. Returns the number of tensors copied."""
    source = partner.state_dict()
    copied = 0
    for name, tensor in model.state_dict().items():
        candidates = (name, name.replace(".attention.0.", ".attention."), name.replace(".attention.", ".attention.0."))
        for candidate in candidates:
            if candidate in source and source[candidate].shape == tensor.shape:
                tensor.copy_(source[candidate])
                copied += 1
                break
    return copied


def export_onnx(
    model: nn.Module,
    name: str,
    attention: Optional[str],
    shape: Tuple[int, int, int],
    path: Path,
    exporter: str = "auto",
) -> Dict:
    """Export ``model`` (``nlsam.create_model(name, attention=attention)`` built for input
    ``shape``) to ``path`` the way ``nlsam export CHECKPOINT --format onnx`` does: saved as an
    nlsam checkpoint beside ``path``, then :func:`~nlsam.analysis.export.export_model`, which
    rebuilds the network, exports it and checks the file against PyTorch in onnxruntime. The
    checkpoint is removed afterwards (the ONNX file holds the weights). Returns export_model's
    result."""
    channels, height, width = shape
    checkpoint = path.with_suffix(".pt")
    save_checkpoint(
        dict(
            model=model.state_dict(),
            config=dict(model=name, attention=attention, model_options={}),
            meta=dict(
                classes=[str(i) for i in range(model.num_classes)],
                in_chans=channels,
                input_size=[height, width],
                mean=[0.0] * channels,
                std=[1.0] * channels,
                data="random",
            ),
        ),
        checkpoint,
    )
    try:
        return export_model(checkpoint, "onnx", path, exporter=exporter)
    finally:
        checkpoint.unlink()


def onnx_session(path: Path, threads: int) -> "onnxruntime.InferenceSession":
    """An onnxruntime session on the CPU execution provider with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnxruntime_version() -> str:
    """onnxruntime's version, or "not installed"."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "not installed"
    return ort.__version__


def plural(n: int, word: str) -> str:
    """``1 round``, ``7 rounds``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def publish(text: str, out: Optional[Path]) -> str:
    """Print a benchmark's Markdown page, write it to ``out`` when given, and return it."""
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return text
