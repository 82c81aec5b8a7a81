"""Release the networks of this study as nlsam's pretrained weights (``nlsam.list_pretrained()``,
``timm.create_model(NAME, pretrained=True)``, ``torch.hub``).

For every variant of the study, the run of the lowest seed that kept its final weights
(``runs/NAME/model.safetensors``, written by ``collect_runs.py``) is released as
``{timm name}.c10jpg_30ep`` (e.g. ``ge_nlsam_resnet20.c10jpg_30ep``):

- its weights go to ``src/nlsam/weights/NAME.safetensors``, as the network's full state dict in
  this version's layout (a run's file from before the gate's scale was saved lacks it);
- its top-1 is measured here, in fp32, on the test split of the data given with ``--data``
  (the CIFAR-10 JPEG copy; its sha256 is checked);
- its variant's seed summary (mean and sample standard deviation of the final test top-1 of every
  finished seed, as the study recorded it in bf16) and its cost (``nlsam profile``) are added;
- its card goes to ``src/nlsam/weights/NAME.md`` and its record to ``src/nlsam/weights/index.json``.

Variants with no run that kept weights are left out, and said so. From the repository root:

    python docs/results/figure4_cifar10_resnet20_30ep/release_weights.py --data ../shared/data/cifar10-jpg.zip
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from safetensors.torch import load_file, save

from nlsam._io import atomic_write_bytes, file_sha256
from nlsam.analysis.hub import CardFacts, model_card
from nlsam.cost import profile
from nlsam.data import build_data
from nlsam.engine.config import load_yaml
from nlsam.engine.evaluate import evaluate
from nlsam.engine.loading import build_network
from nlsam.models.timm_models import timm_model_name

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
WEIGHTS = ROOT / "src" / "nlsam" / "weights"
TAG = "c10jpg_30ep"
DATA_SHA256 = "c5684df82313ea32bb2a7e9c1c7772d539f06e2469924b6676286564bbe96f70"
DATA = "CIFAR-10, JPEG copy (cifar10-jpg.zip)"
RECIPE = (
    "cifar10_resnet20_fast: 30 epochs, batch 128, Nesterov SGD (momentum 0.9), one-cycle to lr 0.2, "
    "weight decay 5e-4, label smoothing 0.1, pad-4 crop + flip, channels_last"
)
STUDY = "figure4_cifar10_resnet20_30ep"
MACHINES_BEFORE_RECORDING = "AMD EPYC (avx512_bf16), 2-core machines"  # the page names them
NOTE = (
    "Released from the 30-epoch Figure 4 study (`docs/results/figure4_cifar10_resnet20_30ep.md`): every "
    "variant trained with the same recipe and data order for a seed, in bf16 on a CPU. `top1` is this "
    "network's own fp32 evaluation; the variant's figure is the mean of the final test top-1 the study "
    "recorded for each finished seed (bf16 evaluation), with the sample standard deviation."
)


def final_top1(run_dir: Path, epochs: int) -> Optional[float]:
    """The last epoch's test top-1 of a finished run (None when it has not finished)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return float(rows[-1]["test_top1"]) if rows and rows[-1].get("epoch") == epochs else None


def variants(study: Dict[str, Any]) -> List[Optional[str]]:
    return list(study["grid"]["attention"]) + [v["attention"] for v in study.get("variants", [])]


