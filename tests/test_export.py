"""Inference-ready forms of the model agree with the eager one."""

from pathlib import Path

import numpy as np
import pytest
import torch

from attention_unet import AttentionUNet, ModelConfig, load_model
from attention_unet.io.data import SAMPLE_DIR, load_records
from attention_unet.model import pretrained_path
from attention_unet.model.export import calibration_tiles, export_onnx, fold_batchnorm, quantize_onnx
from attention_unet.model.runtime import onnx_info, onnx_runner


@pytest.fixture(scope="module")
def trained_like() -> AttentionUNet:
    """A small model with non-trivial BatchNorm statistics (as after training)."""
    torch.manual_seed(0)
    model = AttentionUNet(ModelConfig(width=8, depth=3, gate="channel"))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 3, 64, 64) * 2)
    return model.eval()


def test_batchnorm_folding_keeps_the_function(trained_like: AttentionUNet) -> None:
    folded = fold_batchnorm(trained_like)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(2, 3, 45, 61)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), trained_like(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("size", [(64, 64), (45, 61), (130, 97), (9, 13), (4, 13), (13, 3), (3, 3)])
def test_onnx_probabilities_match_torch(trained_like: AttentionUNet, tmp_path: Path, size: tuple[int, int]) -> None:
    path = export_onnx(trained_like, tmp_path / "m.onnx")
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        expected = torch.sigmoid(trained_like(x)).numpy()
    got, _ = onnx_runner(path)(x.numpy())
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4
    assert onnx_info(path)["model"]["width"] == 8


@pytest.mark.skipif(not pretrained_path().is_file(), reason="no shipped model yet")
def test_int8_model_stays_close_to_fp32_and_keeps_its_metadata(tmp_path: Path) -> None:
    model = load_model()
    norm = model.info["train"]["norm"]
    images = [r.image for r in load_records(SAMPLE_DIR)]
    tiles = calibration_tiles(images, norm, size=128)
    assert len(tiles) == 32 and tiles[0].shape[:2] == (1, 3)
    fp32 = export_onnx(model, tmp_path / "m.onnx")
    int8 = quantize_onnx(fp32, tmp_path / "m.int8.onnx", tiles[:24])
    held_out = np.concatenate(calibration_tiles(images[-4:], norm, size=128))  # not in the calibration set
    expected, got = onnx_runner(fp32)(held_out)[0], onnx_runner(int8)(held_out)[0]
    assert got.shape == expected.shape
    assert np.abs(got - expected).mean() <= 0.02 and ((got > 0.5) == (expected > 0.5)).mean() >= 0.98
    assert onnx_info(int8) == onnx_info(fp32)
    import onnx

    graph = onnx.load(str(int8)).graph
    made_by = {output: node.op_type for node in graph.node for output in node.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    # the first convolution (reading the fp32 image) and the head keep fp32 weights, the others are
    # int8 in and out; each decoder's concatenation is quantised too (uint8 in and out, so ONNX
    # Runtime runs it without a float round trip), and so is every ReLU after a quantised
    # convolution: those ReLUs are gone, only the first convolution's and the gates' (after an fp32
    # sum) remain
    assert made_by.get(convs[0].input[0]) != "DequantizeLinear"
    assert (
        made_by.get(convs[0].input[1]) != "DequantizeLinear" and made_by.get(convs[-1].input[1]) != "DequantizeLinear"
    )
    assert all(made_by[n.input[0]] == made_by[n.input[1]] == "DequantizeLinear" for n in convs[1:-1])
    relus = [made_by[n.input[0]] for n in graph.node if n.op_type == "Relu"]
    assert sorted(relus) == ["Add"] * model.config.depth + ["Conv"]
    quantised_in = [
        n for n in graph.node if n.op_type == "Concat" and {made_by.get(i) for i in n.input} == {"DequantizeLinear"}
    ]
    assert len(quantised_in) >= model.config.depth - 1


def test_torchscript_handles_other_sizes(trained_like: AttentionUNet, tmp_path: Path) -> None:
    traced = torch.jit.trace(fold_batchnorm(trained_like), torch.rand(1, 3, 64, 64))
    x = torch.rand(1, 3, 37, 50)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), trained_like(x), atol=1e-4, rtol=1e-4)


