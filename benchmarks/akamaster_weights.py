"""akamaster/pytorch_resnet_cifar10's CIFAR-10 ResNets in nlsam, side by side with their own code.

    python benchmarks/akamaster_weights.py --source-code PATH/TO/pytorch_resnet_cifar10/resnet.py \\
        --weights PATH/TO/pretrained_models/resnet20-12fca82f.th PATH/TO/resnet56-4bfd9763.th

For each weights file: akamaster's own network (their ``resnet.py``, imported from the path
given, never copied here) with the file loaded as their code loads it, and nlsam's network of
the same depth from ``nlsam.create_model(arch, pretrained=FILE)`` (the file recognised by its
keys and converted). Both run in fp32, eval mode, on the same inputs: ``--random-inputs``
Gaussian images, and the test split of ``--data`` (an ImageFolder ``.zip``, read with
:func:`nlsam.data.build_data` without augmentation) normalised as akamaster's ``trainer.py``
does (``ToTensor`` then ``Normalize`` with ImageNet's mean (0.485, 0.456, 0.406) and std
(0.229, 0.224, 0.225)). It prints, per file: the sha256 prefix, the largest |logit difference|
on either input (and, for scale, the largest |logit|), the number of test images where the two
predictions differ, both networks' top-1 on the test split, and the ``best_prec1`` the file
records (akamaster's best top-1 on the official CIFAR-10 test set, which their trainer
evaluates as its validation set after every epoch). A second table puts both fp32 networks
beside their network in float64 on the first ``--fp64-images`` test images: the size of fp32
rounding, against which the difference between the two networks is to be read.

With ``--chenyaofo-code PATH/TO/pytorch-cifar-models/pytorch_cifar_models/resnet.py`` it also
checks the mapping of chenyaofo's CIFAR-10 ResNets (1x1 projection shortcuts) onto nlsam's
``shortcut="B"`` networks: their ``cifar10_resnetN()`` with its own random init and random
batch-norm statistics, saved and loaded with ``create_model(arch, shortcut="B", pretrained=FILE)``,
compared on the same inputs (no published chenyaofo file is scored: none was at hand).

Results: docs/results/akamaster_weights.md.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.util
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Mapping, Tuple

import torch
from torch import nn

import nlsam
from nlsam.data import Normalizer, build_data

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpg.zip"
#: akamaster's trainer.py: transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
AKAMASTER_MEAN = (0.485, 0.456, 0.406)
AKAMASTER_STD = (0.229, 0.224, 0.225)


def _parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source-code",
        required=True,
        type=Path,
        help="akamaster's resnet.py (from a checkout of pytorch_resnet_cifar10)",
    )
    parser.add_argument("--weights", required=True, nargs="+", type=Path, help="their .th files")
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="ImageFolder .zip whose test split is scored (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--random-inputs", type=int, default=256, help="Gaussian 3 x 32 x 32 inputs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--fp64-images",
        type=int,
        default=2000,
        help="test images also run through their network in float64 (the rounding check)",
    )
    parser.add_argument(
        "--chenyaofo-code",
        type=Path,
        default=None,
        help="chenyaofo's pytorch_cifar_models/resnet.py: also check that mapping (random weights)",
    )
    return parser.parse_args(argv)


def _import_their_code(path: Path, name: str = "akamaster_resnet") -> ModuleType:
    """A publisher's resnet.py as a module, from the file given."""
    if not path.is_file():
        sys.exit(f"akamaster_weights: no file {path}; give the path of the publisher's resnet.py")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # chenyaofo's resnet.py looks itself up there
    spec.loader.exec_module(module)
    return module


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _depth(state: Mapping[str, Any]) -> int:
    """6 n + 2, n the blocks per stage of akamaster's ``module.layer1.N`` keys."""
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"(?:module\.)?layer1\.(\d+)\.", k))}
    return 6 * len(blocks) + 2


