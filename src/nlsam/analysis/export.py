"""A trained network as ONNX, TorchScript or safetensors, checked against PyTorch
(``nlsam export``).

* ``onnx``: ``torch.onnx.export`` (the ``torch.export``-based exporter, which needs
  ``onnxscript``; the TorchScript-based one on PyTorch < 2.6). Input ``input`` (B x 3 x H x W,
  H x W = the training size), output ``logits`` (B x classes), dynamic batch size. The classes,
  mean, std and config are in the model's ``metadata_props`` (``nlsam_meta``,
  ``nlsam_config``, JSON).
* ``torchscript``: ``torch.jit.script``; any batch and input size. ``torch.jit.load(path,
  _extra_files={"nlsam.json": ""})`` also returns the metadata.
* ``safetensors``: the state dict, with the config and metadata (JSON) in the header;
  :func:`load_safetensors` rebuilds the network.

The file is first produced in memory, loaded back and run on random inputs at batch sizes 1
and 3 (onnxruntime for ONNX); only when the largest difference from PyTorch's logits, measured
against the logits' scale (the largest ``|logit|``, or 1 for smaller logits), is within
``tolerance`` (1e-4) is it written, atomically: float32 kernels that sum in another order differ in
proportion to the values, so a fixed absolute bound fails networks with large logits. Nothing is written otherwise. Where the
file goes (``--out``: a file, not a directory, in a place that can be written) is checked before
any of this work, and every error names that file.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import torch
from torch import nn

from .._io import write_target
from .._optional import require
from ..engine.checkpoint import resolve_checkpoint_path
from ..engine.evaluate import check_finite_outputs
from ..engine.loading import model_from_checkpoint
from ..version import __version__
from .figures import write_files
from .predict import Inspected, _data_config, load_inspected

__all__ = ["check_export", "export_model", "load_safetensors"]

_FORMATS = ("onnx", "torchscript", "safetensors")
_SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".safetensors"}
_CHECK_BATCHES = (1, 3)
_SAFETENSORS_FORMAT = "nlsam-safetensors-1"


def _metadata(inspected: Inspected) -> Dict[str, str]:
    cfg = inspected.data_config
    # the checkpoint's own "meta" layout: input_size is the training (H, W)
    meta = dict(
        classes=inspected.classes,
        input_size=list(cfg["input_size"][1:]),
        in_chans=cfg["input_size"][0],
        mean=list(cfg["mean"]),
        std=list(cfg["std"]),
        data=inspected.meta.get("data"),
    )
    return dict(
        nlsam_version=__version__, nlsam_meta=json.dumps(meta), nlsam_config=json.dumps(inspected.config, default=str)
    )


def _quiet(fn: Callable, *args, **kwargs):
    """Call ``fn`` without the deprecation chatter of torch.jit / torch.onnx."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ------------------------------------------------------------------------------------------
# the three formats: produce bytes, and a runner of the bytes for the check
# ------------------------------------------------------------------------------------------