def test_engine_auto_runs_the_shipped_int8_only_when_it_was_made_from_the_shipped_weights(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import hashlib
    import importlib.util

    from attention_unet import model
    from attention_unet.inference import engine
    from attention_unet.model import runtime

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes())
    for module in (model, model.files):  # the package's name and the defining module's
        monkeypatch.setattr(module, "pretrained_path", lambda: weights / "model.safetensors")
    runners = []
    real = runtime.shipped_onnx
    monkeypatch.setattr(runtime, "shipped_onnx", lambda path: runners.append(Path(path)) or real(path))
    assert engine.shipped_int8() is None  # none shipped: torch
    engine.load_predictor(engine="auto")
    assert not runners
    spec = importlib.util.spec_from_file_location("ship_model", Path(__file__).parents[1] / "tools" / "ship_model.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    ship.write_int8(weights / "model.safetensors", [str(SAMPLE_DIR / "images")])
    sha256 = hashlib.sha256((weights / "model.safetensors").read_bytes()).hexdigest()
    assert engine.shipped_int8()[1]["quantised_from"] == sha256
    runners.clear()
    engine.load_predictor(engine="auto")
    assert runners == [weights / "model.int8.onnx"]
    engine.load_predictor(engine="auto", device="cpu", attention=True)  # attention maps need torch
    assert len(runners) == 1
    torch.manual_seed(1)  # other weights shipped, the int8 file left behind: torch, with a warning
    model.save_model(AttentionUNet(ModelConfig(width=4, depth=2)).eval(), weights, {"train": {"norm": "percentile"}})
    assert engine.shipped_int8() is None
    assert "quantised from other weights" in capsys.readouterr().err


def test_int8_calibration_skips_bad_files_and_pads_tiny_ones(tmp_path: Path, tiny_model: Path, capsys) -> None:
    """A folder of calibration images is a batch: a file that cannot be read is a warning, a 1 x 1
    image is padded as predict pads it (the graph's reflection had failed on it), and no image at
    all is one line before anything is written."""
    import imageio.v3 as iio

    from attention_unet.cli import main

    from .conftest import synthetic

    images = tmp_path / "calibrate"
    images.mkdir()
    iio.imwrite(images / "cells.png", synthetic(0, (64, 64))[0])
    iio.imwrite(images / "dot.png", np.full((1, 1), 200, np.uint8))
    (images / "broken.png").write_bytes(b"\x89PNG cut off")
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", str(tiny_model), "--onnx", str(out), "--int8", "--calibrate", str(images)]) == 0
    err = capsys.readouterr().err
    assert "broken.png: cannot read image" in err and "calibrated on 2 image(s)" in err
    assert out.with_suffix(".int8.onnx").is_file()
    (tmp_path / "none").mkdir()
    argv = ["export", "--model", str(tiny_model), "--onnx", str(tmp_path / "n.onnx"), "--int8", "--calibrate"]
    assert main([*argv, str(tmp_path / "none")]) == 2
    assert "none: no image to calibrate the int8 model on" in capsys.readouterr().err
    assert not (tmp_path / "n.onnx").exists()


def test_predict_on_the_shipped_int8_starts_without_torch_or_onnx(tmp_path: Path) -> None:
    """The default engine reads the model's metadata and runs its graph without importing torch
    (about 2 s) or onnx (about 1 s): a one-image predict starts in a fraction of a second."""
    import subprocess
    import sys

    pytest.importorskip("onnxruntime")
    image = min((SAMPLE_DIR / "images").glob("*.png"))
    code = (
        "import sys; from attention_unet.cli import main; "
        f"code = main(['predict', {str(image)!r}, '--out', {str(tmp_path / 'out')!r}]); "
        "print(code, 'torch' in sys.modules, 'onnx' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split()[-3:] == ["0", "False", "False"]
    assert list((tmp_path / "out").glob("*_labels.tif"))


def test_the_old_home_of_the_onnx_runner_still_works_with_a_warning() -> None:
    from attention_unet.model import export, runtime

    with pytest.warns(DeprecationWarning, match="model.runtime.onnx_runner"):
        assert export.onnx_runner is runtime.onnx_runner


def test_views_side_by_side_give_the_probabilities_of_one_after_the_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped int8 graph runs a tile's views at once, each session on its share of the cores:
    the average is bit for bit the one of the views run one after the other on every core, with
    two cores as here and with more views than cores; a batch's outputs come back in its order."""
    from attention_unet.inference.tiles import run_views
    from attention_unet.model import runtime
    from attention_unet.settings import TTA_VIEWS

    runner, _ = runtime.shipped_onnx(pretrained_path().with_suffix(".int8.onnx"))
    image = load_records(SAMPLE_DIR)[0].image[:96, :80]
    batch = np.ascontiguousarray(np.stack([image, image[::-1]]).transpose(0, 3, 1, 2), np.float32) / 255

    def one_after_the_other(b: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        return runner(b)

    for cores in (2, 3):
        monkeypatch.setattr(runtime, "core_count", lambda cores=cores: cores)
        for views in (2, 8):
            expected, _ = run_views(one_after_the_other, batch, TTA_VIEWS[views])
            got, _ = run_views(runner, batch, TTA_VIEWS[views])
            assert np.array_equal(got, expected)
    monkeypatch.setattr(runtime, "core_count", lambda: 1)  # one core: one after the other, on the first session
    assert np.array_equal(runner.side_by_side([batch[:1], batch[1:]])[1][0], runner(batch[1:])[0])


def test_sessions_share_one_arena_once_registered_and_run_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process's shared arena is registered once (a second call does not register again, which
    ONNX Runtime refuses); where it cannot be, sessions are still built, with their own arenas."""
    import onnxruntime as ort

    from attention_unet.model import runtime

    assert runtime.shared_arena() and runtime.shared_arena()

    def refused(*args: object) -> None:
        raise RuntimeError("an allocator is already registered")

    monkeypatch.setattr(runtime, "_ARENA", [])
    monkeypatch.setattr(ort, "create_and_register_allocator", refused)
    assert not runtime.shared_arena()
    runner, _ = runtime.shipped_onnx(pretrained_path().with_suffix(".int8.onnx"))
    assert runner(np.zeros((1, 3, 32, 32), np.float32))[0].shape == (1, 2, 32, 32)
