"""The model zoo: shipped models by name, each with a card and a licence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attention_unet.cli import main
from attention_unet.errors import InputError
from attention_unet.model import zoo


def test_every_shipped_model_has_a_card_with_its_licence() -> None:
    entries = zoo.entries()
    assert zoo.DEFAULT in entries and next(iter(entries)) == zoo.DEFAULT
    for entry in entries.values():
        assert entry.licence and entry.modality and entry.trained_on and entry.weights.is_file()
    assert entries[zoo.DEFAULT].licence == "MIT"


def test_models_lists_names_and_licences(capsys) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for entry in zoo.entries().values():
        assert entry.name in out and entry.licence in out


def test_an_unknown_name_lists_the_shipped_ones(tmp_path: Path, capsys) -> None:
    with pytest.raises(InputError, match="^model nosuch: .*shipped: nuclei"):
        zoo.resolve("nosuch")
    assert main(["predict", str(tmp_path), "--model", "nosuch", "--out", str(tmp_path / "o")]) == 2
    assert "--model nosuch: no such model file or shipped model (shipped: nuclei" in capsys.readouterr().err


def test_a_name_loads_the_same_model_as_the_default() -> None:
    from attention_unet.model import load_model, pretrained_path

    assert zoo.resolve(zoo.DEFAULT) == pretrained_path()
    assert load_model(zoo.DEFAULT).info == load_model().info


def test_a_model_without_a_licence_is_refused(tmp_path: Path, monkeypatch, tiny_model: Path) -> None:
    """A folder under weights/ whose card lacks a licence stops the zoo (one line), not silently ships."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    weights = tmp_path / "weights"
    (weights / "unlicensed").mkdir(parents=True)
    with safe_open(str(tiny_model / "model.safetensors"), framework="pt") as f:
        info = json.loads(f.metadata()["attention_unet"])
    info["card"] = {"name": "unlicensed", "modality": "fluorescence", "trained_on": "nothing"}
    tensors = load_file(str(tiny_model / "model.safetensors"))
    save_file(tensors, str(weights / "unlicensed" / "model.safetensors"), {"attention_unet": json.dumps(info)})
    monkeypatch.setattr(zoo, "WEIGHTS", weights)
    with pytest.raises(InputError, match="needs licence in its card; refusing it"):
        zoo.entries()
    info["card"]["licence"] = "CC0"
    save_file(tensors, str(weights / "unlicensed" / "model.safetensors"), {"attention_unet": json.dumps(info)})
    assert zoo.entries()["unlicensed"].licence == "CC0"


def test_auto_sends_each_image_to_the_model_of_its_kind(capsys) -> None:
    import numpy as np

    from attention_unet.inference.choice import ModelChoice
    from attention_unet.inference.pipeline import make_predictor

    from .conftest import brightness_runner

    loads: list[str] = []

    def load(name: str):
        loads.append(name)
        return make_predictor(brightness_runner, name=name)

    choice = ModelChoice(load, {"stained": "he"}, "nuclei")
    fluorescence = np.zeros((32, 32, 3), np.uint8)
    fluorescence[8:16, 8:16] = 200
    stained = np.full((32, 32, 3), (230, 200, 220), np.uint8)
    stained[8:16, 8:16] = (80, 40, 120)
    assert choice.for_image(fluorescence).name == "nuclei" and choice.for_image(stained).name == "he"
    assert choice.for_image(stained).name == "he" and loads == ["nuclei", "he"]  # each loaded once
    assert choice.for_image(np.full((32, 32), 200, np.uint8)).name == "nuclei"  # no colour axis: the default, noted
    assert "note: image kind unknown" in capsys.readouterr().err


def test_predict_auto_names_the_model_and_its_licence(tmp_path: Path, capsys) -> None:
    import csv

    from attention_unet.io.data import SAMPLE_DIR

    image = min((SAMPLE_DIR / "images").iterdir())
    assert main(["predict", str(image), "--model", "auto", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["model"] == zoo.DEFAULT
    assert f"model {zoo.DEFAULT}: licence MIT" in capsys.readouterr().err
