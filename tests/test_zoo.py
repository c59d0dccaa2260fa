"""The model zoo: shipped models by name, each with a card and a licence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attention_unet import zoo
from attention_unet.cli import main
from attention_unet.errors import InputError


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
