"""bioimage.io packages (model specification 0.5) of our models, for deepImageJ (Fiji), QuPath and
ilastik, and reading one of ours back.

A package holds the network in ONNX and TorchScript (both output logits; a sigmoid postprocessing
step turns them into probabilities), a test input and the probabilities our own pipeline gives for
it, a cover, the model card and the model's licence. The input is the image's three colour channels
(a grey image repeated), normalised by the spec's ``scale_range`` (the 1st and 99.8th percentile of
the whole image, as ours) and clipped to 0..1, then, for a ``stain`` model, turned round (dark H&E
nuclei made bright). What the spec cannot say: ``polarity`` models turn an image round only when its
median pixel is bright (brightfield); a host runs them unturned, so invert brightfield images first.
Instances, auto scale and test-time augmentation are our pipeline's, not the package's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.limits import check_model_file, read_zip_entry

VALIDATION = """
## Validation

The package's test output is attention-unet's own probabilities for its test input (one tile, native
scale, no test-time augmentation); `bioimageio test` reproduces it from both weight formats. The
scores of the model are its card's (Evaluation above, where present): measured with attention-unet's
whole pipeline (auto scale, instances), which a host that runs the package alone does not apply.
"""
# no DOI, URL or file-name checks over the network when describing or testing a package (offline)
os.environ.setdefault("BIOIMAGEIO_PERFORM_IO_CHECKS", "0")
FORMAT = "0.5"  # the model specification's major.minor this module writes and reads
SPDX = {"MIT": "MIT", "CC BY-NC-SA 4.0": "CC-BY-NC-SA-4.0", "CC BY 4.0": "CC-BY-4.0", "CC0": "CC0-1.0"}
# (what the credit names, the citation's text, its DOI): the method and each dataset a model learnt from
CITATIONS = (
    ("", "Oktay et al. 2018, Attention U-Net: learning where to look for the pancreas", "10.48550/arXiv.1804.03999"),
    ("Caicedo", "Caicedo et al. 2019, nucleus segmentation across imaging experiments (DSB-2018)", "10.1038/s41592-019-0612-7"),
    ("Ljosa", "Ljosa et al. 2012, annotated high-throughput microscopy image sets (BBBC039)", "10.1038/nmeth.2083"),
    ("Naylor", "Naylor et al. 2019, segmentation of nuclei in histopathology images (TNBC)", "10.1109/TMI.2018.2865709"),
    ("Kumar", "Kumar et al. 2017, a dataset and a technique for nuclear segmentation (MoNuSeg)", "10.1109/TMI.2017.2677499"),
    ("Kumar", "Kumar et al. 2020, a multi-organ nucleus segmentation challenge (MoNuSeg)", "10.1109/TMI.2019.2947628"),
)  # fmt: skip
# what `bioimageio test` holds the package to: our pipeline's probabilities within 1e-4, everywhere
BIOIMAGEIO_CONFIG = {
    "reproducibility_tolerance": [
        {"absolute_tolerance": 1e-4, "relative_tolerance": 0.0, "mismatched_elements_per_million": 0}
    ],
    "architecture_type": "Attention U-Net",
    "task": "nucleus segmentation (semantic, with contours for instances)",
}
HALO = 32  # pixels a host should crop from each tile's output edge (where the network sees no context)
TEST_SIZE = 256  # the test image's edge (a crop of an embedded sample image)


def export_package(model: str | Path | None, out: str | Path) -> Path:
    """Write ``out`` (a .zip): the bioimage.io package of a shipped model's name or a model path."""
    try:
        from bioimageio.spec import save_bioimageio_package
    except ImportError:
        raise InputError(
            "a bioimage.io package needs the bioimageio extra: pip install 'attention-unet[bioimageio]'"
        ) from None

    from .files import load_model, pretrained_path
    from .zoo import entries, resolve

    weights = resolve(model) or pretrained_path()
    network = load_model(weights)
    out = Path(out)
    if out.suffix != ".zip" or out.is_dir():
        raise InputError(f"{out}: a bioimage.io package is a .zip file; give its path")
    if out.exists() and not is_ours(out):
        raise InputError(f"{out}: exists and is no package attention-unet wrote; not replacing it")
    entry = next((e for e in entries().values() if e.weights.resolve() == Path(weights).resolve()), None)
    with tempfile.TemporaryDirectory(prefix="attention-unet-bioimageio-") as tmp:
        descr = describe(network, Path(weights), entry, Path(tmp))
        from .export import replacing

        out.parent.mkdir(parents=True, exist_ok=True)
        with replacing(out) as temporary:
            save_bioimageio_package(descr, output_path=temporary.with_suffix(".zip"))
            temporary.with_suffix(".zip").rename(temporary)
    return out


