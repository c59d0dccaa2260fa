"""bioimage.io packages of the shipped models: validated by the reference library offline (its
weights run on the test tensors), our pipeline's output reproduced within 1e-4, loadable back with
the same labels, and damaged packages refused in one line."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

os.environ.setdefault("BIOIMAGEIO_PERFORM_IO_CHECKS", "0")  # offline: before bioimageio is imported
core = pytest.importorskip("bioimageio.core")

from attention_unet.cli import main
from attention_unet.io.data import SAMPLE_DIR

SAMPLE = SAMPLE_DIR / "images" / "05040e2e959c3f5632558fc9683fec88f0010026c555b499066346f67fdd0e13.png"


@pytest.fixture(scope="module", params=["nuclei", "nuclei-he"])
def package(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    path = tmp_path_factory.mktemp("packages") / f"{request.param}.zip"
    assert main(["export", "--model", request.param, "--bioimageio", str(path)]) == 0
    return request.param, path


def test_the_package_passes_bioimageio_test_with_both_weight_formats(package: tuple[str, Path]) -> None:
    """`bioimageio test`'s own function: format, test tensors reproduced by ONNX and TorchScript
    within the package's tolerance (1e-4 absolute, no element excepted), batch and size changes."""
    name, path = package
    summary = core.test_model(str(path))
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failed
    reproduced = [d.name for d in summary.details if d.name.startswith("Reproduce test outputs")]
    assert len(reproduced) == 2 and any("onnx" in r for r in reproduced) and any("torchscript" in r for r in reproduced)
    with zipfile.ZipFile(path) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
    assert rdf["format_version"].startswith("0.5.") and rdf["license"] == {"nuclei": "MIT"}.get(name, "CC-BY-NC-SA-4.0")
    tolerance = rdf["config"]["bioimageio"]["reproducibility_tolerance"][0]
    assert tolerance["absolute_tolerance"] == 1e-4 and tolerance["mismatched_elements_per_million"] == 0
    assert any("Oktay" in c["text"] for c in rdf["cite"]) and (
        name == "nuclei" or any("Kumar" in c["text"] for c in rdf["cite"])
    )


def test_the_package_loads_back_with_the_shipped_models_labels(package: tuple[str, Path], tmp_path: Path) -> None:
    name, path = package
    for model, out in ((str(path), "package"), (name, "shipped")):
        argv = ["predict", str(SAMPLE), "--model", model, "--engine", "torch", "--out", str(tmp_path / out)]
        assert main(argv) == 0
    labels = [tifffile.imread(tmp_path / out / f"{SAMPLE.stem}_labels.tif") for out in ("package", "shipped")]
    np.testing.assert_array_equal(labels[0], labels[1])
    assert labels[0].max() > 5
    import imageio.v3 as iio

    from attention_unet import Segmenter

    np.testing.assert_array_equal(Segmenter(str(path)).segment(iio.imread(SAMPLE)).labels, labels[1])


def _rewritten(source: Path, target: Path, change: str) -> Path:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        rdf = yaml.safe_load(old.read("rdf.yaml"))
        for item in old.infolist():
            data = old.read(item)
            if item.filename == "rdf.yaml":
                if change == "version":
                    rdf["format_version"] = "0.4.10"
                elif change == "not ours":
                    rdf["config"].pop("attention_unet")
                data = yaml.safe_dump(rdf).encode()
            elif item.filename == "model.onnx" and change == "tampered":
                data = data[:-16] + bytes(16)
            elif item.filename == "model.onnx" and change == "no weights":
                continue
            new.writestr(item, data)
    return target


@pytest.mark.parametrize("package", ["nuclei"], indirect=True)  # one model's package is enough
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("version", "a bioimage.io model of format 0.5.x is needed, not 0.4.10"),
        ("not ours", "a bioimage.io package, but not one attention-unet made"),
        ("no weights", "the package has no ONNX weights file"),
        ("tampered", "its ONNX weights do not match the sha256 in its description"),
    ],
)
def test_a_damaged_or_foreign_package_is_one_line(
    package: tuple[str, Path], tmp_path: Path, change: str, expected: str, capsys
) -> None:
    bad = _rewritten(package[1], tmp_path / "bad.zip", change)
    capsys.readouterr()
    assert main(["predict", str(SAMPLE), "--model", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"bad.zip: {expected}" in err and "Traceback" not in err


def test_export_never_replaces_a_zip_that_is_not_its_package(tmp_path: Path, capsys) -> None:
    mine = tmp_path / "mine.zip"
    with zipfile.ZipFile(mine, "w") as archive:
        archive.writestr("notes.txt", "the user's notes")
    assert main(["export", "--bioimageio", str(mine)]) == 2
    assert "exists and is no package attention-unet wrote; not replacing it" in capsys.readouterr().err
    with zipfile.ZipFile(mine) as archive:
        assert archive.read("notes.txt") == b"the user's notes"


def test_a_model_trained_from_nuclei_he_keeps_its_licence() -> None:
    """Weights derived from CC BY-NC-SA weights, or trained on MoNuSeg, keep those terms in the package."""
    from attention_unet.model.bioimageio import licence_and_credit

    assert licence_and_credit({"init": {"from": "nuclei-he"}})[0] == "CC BY-NC-SA 4.0"
    assert licence_and_credit({"train": {"data": ["../shared/data/monuseg"]}})[0] == "CC BY-NC-SA 4.0"
    assert licence_and_credit({"init": {"from": "nuclei"}})[0] == "MIT"
    assert licence_and_credit({"card": {"licence": "CC BY 4.0", "credit": "me"}}) == ("CC BY 4.0", "me")


def test_without_the_extra_export_says_what_to_install(monkeypatch, tmp_path: Path, capsys) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "bioimageio.spec", None)  # as if not installed
    assert main(["export", "--bioimageio", str(tmp_path / "m.zip")]) == 2
    assert "pip install 'attention-unet[bioimageio]'" in capsys.readouterr().err


def test_export_writes_nothing_beside_the_model(tmp_path: Path) -> None:
    """The package's files are made in a temporary folder: the model's own folder (a user's run,
    or the shipped weights) is left as it was."""
    from attention_unet.model import AttentionUNet, ModelConfig, save_model

    save_model(AttentionUNet(ModelConfig(width=4, depth=2)).eval(), tmp_path / "mine", {"train": {"norm": "polarity"}})
    before = sorted(p.name for p in (tmp_path / "mine").iterdir())
    assert main(["export", "--model", str(tmp_path / "mine"), "--bioimageio", str(tmp_path / "mine.zip")]) == 0
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == before
    assert core.test_model(str(tmp_path / "mine.zip")).status == "passed"
