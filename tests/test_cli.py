"""End to end through main([...]): train -> evaluate -> predict -> export on a tiny dataset, and
the command line's error contract."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from attention_unet.cli import main
from attention_unet.model import read_model_info

TINY = ["--preset", "small", "--width", "4", "--depth", "2", "--batch-size", "4", "--epochs", "2"]


@pytest.fixture(scope="module")
def run_dir(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    config = out.parent / "train.yaml"
    config.write_text("loss: bce+dice\nlr: 0.01\nepochs: 5\n")
    assert main(["train", "--data", str(tiny_dataset), "--out", str(out), "--config", str(config), *TINY]) == 0
    return out


def test_train_writes_a_complete_run_folder(run_dir: Path) -> None:
    for name in (
        "config.yaml",
        "split.json",
        "metrics.csv",
        "checkpoints/last.ckpt",
        "model/model.safetensors",
        "model/config.json",
    ):
        assert (run_dir / name).is_file(), name
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["loss"] == "bce+dice" and resolved["lr"] == 0.01  # from the YAML file
    assert resolved["epochs"] == 2  # the flag overrides the file
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in ("train_loss_epoch", "val_loss", "val_f1", "val_iou", "val_recall", "val_precision", "lr-Adam"):
        assert column in header
    split = json.loads((run_dir / "split.json").read_text())
    assert [len(split[k]) for k in ("train", "valid", "test")] == [6, 2, 2]
    info = read_model_info(run_dir)
    assert info["model"]["width"] == 4 and info["train"]["loss"] == "bce+dice"


def test_evaluate_scores_every_image_of_a_folder_too_small_to_split(
    tiny_model: Path, tiny_dataset: Path, tmp_path: Path, capsys
) -> None:
    few = tmp_path / "few"
    for kind in ("images", "masks"):
        (few / kind).mkdir(parents=True)
        for name in ("img00.png", "img01.png", "img02.png"):
            (few / kind / name).write_bytes((tiny_dataset / kind / name).read_bytes())
    args = ["evaluate", "--model", str(tiny_model), "--data", str(few), "--no-strips", "--json"]
    assert main([*args, "--split", "all", "--out", str(tmp_path / "all")]) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == 3
    assert main([*args, "--split", "test", "--out", str(tmp_path / "test")]) == 2  # a part needs a split
    assert "need at least 5 images" in capsys.readouterr().err


def test_evaluate_prints_the_table_and_writes_scores(run_dir: Path, tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    assert (
        main(["evaluate", "--model", str(run_dir), "--data", str(tiny_dataset), "--out", str(tmp_path), "--json"]) == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["protocol"] == "resize256" and summary["n_images"] == 2
    assert set(summary) == {
        "data",
        "protocol",
        "n_images",
        "accuracy",
        "f1",
        "jaccard",
        "recall",
        "precision",
        "dsb_score",
        "tp_fp_fn_ratio_at_0.5",
        "relative_count_error",
        "f1d",
        "aji",
        "pq",
    }
    rows = (tmp_path / "score.csv").read_text().splitlines()
    assert len(rows) == 3 and all(k in rows[0] for k in ("dsb_score", "f1d", "aji", "pq", "model"))
    assert len(list((tmp_path / "strips").glob("*.png"))) == 2
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(run_dir),
                "--data",
                str(tiny_dataset),
                "--out",
                str(tmp_path / "n"),
                "--protocol",
                "native",
                "--split",
                "all",
            ]
        )
        == 0
    )
    assert "protocol native, 10 images" in capsys.readouterr().out


def test_resume_continues_from_the_last_checkpoint(run_dir: Path, tiny_dataset: Path) -> None:
    assert main(["train", "--data", str(tiny_dataset), "--out", str(run_dir), *TINY[:-1], "3", "--resume"]) == 0
    epochs = {line.split(",")[0] for line in (run_dir / "metrics.csv").read_text().splitlines()[1:]}
    assert {"0", "1", "2"} <= epochs  # the earlier epochs' rows are kept


def test_export_onnx_and_predict_with_it(run_dir: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    onnx_path = tmp_path / "m.onnx"
    assert (
        main(["export", "--model", str(run_dir), "--onnx", str(onnx_path), "--torchscript", str(tmp_path / "m.pt")])
        == 0
    )
    assert onnx_path.is_file() and (tmp_path / "m.pt").is_file()
    image = tiny_dataset / "images" / "img00.png"
    assert (
        main(["predict", str(image), "--out", str(tmp_path / "p"), "--model", str(onnx_path), "--engine", "onnx"]) == 0
    )
    assert (tmp_path / "p" / "img00_mask.png").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--data", "/nonexistent/data"], "/nonexistent/data: no such file or folder"),
        (["train", "--input", "crop:x"], "--input must be"),
        (["evaluate", "--model", "/nonexistent/model"], "/nonexistent/model: no such model file or folder"),
        (["evaluate", "--zoom", "100"], "at --zoom 100: 25600 x 25600 pixels is above the limit"),  # not killed
        (["predict", "x.png", "--out", "o", "--min-confidence", "1.5"], "--min-confidence must be at least 0"),
        (["evaluate", "--smoothing", "-1"], "--smoothing must be a Gaussian sigma from 0 to 8 pixels"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(argv: list[str], message: str, capsys, tmp_path: Path) -> None:
    assert main([*argv, "--out", str(tmp_path / "o")] if argv[0] == "train" else argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("attention-unet: error:")


def test_bad_yaml_config_is_named(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("unknown_key: 1\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "bad.yaml: unknown option(s) unknown_key" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["train", "--config"], "cannot read YAML config (UnicodeDecodeError"),
        (["evaluate", "--split-file"], "cannot read split file (UnicodeDecodeError"),
    ],
)
def test_a_binary_file_for_a_text_option_is_named(tmp_path: Path, capsys, option: list[str], message: str) -> None:
    binary = tmp_path / "image.tif"
    binary.write_bytes(b"II*\x00\xb6\xff\x00")  # not UTF-8: it had ended in a traceback
    assert main([*option, str(binary), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{binary}: {message}" in err[0]


def test_help_does_not_import_torch() -> None:
    code = "import sys; from attention_unet.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "attention_unet", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("attention-unet ")