def _onnx_bytes(inspected: Inspected, opset: Optional[int], exporter: str) -> bytes:
    onnx = require("onnx", "ONNX export")
    model = inspected.model
    example = torch.zeros(2, *inspected.data_config["input_size"])
    names = dict(input_names=["input"], output_names=["logits"])
    if exporter == "auto":
        exporter = "dynamo" if tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 6) else "legacy"
    if exporter not in ("dynamo", "legacy"):
        raise ValueError(f"unknown ONNX exporter {exporter!r}; valid: auto, dynamo, legacy")
    if exporter == "dynamo":
        require("onnxscript", "ONNX export")
        if opset is not None and opset < 18:
            raise ValueError(f"--opset {opset}: the torch.export-based ONNX exporter writes opset 18 or later")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            if exporter == "dynamo":
                program = _quiet(
                    torch.onnx.export,
                    model,
                    (example,),
                    dynamo=True,
                    verbose=False,
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                    opset_version=opset,
                    **names,
                )
                program.save(str(path))
            else:
                _quiet(
                    torch.onnx.export,
                    model,
                    (example,),
                    str(path),
                    dynamo=False,
                    dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                    opset_version=opset or 17,
                    **names,
                )
        except Exception as exc:  # the exporters raise many kinds; report one line
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            raise ValueError(f"ONNX export of {inspected.label} failed ({exporter} exporter): {lines[0]}") from None
        proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, _metadata(inspected))
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _onnx_runner(data: bytes) -> Callable[[torch.Tensor], torch.Tensor]:
    ort = require("onnxruntime", "checking the ONNX file")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def _torchscript_bytes(inspected: Inspected) -> bytes:
    try:
        scripted = _quiet(torch.jit.script, inspected.model)
    except Exception as exc:  # TorchScript rejects some Python constructs
        raise ValueError(f"torch.jit.script failed on {inspected.label}: {str(exc).splitlines()[0]}") from None
    buffer = io.BytesIO()
    _quiet(torch.jit.save, scripted, buffer, _extra_files={"nlsam.json": json.dumps(_metadata(inspected))})
    return buffer.getvalue()


def _torchscript_runner(data: bytes) -> Callable[[torch.Tensor], torch.Tensor]:
    module = _quiet(torch.jit.load, io.BytesIO(data), map_location="cpu")
    return module


def _safetensors_bytes(inspected: Inspected) -> bytes:
    require("safetensors", "safetensors export")
    from safetensors.torch import save

    state = {k: v.detach().contiguous() for k, v in inspected.model.state_dict().items()}
    return save(state, metadata=dict(_metadata(inspected), format=_SAFETENSORS_FORMAT))


def _safetensors_runner(data: bytes) -> Callable[[torch.Tensor], torch.Tensor]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(data)
        return load_safetensors(path)