def release(data: Path, runs: Path, out: Path, eval_batch_size: int = 500) -> List[Dict[str, Any]]:
    study = load_yaml(HERE / "study.yaml")
    epochs = int(study["base"]["epochs"])
    records = []
    loaders: Dict[str, Any] = {}
    for attention in variants(study):
        label = attention or "none"
        seeds = sorted(int(p.name.rsplit("seed=", 1)[1]) for p in runs.glob(f"attention={label},seed=*"))
        finished = {s: final_top1(runs / f"attention={label},seed={s}", epochs) for s in seeds}
        finished = {s: t for s, t in finished.items() if t is not None}
        kept = [s for s in sorted(finished) if (runs / f"attention={label},seed={s}" / "model.safetensors").is_file()]
        if not kept:
            print(
                f"{label}: no finished run kept its weights (finished seeds: {sorted(finished) or 'none'}); not released"
            )
            continue
        seed = kept[0]
        run_dir = runs / f"attention={label},seed={seed}"
        config = load_yaml(run_dir / "config.yaml")
        meta = json.loads((run_dir / "meta.json").read_text())
        model = build_network(config, meta)
        model.load_state_dict(load_file(str(run_dir / "model.safetensors")))
        model.eval()
        if "test" not in loaders:
            loaders["test"] = build_data(str(data), batch_size=eval_batch_size, augment=False, num_workers=0)
        bundle = loaders["test"]
        assert list(bundle.classes) == list(meta["classes"]), (bundle.classes, meta["classes"])
        result = evaluate(model, bundle.test_loader, num_classes=len(bundle.classes), amp_dtype=None, check_finite=True)
        size = (int(meta["in_chans"]), *map(int, meta["input_size"]))
        cost = profile(model, input_size=size)
        values = list(finished.values())
        mean = statistics.mean(values)
        std = statistics.stdev(values) if len(values) > 1 else None
        model_name = timm_model_name(config["model"], attention)
        name = f"{model_name}.{TAG}"
        machines = ", ".join(meta.get("machines") or []) or MACHINES_BEFORE_RECORDING
        precision = str(meta.get("precision") or "")
        variant = (
            f"{mean:.2f} ± {std:.2f}% over {len(values)} seeds (final test top-1, bf16 evaluation)"
            if std is not None
            else f"{mean:.2f}% (1 seed so far)"
        )
        record = dict(
            name=name,
            model=model_name,
            arch=config["model"],
            attention=attention,
            data=DATA,
            data_file="cifar10-jpg.zip",
            data_sha256=DATA_SHA256,
            epochs=epochs,
            seed=seed,
            top1=round(float(result["top1"]), 2),
            variant_top1_mean=round(mean, 3),
            variant_top1_std=None if std is None else round(std, 3),
            variant_seeds=len(values),
            num_classes=len(meta["classes"]),
            classes=list(meta["classes"]),
            input_size=list(size),
            mean=list(meta["mean"]),
            std=list(meta["std"]),
            params=int(cost.params),
            flops=int(cost.flops),
            recipe=RECIPE,
            precision=precision,
            machine=machines,
            study=STUDY,
            file=f"{name}.safetensors",
            sha256="",
            license="MIT",
            url=None,
        )
        out.mkdir(parents=True, exist_ok=True)
        # the network's own state dict, not the run's file: runs trained before an attention gate's
        # scale was saved with the weights (``...gate.scale``) lack it, and loading fills it in
        weights = save({k: v.detach().contiguous() for k, v in model.state_dict().items()})
        atomic_write_bytes(out / record["file"], weights)
        record["sha256"] = hashlib.sha256(weights).hexdigest()
        facts = CardFacts(
            name=name,
            model=model_name,
            arch=config["model"],
            attention=attention,
            num_classes=record["num_classes"],
            input_size=size,
            mean=meta["mean"],
            std=meta["std"],  # type: ignore[arg-type]
            data=DATA,
            data_sha256=DATA_SHA256,
            top1=record["top1"],
            top1_how=f"fp32 evaluation of the final weights (epoch {epochs}, seed {seed}) on the test split (10,000 images)",
            params=record["params"],
            flops=record["flops"],
            recipe=RECIPE,
            command=(
                f"nlsam train -c cifar10_resnet20_fast --attention {label} --seed {seed} --data cifar10-jpg.zip "
                f"(run by nlsam study {STUDY})"
            ),
            precision=precision,
            machine=machines,
            variant=variant,
            notes=[NOTE],
        )
        atomic_write_bytes(out / f"{name}.md", model_card(facts).encode())
        records.append(record)
        print(f"{name}: seed {seed}, top-1 {record['top1']:.2f}% (fp32), variant {variant}")
    atomic_write_bytes(
        out / "index.json", (json.dumps(sorted(records, key=lambda r: r["name"]), indent=1) + "\n").encode()
    )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="cifar10-jpg.zip")
    parser.add_argument(
        "--runs", type=Path, default=HERE / "runs", help="the study's run folders (default: this page's)"
    )
    parser.add_argument("--out", type=Path, default=WEIGHTS, help="where the weights go (default: src/nlsam/weights)")
    args = parser.parse_args()
    got = file_sha256(args.data)
    if got != DATA_SHA256:
        raise SystemExit(f"{args.data} is not the CIFAR-10 JPEG copy (sha256 {got}, expected {DATA_SHA256})")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    release(args.data, args.runs, args.out)


if __name__ == "__main__":
    main()
