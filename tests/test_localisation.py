"""The locate data, the localisation scores on maps and masks with known answers, batch
Grad-CAM, ``nlsam locate`` and the localisation columns of ``nlsam report``."""

import csv
import json
import math

import pytest
import torch

import nlsam
from nlsam.analysis.localisation import (
    CACHE_FILE,
    area_share,
    attention_maps_batch,
    grad_cam_maps,
    mass_in_mask,
    pointing_game,
    prepare_maps,
)
from nlsam.cli import main
from nlsam.data import DATASET_NAMES, LOCATE_CLASSES, build_data, check_data_source, generate_locate
from nlsam.data._build import parse_procedural

TINY_STUDY = """
base: {data: "locate:256:64:0", model: resnet20, epochs: 1, batch_size: 64, log_every: 1000}
grid: {attention: [null, nlsam]}
seeds: [0]
"""


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLSAM_CACHE_DIR", str(tmp_path / "cache"))


# ---------------------------------------------------------------------------------------------
# the data
# ---------------------------------------------------------------------------------------------


def test_generator_shapes_reproducibility_and_balance():
    a = generate_locate(300, seed=3, split="test")
    b = generate_locate(300, seed=3, split="test")
    assert a.images.shape == (300, 3, 32, 32) and a.images.dtype == torch.uint8
    assert a.masks.shape == (300, 32, 32) and a.masks.dtype == torch.bool
    assert a.labels.dtype == torch.int64 and a.boxes.shape == (300, 4)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert a.labels.bincount(minlength=4).tolist() == [75] * 4
    assert not torch.equal(generate_locate(300, seed=3, split="train").images, a.images)
    assert not torch.equal(generate_locate(300, seed=4, split="test").images, a.images)
    big = generate_locate(8, image_size=48, seed=0)
    assert big.images.shape == (8, 3, 48, 48) and big.masks.shape == (8, 48, 48)
    assert generate_locate(0).images.shape == (0, 3, 32, 32)
    with pytest.raises(ValueError, match="split must be"):
        generate_locate(4, split="val")
    with pytest.raises(ValueError, match="image_size >= 16"):
        generate_locate(4, image_size=12)


def test_the_first_chunk_does_not_depend_on_the_split_size():
    # locate_data takes the position prior from generate_locate(2048, split="train"): the first
    # 2048 images of every larger training split
    small, large = generate_locate(2048, seed=1), generate_locate(2100, seed=1)
    assert torch.equal(small.masks, large.masks[:2048]) and torch.equal(small.images, large.images[:2048])


def test_masks_are_the_deciding_shape():
    d = generate_locate(400, seed=0, split="test")
    area = d.masks.flatten(1).sum(1).float()
    assert (area >= 8).all() and (area <= 60).all()
    # inside the shape's box
    ys, xs = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    x0, y0, x1, y1 = (v.view(-1, 1, 1) for v in d.boxes.unbind(1))
    inside = (xs >= x0 - 0.5) & (xs <= x1 + 0.5) & (ys >= y0 - 0.5) & (ys <= y1 + 0.5)
    assert not (d.masks & ~inside).any()
    # the mask's pixels stand out from the background around the shape (inside its frame)
    img = d.images.float()
    grow = torch.nn.functional.max_pool2d(inside.float().unsqueeze(1), 5, 1, 2)[:, 0] > 0
    ring = grow & ~inside
    contrast = [(img[i][:, d.masks[i]].mean(1) - img[i][:, ring[i]].mean(1)).abs().max() for i in range(len(img))]
    assert sum(c > 25 for c in contrast) >= 0.95 * len(img)
    # and they have the areas of the labelled classes: circle > ring > plus > triangle
    by_class = [area[d.labels == c].mean().item() for c in range(4)]
    circle, ring_, triangle, plus = by_class
    assert circle > ring_ > plus > triangle