def _their_network(code: ModuleType, state: Mapping[str, torch.Tensor], depth: int) -> nn.Module:
    """Their model with their weights, loaded strictly (DataParallel's ``module.`` dropped, as
    their ``torch.nn.DataParallel(model).load_state_dict`` would match it)."""
    model = getattr(code, f"resnet{depth}")()
    model.load_state_dict({k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()})
    return model.eval()


def _our_network(path: Path, depth: int) -> nn.Module:
    """nlsam's network of the same depth, from the file as a user would give it."""
    if nlsam.models.is_model(f"resnet{depth}"):
        return nlsam.create_model(f"resnet{depth}", pretrained=str(path)).eval()
    model = nlsam.ResNet(
        nlsam.models.BasicBlock,
        [(depth - 2) // 6] * 3,
        [16, 32, 64],
        stem="cifar",
        shortcut="A",
        num_classes=10,
        input_size=32,
    )
    model.pretrained_report = nlsam.load_pretrained(model, str(path))
    return model.eval()


def _test_batches(data: Path, batch_size: int) -> Tuple[List[Tuple[torch.Tensor, torch.Tensor]], int]:
    """The test split of ``data`` as akamaster's trainer feeds it: no augmentation, pixels / 255,
    normalised with ImageNet's mean and std. Decoded once, kept in memory for every file."""
    if not data.is_file():
        sys.exit(f"akamaster_weights: no file {data}; give --data PATH/TO/cifar10-jpg.zip")
    bundle = build_data(str(data), batch_size=batch_size, eval_batch_size=batch_size, augment=False, num_workers=0)
    if bundle.classes != ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]:
        sys.exit(f"akamaster_weights: {data} has classes {bundle.classes}, not CIFAR-10's in CIFAR-10's order")
    loader = bundle.test_loader
    loader.normalizer = Normalizer(AKAMASTER_MEAN, AKAMASTER_STD, torch.device("cpu"))
    return list(loader), bundle.num_test


@torch.no_grad()
def _compare(theirs: nn.Module, ours: nn.Module, batches: List[Tuple[torch.Tensor, torch.Tensor]]) -> Dict[str, float]:
    """Largest |logit difference|, largest |logit| (theirs), predictions that differ, and both
    top-1 (%) over ``batches``."""
    diff, largest, disagree, right_theirs, right_ours, n = 0.0, 0.0, 0, 0, 0, 0
    for x, y in batches:
        a, b = theirs(x), ours(x)
        diff = max(diff, (a - b).abs().max().item())
        largest = max(largest, a.abs().max().item())
        disagree += int((a.argmax(1) != b.argmax(1)).sum())
        right_theirs += int((a.argmax(1) == y).sum())
        right_ours += int((b.argmax(1) == y).sum())
        n += len(y)
    return dict(
        diff=diff, largest=largest, disagree=disagree, theirs=100.0 * right_theirs / n, ours=100.0 * right_ours / n
    )