def load_safetensors(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Rebuild a network from a file written by ``nlsam export --format safetensors``.

    The result is what :func:`nlsam.load_model` gives for the checkpoint: eval mode, with
    ``classes``, ``input_size`` and ``data_config``.
    """
    require("safetensors", "reading safetensors files")
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"cannot read safetensors file {path}: {exc}") from None
    if metadata.get("format") != _SAFETENSORS_FORMAT:
        raise ValueError(f"{path} was not written by nlsam export (no '{_SAFETENSORS_FORMAT}' format tag)")
    model = model_from_checkpoint(
        dict(config=json.loads(metadata["nlsam_config"]), meta=json.loads(metadata["nlsam_meta"]), model=state)
    )
    return model.to(device)


# ------------------------------------------------------------------------------------------


def _default_output(checkpoint_path: Path, fmt: str) -> Path:
    """``runs/x/best.pt`` -> ``runs/x/best.onnx`` (``.torchscript.pt``, ``.safetensors``)."""
    return checkpoint_path.with_name(checkpoint_path.stem + _SUFFIXES[fmt])


def _check_writable(path: Path, what: str = "--out") -> None:
    """Raise a one-line ValueError, starting with ``what``, unless a file can be created at
    ``path``: its nearest existing ancestor must be a directory in which a file can be made
    (tried for real: permissions, read-only file systems and /proc all say no that way).
    A character device or a FIFO (``/dev/null``), which is written directly, must be writable
    itself; a symbolic link is checked as the file it points to (:func:`nlsam._io.write_target`)."""
    try:
        target, direct = write_target(path)
    except (ValueError, OSError) as exc:  # a block device, a socket, a symbolic link loop
        raise ValueError(f"{what}: {exc}") from None
    if direct:
        if not os.access(target, os.W_OK):
            raise ValueError(f"{what}: {target} cannot be written (no write permission)")
        return
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what}: {parent} is not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{target.name}.", suffix=".tmp"):
            pass
    except OSError as exc:
        raise ValueError(f"{what}: cannot create files in {parent} ({exc.strerror or exc})") from None


@torch.no_grad()
def _check_finite(model: nn.Module) -> None:
    """Broken weights (NaN/inf) are named before any export work, not blamed on the exporter."""
    x = torch.randn(1, *_data_config(model)["input_size"], generator=torch.Generator().manual_seed(0))
    check_finite_outputs(model, model(x), "on a random input")


@torch.no_grad()
def check_export(
    model: nn.Module, runner: Callable[[torch.Tensor], torch.Tensor], batches=_CHECK_BATCHES, seed: int = 0
) -> Dict[int, float]:
    """Largest difference between ``runner`` and ``model`` logits at each batch size, divided by
    the logits' scale: ``max |runner(x) - model(x)| / max(1, max |model(x)|)``."""
    g = torch.Generator().manual_seed(seed)
    diffs = {}
    for batch in batches:
        x = torch.randn(batch, *_data_config(model)["input_size"], generator=g)
        expected = model(x)
        got = runner(x)
        if tuple(got.shape) != tuple(expected.shape):
            raise ValueError(
                f"exported model gives shape {tuple(got.shape)} at batch {batch}, PyTorch {tuple(expected.shape)}"
            )
        scale = max(1.0, float(expected.float().abs().max()))
        diffs[batch] = float((got.float() - expected.float()).abs().max()) / scale
    return diffs


def export_model(
    checkpoint: Union[str, Path],
    fmt: str,
    out: Optional[Union[str, Path]] = None,
    tolerance: float = 1e-4,
    check: bool = True,
    opset: Optional[int] = None,
    exporter: str = "auto",
) -> Dict[str, Any]:
    """Export a checkpoint (or run directory) to ``fmt``; check it; write it atomically.

    Returns ``{"path", "format", "bytes", "input_size", "max_diff": {batch: diff}}``, ``diff`` as
    :func:`check_export` measures it. Raises ``ValueError`` (nothing written) if the export fails
    or differs by more than ``tolerance``.
    """
    if fmt not in _FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(_FORMATS)}")
    if not tolerance >= 0:  # NaN too
        raise ValueError(
            f"--tolerance must be a number >= 0 (a share of the logits' scale, e.g. 1e-4), got {tolerance!r}"
        )
    checkpoint_path = resolve_checkpoint_path(checkpoint)
    path = Path(out) if out is not None else _default_output(checkpoint_path, fmt)
    # where the file goes is checked before the (seconds of) export work
    what = (
        f"--out {path}" if out is not None else f"the output {path} (beside the checkpoint; choose another with --out)"
    )
    if path.is_dir():
        raise ValueError(
            f"{what} is a directory; --out takes the file to write, e.g. "
            f"{_default_output(path / checkpoint_path.name, fmt)}"
        )
    if path.resolve() == checkpoint_path.resolve():
        raise ValueError(f"{what} is the checkpoint itself; choose another file")
    _check_writable(path, what)
    inspected = load_inspected(checkpoint)
    _check_finite(inspected.model)
    if fmt == "onnx":
        data, run = _onnx_bytes(inspected, opset, exporter), _onnx_runner
    elif fmt == "torchscript":
        data, run = _torchscript_bytes(inspected), _torchscript_runner
    else:
        data, run = _safetensors_bytes(inspected), _safetensors_runner
    diffs: Dict[int, float] = {}
    if check:
        diffs = check_export(inspected.model, run(data))
        worst = max(diffs.values())
        if not worst <= tolerance:
            raise ValueError(
                f"the {fmt} model differs from PyTorch by up to {worst:.3g} of the logits' "
                f"scale (tolerance {tolerance:g}); nothing written"
            )
    try:
        write_files({path: data}, quiet=True)
    except OSError as exc:  # e.g. the disk filled up; name the target, not the temporary file
        raise ValueError(f"{what}: cannot write it: {exc.strerror or exc}") from None
    return dict(
        path=str(path),
        format=fmt,
        bytes=len(data),
        input_size=list(inspected.data_config["input_size"]),
        max_diff=diffs,
        label=inspected.label,
    )