def test_locate_is_a_dataset_name():
    assert "locate" in DATASET_NAMES
    assert parse_procedural("locate") == ("locate", 10_000, 2_000, 0)
    assert parse_procedural("Locate:300:100:7") == ("locate", 300, 100, 7)
    assert parse_procedural("builtin:5") == ("builtin", 5, 2_000, 0)
    bundle = build_data("locate:64:32:1", batch_size=16)
    assert bundle.name == "locate" and bundle.classes == list(LOCATE_CLASSES)
    assert (bundle.num_train, bundle.num_test, bundle.input_size) == (64, 32, (32, 32))
    _, y = next(iter(bundle.test_loader))
    assert torch.equal(y.cpu(), generate_locate(32, seed=1, split="test").labels[:16])
    for bad in ("locate:1:2:3:4", "locate:x", "locate:0"):
        with pytest.raises(ValueError, match="locate"):
            check_data_source(bad)


# ---------------------------------------------------------------------------------------------
# the scores on hand-made maps and masks
# ---------------------------------------------------------------------------------------------


def _quadrant(size=4):
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[0, : size // 2, : size // 2] = True
    return mask


def test_mass_in_mask_known_answers():
    mask = _quadrant()
    inside = mask.float()
    assert mass_in_mask(inside, mask).item() == 1.0
    assert mass_in_mask(1 - inside, mask).item() == 0.0
    assert mass_in_mask(torch.ones(1, 4, 4), mask).item() == pytest.approx(0.25)  # the area share
    assert mass_in_mask(1 + 2 * inside, mask).item() == pytest.approx(12 / 24)
    assert mass_in_mask(torch.zeros(1, 4, 4), mask).item() == pytest.approx(0.25)  # no mass: as uniform
    # a 2 x 2 map upsampled to the 4 x 4 mask
    small = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert mass_in_mask(small, mask, mode="nearest").item() == 1.0
    # bilinear, half-pixel centres: each axis gets weights (1, .75, .25, 0) of the first cell
    assert mass_in_mask(small, mask, mode="bilinear").item() == pytest.approx(1.75**2 / 2**2)
    # a batch, uint8 masks
    maps = torch.stack([inside[0], torch.ones(4, 4)])
    masks = torch.cat([mask, mask]).to(torch.uint8)
    assert mass_in_mask(maps, masks).tolist() == pytest.approx([1.0, 0.25])
    assert area_share(masks).tolist() == pytest.approx([0.25, 0.25])


def test_pointing_game_known_answers():
    mask = _quadrant()
    hit = torch.zeros(1, 4, 4)
    hit[0, 1, 1] = 5.0
    miss = torch.zeros(1, 4, 4)
    miss[0, 3, 3] = 5.0
    assert pointing_game(hit, mask).item() == 1.0
    assert pointing_game(miss, mask).item() == 0.0
    tie = hit + miss  # one maximum inside, one outside: a random pick hits half the time
    assert pointing_game(tie, mask).item() == 0.5
    assert pointing_game(torch.zeros(1, 4, 4), mask).item() == pytest.approx(0.25)  # all tied: the area share
    assert pointing_game(torch.full((1, 4, 4), 0.5), mask).item() == pytest.approx(0.25)
    # a 2 x 2 map whose top-left cell is the largest, upsampled
    small = torch.tensor([[[1.0, 0.2], [0.2, 0.0]]])
    assert pointing_game(small, mask, mode="nearest").item() == 1.0
    assert pointing_game(small, mask, mode="bilinear").item() == 1.0


def test_scores_refuse_bad_input():
    mask = _quadrant()
    with pytest.raises(ValueError, match="non-negative"):
        mass_in_mask(torch.full((1, 4, 4), -1.0), mask)
    with pytest.raises(ValueError, match="finite"):
        pointing_game(torch.full((1, 4, 4), math.nan), mask)
    with pytest.raises(ValueError, match="one mask per map"):
        mass_in_mask(torch.ones(2, 4, 4), mask)
    with pytest.raises(ValueError, match="at least one pixel"):
        mass_in_mask(torch.ones(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="B x h x w"):
        mass_in_mask(torch.ones(4, 4), mask)
    with pytest.raises(ValueError, match="valid: bilinear, nearest"):
        mass_in_mask(torch.ones(1, 2, 2), mask, mode="bicubic")
    shifted = prepare_maps(torch.tensor([[[0.5, 0.7], [0.6, 0.9]]]))
    assert shifted.min().item() == 0.0 and shifted.max().item() == pytest.approx(0.4)


# ---------------------------------------------------------------------------------------------
# tiny trained runs
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny study on the locate data: a plain ResNet-20 and an NL-SAM one, 1 epoch each."""
    from nlsam.engine import train
    from nlsam.engine.study import load_study

    root = tmp_path_factory.mktemp("locate")
    mp = pytest.MonkeyPatch()
    mp.setenv("NLSAM_CACHE_DIR", str(root / "cache"))
    try:
        (root / "study").mkdir()
        (root / "study" / "study.yaml").write_text(TINY_STUDY)  # as `nlsam study` leaves it
        spec = load_study(root / "study" / "study.yaml", out=root / "study")
        for run in spec.runs:
            train(run.config)
    finally:
        mp.undo()
    runs = {run.config.attention or "none": run.run_dir for run in spec.runs}
    return dict(root=root, dir=root / "study", plain=runs["none"], nlsam=runs["nlsam"])


def _model(run_dir):
    return nlsam.load_model(run_dir)


def _batch(model, n=3):
    from nlsam.data._augment import Normalizer

    d = generate_locate(n, seed=0, split="test")
    cfg = model.data_config
    return Normalizer(cfg["mean"], cfg["std"], torch.device("cpu"))(d.images), d


def test_batch_grad_cam(study):
    model = _model(study["nlsam"])
    x, d = _batch(model, 5)
    maps, logits = grad_cam_maps(model, x)
    assert maps.shape == (5, 8, 8) and logits.shape == (5, 4)
    assert torch.isfinite(maps).all() and (maps >= 0).all()
    assert all(p.grad is None for p in model.parameters())  # the model keeps no gradients
    # one image at a time gives the same maps (no batch statistics in eval mode)
    single = torch.cat([grad_cam_maps(model, x[i : i + 1])[0] for i in range(5)])
    assert torch.allclose(single, maps, atol=1e-5)
    true, _ = grad_cam_maps(model, x, d.labels)
    assert true.shape == (5, 8, 8)
    with pytest.raises(ValueError, match="target classes must be in 0..3"):
        grad_cam_maps(model, x, torch.full((5,), 4))
    with pytest.raises(ValueError, match="one per image"):
        grad_cam_maps(model, x, torch.zeros(2, dtype=torch.long))


def test_batch_grad_cam_matches_the_grad_cam_package(study):
    pytest.importorskip("pytorch_grad_cam")
    from nlsam.analysis.gradcam import grad_cam

    model = _model(study["nlsam"])
    x, _ = _batch(model, 2)
    for target in (None, 2):
        heat, _ = grad_cam(model, x[1:2], target)
        maps, _ = grad_cam_maps(model, x[1:2], None if target is None else torch.tensor([target]))
        # the package: shift to 0, scale to 1, upsample (OpenCV, bilinear), shift and scale again
        ours = prepare_maps(maps)
        ours = ours / (1e-7 + ours.amax())
        ours = torch.nn.functional.interpolate(ours.unsqueeze(1), size=(32, 32), mode="bilinear", align_corners=False)[
            0, 0
        ]
        ours = (ours - ours.min()) / (1e-7 + (ours - ours.min()).max())
        assert ours.max() > 0.99  # not a degenerate map
        assert torch.allclose(ours, torch.from_numpy(heat), atol=1e-4), (ours - torch.from_numpy(heat)).abs().max()


def test_own_maps_of_a_batch_match_nlsam_attention(study):
    from nlsam.analysis.attention_maps import attention_maps

    model = _model(study["nlsam"])
    x, _ = _batch(model, 2)
    logits, maps = attention_maps_batch(model, x)
    assert [tuple(m.shape) for *_, m in maps] == [(2, 16, 16)] * 3 + [(2, 8, 8)] * 3
    _, single = attention_maps(model, x[1:2])
    for (name, stage, block, batch), one in zip(maps, single):
        assert (name, stage, block) == (one.name, one.stage, one.block)
        assert torch.allclose(batch[1], one.map, atol=1e-6)
    with pytest.raises(ValueError, match="no attention module with a spatial map"):
        attention_maps_batch(_model(study["plain"]), x)


# ---------------------------------------------------------------------------------------------
# nlsam locate
# ---------------------------------------------------------------------------------------------


def _run(capsys, argv):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_locate_command_json(study, capsys):
    code, out, err = _run(capsys, ["locate", study["nlsam"], "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert result["n"] == 64 and result["data"] == "locate:256:64:0" and result["attention"] == "nlsam"
    assert 0 <= result["top1"] <= 100 and result["epoch"] == 1
    chance = result["chance"]
    assert 1 < chance["area_share"] < 6
    assert chance["prior_mass_in_mask"] > chance["area_share"]
    for target in ("true", "predicted"):
        for key in ("mass_in_mask", "pointing"):
            assert 0 <= result["grad_cam"][target][key] <= 100
    own = result["own_maps"]
    assert [m["size"] for m in own["modules"]] == [[16, 16]] * 3 + [[8, 8]] * 3
    assert [(m["stage"], m["block"]) for m in own["modules"]] == [(2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (3, 2)]
    assert 0 <= own["mean"]["mass_in_mask"] <= 100


def test_locate_command_table_and_plain_network(study, capsys):
    code, out, err = _run(capsys, ["locate", study["nlsam"], "--n", "10"])
    assert code == 0, err
    assert "10 test images" in out and "Grad-CAM (stages.layer3), true class" in out
    assert "own maps, mean of 6 modules" in out and "stage 3 block 3 (8x8)" in out
    code, out, err = _run(capsys, ["locate", study["plain"], "--n", "10", "--json"])
    assert code == 0, err
    assert json.loads(out)["own_maps"] is None
    code, out, err = _run(capsys, ["locate", study["plain"], "--n", "10"])
    assert "no spatial attention modules" in out


def test_locate_command_errors(study, capsys, tmp_path):
    from nlsam.engine.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(study["nlsam"])
    builtin = tmp_path / "builtin.pt"
    save_checkpoint(dict(state, config=dict(state["config"], data="builtin:256:64:0")), builtin)
    for argv, fragment in (
        ([builtin], "was trained on 'builtin:256:64:0', not on the locate data"),
        ([study["nlsam"], "--n", "0"], "(--n) must be at least 1"),
        ([tmp_path / "missing"], "checkpoint not found"),
    ):
        code, out, err = _run(capsys, ["locate", *argv])
        assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err


# ---------------------------------------------------------------------------------------------
# nlsam report
# ---------------------------------------------------------------------------------------------


def test_mean_interval():
    from nlsam.analysis.statistics import mean_interval

    mean, half = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302652729749464 / math.sqrt(3))
    assert math.isnan(mean_interval([4.0])[1]) and mean_interval([]) is None


def test_report_has_localisation_columns_and_caches_them(study, monkeypatch):
    pytest.importorskip("matplotlib")
    from nlsam.analysis import localisation
    from nlsam.analysis.report import write_report

    report = write_report(study["dir"]).read_text()
    assert "Grad-CAM in mask (%)" in report and "own maps pointing (%)" in report
    assert "Chance (the mask's area share)" in report and "position prior" in report
    for run in (study["plain"], study["nlsam"]):
        cached = json.loads((run / CACHE_FILE).read_text())
        assert cached["key"]["checkpoint"] == "last.pt" and cached["result"]["n"] == 64
    rows = {r["variant"]: r for r in csv.DictReader(open(study["dir"] / "results.csv"))}
    assert rows["attention=none"]["own_mass_mean"] == "" and rows["attention=nlsam"]["own_mass_mean"] != ""
    assert 0 <= float(rows["attention=nlsam"]["gradcam_mass_mean"]) <= 100
    runs = list(csv.DictReader(open(study["dir"] / "runs.csv")))
    assert all(r["gradcam_pointing"] != "" for r in runs)
    line = next(row for row in report.splitlines() if row.startswith("| attention=nlsam"))
    assert "(n=1)" in line

    # a second report reads the cache: nothing is recomputed
    def refuse(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(localisation, "run_localisation", refuse)
    assert write_report(study["dir"]).read_text() == report
