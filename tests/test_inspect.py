"""nlsam cam / attention / predict / export, end to end on tiny trained checkpoints."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nlsam
from nlsam.cli import main
from nlsam.data import preprocess_image
from nlsam.engine import TrainConfig, train
from nlsam.engine.checkpoint import load_checkpoint, save_checkpoint

pytest.importorskip("matplotlib")
pytest.importorskip("pytorch_grad_cam")

N_CLASSES = 8  # the builtin dataset


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny trained runs (no attention, NL-SAM, GE + NL-SAM), sample images and bad files."""
    root = tmp_path_factory.mktemp("inspect")
    mp = pytest.MonkeyPatch()
    mp.setenv("NLSAM_CACHE_DIR", str(root / "cache"))
    try:
        for name, attention in (("base", None), ("nlsam", "nlsam"), ("ge", "ge+nlsam")):
            train(
                TrainConfig.from_dict(
                    dict(
                        data="builtin:256:64:0",
                        model="resnet20",
                        attention=attention,
                        epochs=1,
                        batch_size=64,
                        log_every=1000,
                        out=str(root / name),
                    )
                )
            )
    finally:
        mp.undo()
    from nlsam.analysis.figures import save_test_images

    images = save_test_images("builtin", root / "images")
    assert len(images) == N_CLASSES
    big = root / "big.jpg"  # a large RGBA photo-like image, not square
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 420, 4), dtype=np.uint8), "RGBA").convert(
        "RGB"
    ).save(big)
    gray = root / "gray.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 50), dtype=np.uint8), "L").save(gray)
    text = root / "notes.png"
    text.write_text("this is not an image\n")
    garbage = root / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    state = load_checkpoint(root / "nlsam")
    mismatched = root / "mismatched.pt"  # resnet20 weights under a resnet32 config
    save_checkpoint(dict(state, config=dict(state["config"], model="resnet32")), mismatched)
    old = root / "old.pt"
    torch.save(dict(state, format_version=0), old)
    return dict(
        root=root,
        base=root / "base",
        nlsam=root / "nlsam",
        ge=root / "ge",
        images=images,
        big=big,
        gray=gray,
        text=text,
        garbage=garbage,
        mismatched=mismatched,
        old=old,
    )


def _run(capsys, argv):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _png(path):
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size


# ---------------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------------