def test_image(norm: str) -> np.ndarray:
    """An embedded sample image of the kind the model is for (stained tissue for a ``stain`` model,
    fluorescence otherwise), cropped to TEST_SIZE x TEST_SIZE, as H x W x 3."""
    import imageio.v3 as iio

    from ..io import data

    kind = "stained" if norm == "stain" else "fluorescence"
    for path in sorted((Path(data.SAMPLE_DIR) / "images").glob("*.png")):
        image = data.to_rgb(iio.imread(path))
        if min(image.shape[:2]) >= TEST_SIZE and data.modality(image) == kind:
            return np.ascontiguousarray(image[:TEST_SIZE, :TEST_SIZE])
    raise InputError(f"no embedded sample image of kind {kind} for the package's test input")


def test_tensors(weights: Path, norm: str, folder: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """The test input (1 x 3 x H x W float32, the raw pixels) and our pipeline's probabilities for
    it (1 x C x H x W: one tile, native scale, no test-time augmentation, no smoothing), saved as
    .npy; refused when the package's fixed orientation would differ from ours on this image."""
    from ..inference.engine import load_predictor
    from ..io import data

    image = test_image(norm)
    lo, hi = data.normalisation_range(image, norm)
    if (hi < lo) != (norm == "stain"):
        raise InputError(f"the test image is turned round by '{norm}' normalisation, unlike the package's input")
    network = load_predictor(weights, engine="torch", tile=TEST_SIZE).network((lo, hi))
    probs = network(image, 0.0, False)[0]  # no smoothing, one view
    tensors = (image.transpose(2, 0, 1)[None].astype(np.float32), probs[None].astype(np.float32))
    paths = (folder / "test_input.npy", folder / "test_output.npy")
    for path, tensor in zip(paths, tensors, strict=True):
        np.save(path, tensor)
    return *paths, *tensors


def cover(image: np.ndarray, probs: np.ndarray, path: Path) -> Path:
    """A 2:1 cover: the test image beside its nucleus probability (magma-like grey ramp)."""
    import imageio.v3 as iio

    rgb = np.clip(image.transpose(1, 2, 0) / max(float(image.max()), 1.0) * 255, 0, 255).astype(np.uint8)
    grey = (np.clip(probs[0], 0, 1) * 255).astype(np.uint8)
    iio.imwrite(path, np.concatenate([rgb, np.repeat(grey[..., None], 3, axis=2)], axis=1))
    return path


def documentation(entry: Any, name: str, info: dict[str, Any], folder: Path) -> Path:
    """The model card (docs/models/NAME.md of a shipped model, found beside the package when it
    is installed from a checkout), else a short card from the model's metadata."""
    card = Path(__file__).parents[3] / "docs" / "models" / f"{entry.name}.md" if entry else None
    path = folder / "README.md"
    if card is not None and card.is_file():
        path.write_text(card.read_text() + VALIDATION)
    else:
        path.write_text(
            f"# {name}\n\nAn Attention U-Net (attention-unet) for nuclei; input normalisation "
            f"`{info.get('train', {}).get('norm', 'fixed')}`. Trained on: "
            f"{info.get('card', {}).get('trained_on', 'not recorded')}.\n{VALIDATION}"
        )
    return path


def describe(network: Any, weights: Path, entry: Any, folder: Path) -> Any:
    """The package's ModelDescr for ``network`` (loaded from ``weights``), its files written into
    ``folder``."""
    import bioimageio.spec.model.v0_5 as spec

    from .. import __version__
    from .export import export_onnx, export_torchscript

    norm = network.info.get("train", {}).get("norm", "fixed")
    if norm not in ("percentile", "polarity", "stain"):
        raise InputError(f"a model with '{norm}' normalisation cannot be packaged (percentile, polarity or stain)")
    test_in, test_out, image, probs = test_tensors(weights, norm, folder)
    card = network.info.get("card", {})
    home = weights if weights.is_dir() else weights.parent  # a model folder, or a run's model/
    name = card.get("name") or (home.parent.name if home.name == "model" else home.name)
    licence, credit = licence_and_credit(network.info)
    weights = spec.WeightsDescr(
        # both exported from the same PyTorch weights (model.safetensors, not in the package): the spec
        # asks for one original, and the TorchScript trace is the closer to them
        onnx=spec.OnnxWeightsDescr(
            **_file(export_onnx(network, folder / "model.onnx")), opset_version=17, parent="torchscript"
        ),
        torchscript=spec.TorchscriptWeightsDescr(
            **_file(export_torchscript(network, folder / "model.pt")), pytorch_version=spec.Version(_torch_version())
        ),
    )
    return spec.ModelDescr(
        name=f"attention-unet {name}",
        description=f"Nuclei in {card.get('modality', 'microscopy')}: an Attention U-Net's nucleus and contour "
        f"probabilities. Trained on {card.get('trained_on', 'data not recorded')}. Weights licence {licence}.",
        authors=[spec.Author(name="attention-unet developers")],
        cite=[spec.CiteEntry(text=text, doi=spec.Doi(doi)) for key, text, doi in CITATIONS if key in credit],
        license=spec.LicenseId(SPDX.get(licence, licence)),
        documentation=spec.FileDescr(source=documentation(entry, name, network.info, folder)),
        covers=[spec.FileDescr(source=cover(image[0], probs[0], folder / "cover.png"))],
        tags=["nuclei", "instance-segmentation", "attention-unet", "2d", *card.get("route", [])],
        version=spec.Version(__version__),
        inputs=[input_tensor(spec, test_in, norm, network.config.depth)],
        outputs=[output_tensor(spec, test_out, probs.shape[1])],
        weights=weights,
        config={"attention_unet": network.info, "bioimageio": BIOIMAGEIO_CONFIG},
    )


def licence_and_credit(info: dict[str, Any]) -> tuple[str, str]:
    """The weights' licence and whom to credit: the card's; else those of the shipped model training
    started from (weights derived from CC BY-NC-SA weights keep those terms); else CC BY-NC-SA 4.0
    when MoNuSeg was among the training data; else MIT, the package's."""
    from .zoo import entries

    card = info.get("card") or {}
    if card.get("licence"):
        return str(card["licence"]), str(card.get("credit", ""))
    start = entries().get(str((info.get("init") or {}).get("from", "")))
    if start is not None:
        return start.licence, start.credit
    data = " ".join(map(str, info.get("train", {}).get("data", []))).lower()
    return ("CC BY-NC-SA 4.0", "Kumar et al. (MoNuSeg)") if "monuseg" in data else ("MIT", "")


def _file(path: Path) -> dict[str, Any]:
    """A weights file's source and sha256 (which a reader checks before running it)."""
    from bioimageio.spec._internal.io_basics import Sha256

    return {"source": path, "sha256": Sha256(hashlib.sha256(path.read_bytes()).hexdigest())}


def _torch_version() -> str:
    import torch

    return torch.__version__.split("+")[0]


def input_tensor(spec: Any, test: Path, norm: str, depth: int) -> Any:
    """The image: batch, 3 channels, y and x multiples of 2**depth; normalised as described above."""
    steps = [
        spec.ScaleRangeDescr(
            kwargs=spec.ScaleRangeKwargs(axes=["channel", "y", "x"], min_percentile=1.0, max_percentile=99.8)
        ),
        spec.ClipDescr(kwargs=spec.ClipKwargs(min=0.0, max=1.0)),
    ]
    if norm == "stain":
        steps.append(spec.ScaleLinearDescr(kwargs=spec.ScaleLinearKwargs(gain=-1.0, offset=1.0)))
    step = 2**depth  # the smallest input a host may give holds the output's halo twice over
    size = spec.ParameterizedSize(min=step * -(-4 * HALO // step), step=step)
    return spec.InputTensorDescr(
        id=spec.TensorId("image"),
        description="the image's three colour channels (a grey image repeated three times), raw values",
        axes=[
            spec.BatchAxis(),
            spec.ChannelAxis(channel_names=[spec.Identifier(c) for c in ("red", "green", "blue")]),
            spec.SpaceInputAxis(id=spec.AxisId("y"), size=size),
            spec.SpaceInputAxis(id=spec.AxisId("x"), size=size),
        ],
        test_tensor=spec.FileDescr(source=test),
        preprocessing=steps,
    )


def output_tensor(spec: Any, test: Path, channels: int) -> Any:
    """The probabilities: batch, nucleus (and contour) channels, the input's y and x."""
    names = ["nucleus", "contour"][:channels]
    axes = [spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier(c) for c in names])]
    for axis in ("y", "x"):
        reference = spec.SizeReference(tensor_id=spec.TensorId("image"), axis_id=spec.AxisId(axis))
        axes.append(spec.SpaceOutputAxisWithHalo(id=spec.AxisId(axis), size=reference, halo=HALO))
    return spec.OutputTensorDescr(
        id=spec.TensorId("probability"),
        description="each pixel's probability of lying in a nucleus (and on a nucleus's contour)",
        axes=axes,
        test_tensor=spec.FileDescr(source=test),
        postprocessing=[spec.SigmoidDescr()],
    )


# ------------------------------------------------------------------------------ reading one back


def _rdf(archive: zipfile.ZipFile, name: str | Path) -> dict:
    import yaml

    found = [n for n in archive.namelist() if n in ("rdf.yaml", "bioimageio.yaml") or n.endswith(".bioimageio.yaml")]
    if not found:
        raise InputError(f"{name}: not a bioimage.io package (no rdf.yaml)")
    try:
        rdf = yaml.safe_load(read_zip_entry(archive, found[0], name))
    except yaml.YAMLError:
        raise InputError(f"{name}: its {found[0]} is not readable YAML") from None
    if not isinstance(rdf, dict):
        raise InputError(f"{name}: its {found[0]} is not a model description")
    return rdf


def is_ours(path: str | Path) -> bool:
    """Whether ``path`` is a bioimage.io package attention-unet wrote (so export may replace it)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return "attention_unet" in (_rdf(archive, path).get("config") or {})
    except (zipfile.BadZipFile, OSError, InputError):
        return False


@contextlib.contextmanager
def package_onnx(path: str | Path) -> Iterator[Path]:
    """The ONNX weights of a package of ours, checked (spec version, ours, the weights' sha256),
    in a temporary file for as long as the block runs; one line for any package that is not."""
    check_model_file(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path}: not a readable zip file ({exc})") from None
    with archive, tempfile.TemporaryDirectory(prefix="attention-unet-package-") as tmp:
        rdf = _rdf(archive, path)
        version = str(rdf.get("format_version", ""))
        if rdf.get("type") != "model" or not version.startswith(FORMAT + "."):
            raise InputError(f"{path}: a bioimage.io model of format {FORMAT}.x is needed, not {version or 'none'}")
        if "attention_unet" not in (rdf.get("config") or {}):
            raise InputError(f"{path}: a bioimage.io package, but not one attention-unet made (no config)")
        onnx = (rdf.get("weights") or {}).get("onnx") or {}
        source = str(onnx.get("source", ""))
        if not source or source not in archive.namelist():
            raise InputError(f"{path}: the package has no ONNX weights file")
        with open(Path(tmp) / "model.onnx", "wb") as out:
            out.write(read_zip_entry(archive, source, path))
        digest = hashlib.sha256((Path(tmp) / "model.onnx").read_bytes()).hexdigest()
        if digest != onnx.get("sha256"):
            raise InputError(f"{path}: its ONNX weights do not match the sha256 in its description (changed?)")
        yield Path(tmp) / "model.onnx"