def _randomise_batch_norm(model: nn.Module, seed: int) -> None:
    """Random affine parameters and running statistics, so that every batch norm counts."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + 0.1 * torch.randn(c, generator=g))
                m.bias.copy_(0.2 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))


def _chenyaofo_rows(path: Path, batches: List[Tuple[torch.Tensor, torch.Tensor]], noise: torch.Tensor) -> None:
    """Print one table row per depth: chenyaofo's network (random weights) against nlsam's."""
    code = _import_their_code(path, "chenyaofo_resnet")
    print(
        "\n| chenyaofo network (random weights) | max abs logit diff, test images (largest abs logit) "
        "| max abs logit diff, random inputs | predictions that differ |"
    )
    print("|---|---|---|---|")
    for depth in (20, 32, 44, 56):
        theirs = getattr(code, f"cifar10_resnet{depth}")()
        _randomise_batch_norm(theirs, seed=depth)
        theirs.eval()
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / f"cifar10_resnet{depth}.pt"
            torch.save(theirs.state_dict(), file)
            ours = nlsam.create_model(f"resnet{depth}", shortcut="B", pretrained=str(file)).eval()
        test = _compare(theirs, ours, batches)
        rand = _compare(theirs, ours, [(noise, torch.zeros(len(noise), dtype=torch.long))])
        print(
            f"| cifar10_resnet{depth} | {test['diff']:.1e} ({test['largest']:.1f}) | {rand['diff']:.1e} | "
            f"{test['disagree']} of {sum(len(y) for _, y in batches)} |",
            flush=True,
        )


@torch.no_grad()
def _rounding(
    theirs: nn.Module, ours: nn.Module, batches: List[Tuple[torch.Tensor, torch.Tensor]], images: int
) -> Tuple[float, float, int]:
    """(max |theirs - exact|, max |ours - exact|, images seen) over the first ``images`` test
    images, "exact" being their network in float64: how far each fp32 network is from the value
    both approximate. Ours no further off than theirs means the difference between them is
    rounding (the reordered channels sum in another order), not another computation."""
    exact = copy.deepcopy(theirs).double()
    off_theirs, off_ours, seen = 0.0, 0.0, 0
    for x, _ in batches:
        if seen >= images:
            break
        x = x[: images - seen]
        truth = exact(x.double())
        off_theirs = max(off_theirs, (theirs(x).double() - truth).abs().max().item())
        off_ours = max(off_ours, (ours(x).double() - truth).abs().max().item())
        seen += len(x)
    return off_theirs, off_ours, seen


def _machine() -> str:
    """The CPU model and whether it has bf16 instructions (a line for the results page)."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    bf16 = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ("avx512_bf16", "amx_bf16"))
    return f"{model} ({bf16}); torch {torch.__version__}, {torch.get_num_threads()} threads"


def main(argv: List[str]) -> int:
    args = _parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    code = _import_their_code(args.source_code)
    start = time.monotonic()
    batches, num_test = _test_batches(args.data, args.batch_size)
    noise = torch.randn(args.random_inputs, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    print(f"machine: {_machine()}")
    print(f"data: {args.data.name}, {num_test} test images; {args.random_inputs} random inputs\n")
    print(
        "| file | sha256 | max abs logit diff, test images (largest abs logit) | max abs logit diff, random "
        "inputs | predictions that differ | top-1 theirs (%) | top-1 ours (%) | best_prec1 in the file (%) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rounding = []
    for path in args.weights:
        content = torch.load(path, map_location="cpu", weights_only=True)
        state = content["state_dict"]
        depth = _depth(state)
        theirs, ours = _their_network(code, state, depth), _our_network(path, depth)
        report = str(ours.pretrained_report).replace(str(path), path.name)  # no machine paths
        print(f"<!-- {report} -->", flush=True)
        test = _compare(theirs, ours, batches)
        rand = _compare(theirs, ours, [(noise, torch.zeros(len(noise), dtype=torch.long))])
        print(
            f"| {path.name} | {_sha256(path)[:8]} | {test['diff']:.1e} ({test['largest']:.1f}) | {rand['diff']:.1e} | "
            f"{test['disagree']} of {num_test} | {test['theirs']:.2f} | {test['ours']:.2f} | "
            f"{float(content.get('best_prec1', float('nan'))):.2f} |",
            flush=True,
        )
        if args.fp64_images > 0:
            off_theirs, off_ours, seen = _rounding(theirs, ours, batches, args.fp64_images)
            rounding.append(f"| {path.name} | {seen} | {off_theirs:.1e} | {off_ours:.1e} |")
    if rounding:
        print(
            "\n| file | test images | max abs diff, their fp32 logits - their fp64 logits "
            "| max abs diff, our fp32 logits - their fp64 logits |"
        )
        print("|---|---|---|---|")
        print("\n".join(rounding), flush=True)
    if args.chenyaofo_code is not None:
        _chenyaofo_rows(args.chenyaofo_code, batches, noise)
    print(f"\n({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