def test_predict_json(runs, capsys):
    code, out, err = _run(capsys, ["predict", runs["nlsam"], *runs["images"][:3], runs["big"], "--topk", "3", "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert result["model"] == "resnet20" and result["attention"] == "nlsam"
    assert result["input_size"] == [32, 32] and result["topk"] == 3
    assert [r["image"] for r in result["results"]] == [str(p) for p in [*runs["images"][:3], runs["big"]]]
    classes = nlsam.load_model(runs["nlsam"]).classes
    for r in result["results"]:
        preds = r["predictions"]
        assert [p["rank"] for p in preds] == [1, 2, 3]
        assert set(preds[0]) == {"rank", "index", "class", "score"}
        scores = [p["score"] for p in preds]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
        assert all(classes[p["index"]] == p["class"] for p in preds)


def test_predict_matches_model_and_any_size(runs, capsys):
    model = nlsam.load_model(runs["ge"])
    code, out, _ = _run(capsys, ["predict", runs["ge"], runs["gray"], "--topk", "100", "--json", "--amp", "off"])
    assert code == 0 and json.loads(out)["precision"] == "float32"
    preds = json.loads(out)["results"][0]["predictions"]
    assert len(preds) == N_CLASSES  # top-k clipped to the number of classes
    x = preprocess_image(runs["gray"], model.input_size, model.data_config["mean"], model.data_config["std"])
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert preds[0]["index"] == int(probs.argmax())
    assert preds[0]["score"] == pytest.approx(float(probs.max()), abs=1e-6)
    # bf16 autocast: the same ranking here, the scores within bf16 rounding
    code, out, _ = _run(capsys, ["predict", runs["ge"], runs["gray"], "--topk", "100", "--json", "--amp", "bf16"])
    assert code == 0 and json.loads(out)["precision"] == "bfloat16"
    bf16 = json.loads(out)["results"][0]["predictions"]
    assert bf16[0]["index"] == preds[0]["index"] and bf16[0]["score"] == pytest.approx(preds[0]["score"], abs=0.02)
    # by default, the precision the run trained in
    trained = torch.load(Path(runs["ge"]) / "best.pt", map_location="cpu", weights_only=False).get("precision")
    code, out, _ = _run(capsys, ["predict", runs["ge"], runs["gray"], "--json"])
    assert json.loads(out)["precision"] == trained
    # another input size
    code, out, _ = _run(capsys, ["predict", runs["ge"], runs["big"], "--input-size", "48", "40", "--json"])
    assert code == 0 and json.loads(out)["input_size"] == [48, 40]
    # text output
    code, out, _ = _run(capsys, ["predict", runs["ge"], runs["big"], runs["gray"], "--topk", "2"])
    lines = out.splitlines()
    assert code == 0 and "resnet20 + ge+nlsam" in lines[0] and "input 32x32" in lines[0]
    assert lines[1] == str(runs["big"]) and lines[2].strip().startswith("1.") and lines[4] == str(runs["gray"])


# ---------------------------------------------------------------------------------------------
# cam
# ---------------------------------------------------------------------------------------------


def test_cam_side_by_side(runs, capsys, tmp_path):
    out_dir = tmp_path / "cam"
    images = [runs["images"][0], runs["images"][5], runs["big"]]
    code, out, err = _run(
        capsys, ["cam", runs["base"], *images, "--compare", runs["nlsam"], "--compare", runs["ge"], "--out", out_dir]
    )
    assert code == 0, err
    written = sorted(out_dir.iterdir())
    assert [p.name for p in written] == sorted(p.stem + ".png" for p in images)
    assert out.split() == [str(out_dir / (p.stem + ".png")) for p in images]
    for path in written:
        width, height = _png(path)
        assert 700 < width < 2000 and 200 < height < 600 and width > 2.5 * height  # 4 panels + colour bar
    # one grid figure, a class given by name, custom labels
    code, _, err = _run(
        capsys,
        [
            "cam",
            runs["base"],
            *runs["images"][:3],
            "--compare",
            runs["nlsam"],
            "--target-class",
            "square",
            "--labels",
            "ResNet-20",
            "+ NL-SAM",
            "--out",
            out_dir,
            "--grid",
            "grid.png",
        ],
    )
    assert code == 0, err
    width, height = _png(out_dir / "grid.png")
    assert height > width  # 3 rows of 3 panels


def _first_lines(fig, count):
    """The first line of the titles of the first ``count`` overlay panels (row 0)."""
    return [fig.axes[c].get_title().split("\n")[0] for c in range(1, count + 1)]


def test_cam_compare_column_titles_are_distinct(runs, tmp_path):
    import shutil

    from nlsam.analysis.gradcam import cam_figure
    from nlsam.analysis.predict import load_images, load_inspected

    other = tmp_path / "nlsam-seed1"
    other.mkdir()
    shutil.copy(runs["nlsam"] / "best.pt", other / "best.pt")
    images = load_images(runs["images"][:1])
    two = [load_inspected(runs["nlsam"]), load_inspected(other)]
    assert two[0].label == two[1].label == "resnet20 + nlsam"
    titles = _first_lines(cam_figure(two, images), 2)
    assert len(set(titles)) == 2 and all(t.startswith("resnet20 + nlsam") for t in titles)
    assert "nlsam-seed1" in titles[1] and "nlsam-seed1" not in titles[0]
    # the same run twice: still two names
    same = [load_inspected(runs["nlsam"]), load_inspected(runs["nlsam"] / "best.pt")]
    assert len(set(_first_lines(cam_figure(same, images), 2))) == 2
    # distinct defaults are left alone; --labels always wins
    mixed = [load_inspected(runs["base"]), two[0]]
    assert _first_lines(cam_figure(mixed, images), 2) == ["resnet20 (no attention)", "resnet20 + nlsam"]
    assert _first_lines(cam_figure(two, images, labels=["A", "B"]), 2) == ["A", "B"]


def test_grad_cam_function_leaves_model_unchanged(runs):
    from nlsam.analysis.gradcam import grad_cam

    model = nlsam.load_model(runs["nlsam"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = preprocess_image(runs["images"][2], (32, 32), model.data_config["mean"], model.data_config["std"])
    heat, probs = grad_cam(model, x)
    assert heat.shape == (32, 32) and heat.min() >= 0 and heat.max() <= 1 and heat.max() > 0
    with torch.no_grad():
        assert torch.allclose(probs, model(x).softmax(1)[0], atol=1e-6)
    other, _ = grad_cam(model, x, target=(int(probs.argmax()) + 1) % N_CLASSES)
    assert not np.allclose(heat, other)
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training


# ---------------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------------


def test_attention_maps_function(runs):
    from nlsam.analysis.attention_maps import attention_maps

    model = nlsam.load_model(runs["ge"])
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    logits, maps = attention_maps(model, x)
    # the hooks change nothing but the order of two float operations: a watched block adds its
    # shortcut after the module's forward, an unwatched one fuses the two (add_attended)
    torch.testing.assert_close(logits, expected, rtol=1e-6, atol=1e-6)
    assert [(m.stage, m.block) for m in maps] == [(2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (3, 2)]
    assert [tuple(m.map.shape) for m in maps] == [(16, 16)] * 3 + [(8, 8)] * 3
    assert all(0 < float(m.map.min()) and float(m.map.max()) < 1 for m in maps)
    # the map is the gate NL-SAM applied: check one block by hand
    block = model.stages.layer3[1]
    seen = {}
    handle = block.attention[1].register_forward_hook(lambda mod, inp, out: seen.update(x=inp[0], y=out))
    with torch.no_grad():
        model(x)
    handle.remove()
    assert torch.allclose(seen["y"], seen["x"] * maps[4].map, atol=1e-6)
    _, only3 = attention_maps(model, x, stage=3)
    assert [m.stage for m in only3] == [3, 3, 3]
    assert all(not m._forward_hooks for m in model.modules())


def test_attention_command(runs, capsys, tmp_path):
    out_dir = tmp_path / "att"
    code, out, err = _run(capsys, ["attention", runs["nlsam"], runs["images"][1], runs["big"], "--out", out_dir])
    assert code == 0, err
    for image in (runs["images"][1], runs["big"]):
        width, height = _png(out_dir / (image.stem + ".png"))
        assert 400 < width < 1500 and 300 < height < 1200
    code, _, err = _run(
        capsys,
        [
            "attention",
            runs["nlsam"],
            runs["images"][1],
            "--stage",
            "3",
            "--range",
            "0",
            "1",
            "--out",
            tmp_path / "att3",
        ],
    )
    assert code == 0, err
    width3, height3 = _png(tmp_path / "att3" / (runs["images"][1].stem + ".png"))
    assert height3 < height  # one stage row instead of two


def test_attention_labels_name_map_and_gate(runs):
    from nlsam.analysis.attention_maps import attention_figure, attention_maps
    from nlsam.analysis.predict import load_images, load_inspected

    inspected = load_inspected(runs["nlsam"])
    ((path, img),) = load_images(runs["images"][:1])

    def stage_labels(fig):
        labels = [" ".join(ax.get_ylabel().split()) for ax in fig.axes]
        return [label for label in labels if label.startswith("stage")]

    assert stage_labels(attention_figure(inspected, path, img)) == [
        "stage 2 16x16 map, 8x8 gate (k=2)",
        "stage 3 8x8 map, 4x4 gate (k=2)",
    ]
    # what the label says: the 16 x 16 map of stage 2 holds 8 x 8 distinct 2 x 2 cells
    _, maps = attention_maps(inspected.model, inspected.prepare(img))
    cells = maps[0].map.reshape(8, 2, 8, 2)
    assert torch.equal(cells, cells[:, :1, :, :1].expand_as(cells))
    # away from the training size the module pools adaptively to its trained grid
    assert stage_labels(attention_figure(inspected, path, img, input_size=(48, 40))) == [
        "stage 2 24x20 map, 8x8 gate (adaptive pooling)",
        "stage 3 12x10 map, 4x4 gate (adaptive pooling)",
    ]


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def test_export_onnx_dynamic_batch(runs, capsys, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    path = tmp_path / "model.onnx"
    code, out, err = _run(capsys, ["export", runs["nlsam"], "--format", "onnx", "--out", path])
    assert code == 0, err
    assert "dynamic batch" in out and "max |onnxruntime - PyTorch|" in out
    proto = onnx.load(str(path))
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value  # a symbolic batch size
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["nlsam_meta"])["classes"] == nlsam.load_model(runs["nlsam"]).classes
    # NL-SAM's nearest upsampling is a broadcast over k x k blocks, and the gate's multiply and the
    # residual addition are one node (addcmul: Mul + Add, no Resize between them)
    assert "Resize" not in {node.op_type for node in proto.graph.node}
    model = nlsam.load_model(runs["nlsam"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for batch in (1, 3, 5):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {name: x.numpy()})[0]
        assert got.shape == (batch, N_CLASSES)
        assert np.abs(got - expected).max() < 1e-4


def test_export_torchscript_and_safetensors(runs, capsys, tmp_path):
    pytest.importorskip("safetensors")
    from nlsam.analysis.export import load_safetensors

    model = nlsam.load_model(runs["ge"])
    code, out, err = _run(capsys, ["export", runs["ge"], "--format", "torchscript", "--out", tmp_path / "m.ts"])
    assert code == 0, err
    # TorchScript runs each block's attention and addition one after the other (eager fuses them)
    assert float(re.search(r"= ([0-9.e+-]+) at batch", out).group(1)) < 1e-6
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extra = {"nlsam.json": ""}
        scripted = torch.jit.load(str(tmp_path / "m.ts"), _extra_files=extra)
    assert json.loads(json.loads(extra["nlsam.json"])["nlsam_meta"])["classes"] == model.classes
    for shape in ((1, 3, 32, 32), (3, 3, 32, 32), (2, 3, 40, 48)):  # any batch and size
        x = torch.randn(*shape)
        with torch.no_grad():
            assert torch.allclose(scripted(x), model(x), atol=1e-5)
    # safetensors, at the default place beside the checkpoint
    code, out, err = _run(capsys, ["export", runs["ge"], "--format", "safetensors"])
    assert code == 0, err
    path = runs["ge"] / "best.safetensors"
    assert path.is_file() and str(path) in out
    loaded = load_safetensors(path)
    assert loaded.classes == model.classes and loaded.data_config == model.data_config
    assert not loaded.training
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    path.unlink()


def test_export_failed_check_writes_nothing(runs, capsys, tmp_path, monkeypatch):
    import nlsam.analysis.export as export

    monkeypatch.setattr(export, "check_export", lambda model, runner: {1: 0.5, 3: 0.25})
    code, _, err = _run(capsys, ["export", runs["nlsam"], "--format", "safetensors", "--out", tmp_path / "m.st"])
    assert code == 2 and "differs from PyTorch by up to 0.5 of the logits' scale" in err and "nothing written" in err
    assert list(tmp_path.iterdir()) == []


def test_export_check_is_relative_to_the_logits_scale():
    from nlsam.analysis.export import check_export

    class Logits(torch.nn.Module):
        data_config = {"input_size": (3, 8, 8)}

        def __init__(self, scale: float) -> None:
            super().__init__()
            self.scale = scale

        def forward(self, x):
            return x.flatten(1)[:, :10] * self.scale

    large = Logits(1e4)  # logits up to ~4e4
    # float32 rounding at these values (absolute error of a few 1e-3) is within 1e-4 of the scale ...
    assert all(d < 1e-4 for d in check_export(large, lambda x: large(x) * (1 + 1e-7)).values())
    # ... while a real error stays one, and logits below 1 keep the absolute bound
    assert all(d > 1e-4 for d in check_export(large, lambda x: large(x) * (1 + 1e-3)).values())
    small = Logits(0.1)
    diffs = check_export(small, lambda x: small(x) + 1e-3)
    assert all(abs(d - 1e-3) < 1e-6 for d in diffs.values()), diffs


def _no_export_work(monkeypatch):
    import nlsam.analysis.export as export

    def fail(*args, **kwargs):
        raise AssertionError("the export ran before --out was checked")

    for name in ("load_inspected", "_onnx_bytes", "_torchscript_bytes", "_safetensors_bytes"):
        monkeypatch.setattr(export, name, fail)


def test_export_rejects_unusable_out_before_any_work(runs, capsys, tmp_path, monkeypatch):
    from nlsam.analysis.export import export_model

    _no_export_work(monkeypatch)
    with pytest.raises(ValueError) as info:
        export_model(runs["nlsam"], "onnx", tmp_path)  # an existing directory
    message = str(info.value)
    assert message.startswith(f"--out {tmp_path} is a directory") and "\n" not in message
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=f"--out {a_file / 'm.onnx'}: {a_file} is not a directory"):
        export_model(runs["nlsam"], "onnx", a_file / "m.onnx")
    if Path("/proc/self").is_dir():  # not writable, even for root
        target = "/proc/nlsam-missing/m.onnx"
        with pytest.raises(ValueError, match=f"--out {target}: cannot create files in /proc"):
            export_model(runs["nlsam"], "onnx", target)
    code, out, err = _run(capsys, ["export", runs["nlsam"], "--format", "safetensors", "--out", tmp_path])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"nlsam export: error: --out {tmp_path} ")
    assert sorted(tmp_path.iterdir()) == [a_file]
    # a parent that does not exist yet is fine (it is created when the file is written)
    with pytest.raises(AssertionError, match="before --out was checked"):
        export_model(runs["nlsam"], "onnx", tmp_path / "new" / "dir" / "m.onnx")
    assert sorted(tmp_path.iterdir()) == [a_file]


@pytest.mark.parametrize("tolerance", ["-1e-4", "nan"])
def test_export_rejects_a_tolerance_below_zero(runs, capsys, tmp_path, tolerance):
    code, out, err = _run(
        capsys,
        [
            "export",
            runs["nlsam"],
            "--format",
            "safetensors",
            "--out",
            tmp_path / "m.safetensors",
            f"--tolerance={tolerance}",
        ],
    )
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("nlsam export: error: --tolerance must be a number >= 0")
    assert lines[0].endswith(f"got {float(tolerance)!r}")
    assert list(tmp_path.iterdir()) == []


def test_export_write_error_names_the_target(runs, tmp_path, monkeypatch):
    pytest.importorskip("safetensors")
    import nlsam.analysis.figures as figures
    from nlsam.analysis.export import export_model

    target = tmp_path / "m.safetensors"

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path.parent / f".{path.name}.d28fm_ul.tmp"))

    monkeypatch.setattr(figures, "atomic_write_bytes", refuse)
    with pytest.raises(ValueError) as info:
        export_model(runs["nlsam"], "safetensors", target)
    assert str(info.value) == f"--out {target}: cannot write it: Permission denied"


# ---------------------------------------------------------------------------------------------
# bad input: one error line, exit code 2, nothing written
# ---------------------------------------------------------------------------------------------

BAD_CASES = {
    "missing image": (lambda r: ["cam", r["nlsam"], r["images"][0], r["root"] / "nope.png"], "image not found"),
    "text file as image": (lambda r: ["attention", r["nlsam"], r["images"][0], r["text"]], "cannot read image"),
    "directory as image": (lambda r: ["predict", r["nlsam"], r["root"] / "images"], "is a directory"),
    "garbage checkpoint": (lambda r: ["cam", r["garbage"], r["images"][0]], "cannot read"),
    "garbage compared checkpoint": (
        lambda r: ["cam", r["nlsam"], r["images"][0], "--compare", r["garbage"]],
        "cannot read",
    ),
    "missing checkpoint": (lambda r: ["predict", r["root"] / "missing.pt", r["images"][0]], "checkpoint not found"),
    "weights of another model": (
        lambda r: ["export", r["mismatched"], "--format", "onnx"],
        "does not match the network",
    ),
    "old checkpoint version": (lambda r: ["attention", r["old"], r["images"][0]], "format version 0"),
    "class index out of range": (
        lambda r: ["cam", r["nlsam"], r["images"][0], "--target-class", "8"],
        "valid indices are 0..7",
    ),
    "unknown class name": (
        lambda r: ["cam", r["nlsam"], r["images"][0], "--target-class", "zebra"],
        "unknown target class 'zebra'",
    ),
    "stage without NL-SAM": (lambda r: ["attention", r["nlsam"], r["images"][0], "--stage", "1"], "valid: 2, 3"),
    "network without NL-SAM": (
        lambda r: ["attention", r["base"], r["images"][0]],
        "has no spatial attention maps to show",
    ),
    "bad top-k": (lambda r: ["predict", r["nlsam"], r["images"][0], "--topk", "0"], "--topk"),
    "labels count": (lambda r: ["cam", r["nlsam"], r["images"][0], "--labels", "a", "b"], "--labels got 2"),
    "unknown colour map": (
        lambda r: ["attention", r["nlsam"], r["images"][0], "--cmap", "nope"],
        "unknown colour map 'nope'",
    ),
    "grid name with a folder": (
        lambda r: ["cam", r["nlsam"], r["images"][0], "--grid", "a/b.png"],
        "--grid takes a file name",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input(runs, capsys, tmp_path, case):
    make_argv, expected = BAD_CASES[case]
    argv = make_argv(runs)
    out_path = tmp_path / ("out.onnx" if argv[0] == "export" else "out")
    if argv[0] != "predict":
        argv += ["--out", out_path]
    code, out, err = _run(capsys, argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nlsam {argv[0]}: error: "), err
    assert expected in lines[0]
    assert not out_path.exists() and list(tmp_path.iterdir()) == []


def test_sample_images_from_image_folder_zip(tmp_path):
    import zipfile

    from nlsam.analysis.figures import save_test_images

    archive = tmp_path / "tiny.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for split in ("train", "test"):
            for cls, colour in (("cat", (200, 10, 10)), ("dog", (10, 200, 10))):
                for i in range(2):
                    buffer = __import__("io").BytesIO()
                    Image.new("RGB", (32, 32), colour).save(buffer, format="JPEG")
                    zf.writestr(f"{split}/{cls}/{i:04d}.jpg", buffer.getvalue())
    paths = save_test_images(str(archive), tmp_path / "out", per_class=2)
    assert [p.name for p in paths] == ["00_cat_1.jpg", "00_cat_2.jpg", "01_dog_1.jpg", "01_dog_2.jpg"]
    with Image.open(paths[2]) as img:
        assert img.size == (32, 32) and img.getpixel((16, 16))[1] > 150


def test_missing_package_message(runs, capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # makes the import fail
    code, _, err = _run(capsys, ["cam", runs["nlsam"], runs["images"][0], "--out", tmp_path / "cam"])
    assert code == 2 and "pip install grad-cam" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cam").exists()


def test_import_stays_light():
    code = (
        "import sys, nlsam, nlsam.cli; nlsam.cli.build_parser(); "
        "print([m for m in ('matplotlib', 'pytorch_grad_cam', 'onnx', 'onnxruntime', 'cv2') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
