"""Training: reproducibility, the dataset transforms, and DDP agreeing with one process."""

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from attention_unet.cli import main
from attention_unet.errors import InputError
from attention_unet.instances import contours, distances, targets
from attention_unet.io import data
from attention_unet.model import load_model, read_model_info, save_model
from attention_unet.training.augment import pseudo_stain, scaled_crop, stain_grain, stain_jitter
from attention_unet.training.config import TrainConfig
from attention_unet.training.datasets import TrainDataset
from attention_unet.training.module import segmentation_loss

from .conftest import synthetic, two_touching_boxes

TINY = ["--preset", "small", "--width", "4", "--depth", "2", "--batch-size", "4", "--epochs", "1"]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def test_same_seed_gives_the_same_run(tiny_dataset: Path, tmp_path: Path) -> None:
    args = ["train", "--data", str(tiny_dataset), *TINY, "--input", "crop:32", "--augment", "full", "--seed", "7"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert main([*args[:-1], "8", "--out", str(tmp_path / "c")]) == 0
    assert not all(torch.equal(a[k], weights(tmp_path / "c")[k]) for k in a)


def test_last_checkpoint_is_the_last_epoch_even_when_it_is_not_the_best(tiny_dataset: Path, tmp_path: Path) -> None:
    """--resume last continues from the last epoch, not from the best one (Lightning's save_last
    alone writes last.ckpt only when a best checkpoint is saved)."""
    run = tmp_path / "run"
    args = ["train", "--data", str(tiny_dataset), *TINY[:-1], "3", "--monitor", "val_f1", "--lr", "1e-12"]
    assert main([*args, "--out", str(run)]) == 0
    best = json.loads((run / "model" / "config.json").read_text())["best"]["checkpoint"]
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert best != "best-epoch=002.ckpt"  # the last epoch is not the best: the case that matters
    assert last["epoch"] == 2 and last["global_step"] == 3  # the tiny set's train part: one step an epoch
    assert main(["train", "--out", str(run), "--resume", "--epochs", "4"]) == 0
    epochs = [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert "3" in epochs and epochs.count("3") == epochs.count("2")  # one more epoch, not a repeat of 1-2


def test_training_shows_the_run_not_lightnings_chatter(tiny_dataset: Path, tmp_path: Path) -> None:
    """Lightning's advertisement and notes on its own defaults are dropped, its device line kept;
    "Previous log files in this directory will be deleted" (the run's folder holds only its own
    config and split when the logger starts) is not shown."""
    import logging

    from lightning.pytorch.utilities import rank_zero

    from attention_unet.training.fit import quiet_lightning

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record.getMessage())

    kept: list[str] = []
    logger, handler = logging.getLogger("lightning.pytorch.utilities.rank_zero"), Keep()
    logger.addHandler(handler)
    try:
        with quiet_lightning():
            rank_zero.rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try ...")
            rank_zero.rank_zero_info("`Trainer(limit_train_batches=1.0)` was configured so 100% of the batches ...")
            rank_zero.rank_zero_info("GPU available: False, used: False")
        rank_zero.rank_zero_info("TPU available: False, using: 0 TPU cores")  # outside: shown again
    finally:
        logger.removeHandler(handler)
    assert kept == ["GPU available: False, used: False", "TPU available: False, using: 0 TPU cores"]

    with warnings.catch_warnings(record=True) as caught:  # every warning training gives
        warnings.simplefilter("always")
        assert main(["train", "--data", str(tiny_dataset), *TINY, "--out", str(tmp_path / "run")]) == 0
    assert caught  # recorded at all (Lightning warns of the tiny set's few batches)
    misleading = ("will be deleted", "LeafSpec", "logging interval")  # the tiny set has 1 batch an epoch
    assert not [w for w in caught if any(words in str(w.message) for words in misleading)]


def test_crop_mode_gives_fixed_size_samples_with_binary_masks(tiny_dataset: Path) -> None:
    records = data.load_records(tiny_dataset)
    dataset = TrainDataset(
        records, TrainConfig(input="crop:40", augment="full", norm="percentile", samples_per_epoch=25)
    )
    assert len(dataset) == 25
    for i in range(5):
        x, y = dataset[i]
        assert x.shape == (3, 40, 40) and y.shape == (1, 40, 40)
        assert set(torch.unique(y).tolist()) <= {0.0, 1.0}


def test_contour_targets_mark_the_seam_between_touching_nuclei(tiny_dataset: Path) -> None:
    labels = two_touching_boxes()
    rim = contours(labels)
    assert rim[10, 13:17].all() and not rim[10, 5:13].any()  # a 4-pixel seam; the inside stays off
    assert not rim[labels == 0].any()
    assert targets(labels, contour=True).shape == (2, 20, 30) and targets(labels, contour=False).shape == (1, 20, 30)
    dataset = TrainDataset(
        data.load_records(tiny_dataset), TrainConfig(input="crop:40", augment="full", contour=True, samples_per_epoch=5)
    )
    for i in range(5):
        _, y = dataset[i]
        assert y.shape == (2, 40, 40) and (y[1] <= y[0]).all()


def test_distance_targets_peak_at_each_nucleus_centre_whatever_its_size() -> None:
    labels = two_touching_boxes()
    d = distances(labels)
    assert (d[labels == 0] == 0).all() and (d[labels > 0] > 0).all() and d.max() == 1
    for k in (1, 2):  # touching nuclei: each has its own peak, and the seam between them is low
        assert d[labels == k].max() == 1
    assert d[10, 14] < 0.3 and d[10, 15] < 0.3
    big = np.kron(labels, np.ones((3, 3), labels.dtype))  # the same nuclei three times larger
    assert (
        distances(big).max() == 1
        and abs(distances(big)[labels.repeat(3, 0).repeat(3, 1) > 0].mean() - d[labels > 0].mean()) < 0.1
    )
    assert targets(labels, contour=True, distance=True).shape == (3, 20, 30)
    assert TrainConfig(contour=True, distance=True).model_config().out_channels == 3


def test_scaled_crop_shows_the_image_at_the_drawn_scale() -> None:
    from scipy import ndimage
    from skimage.segmentation import clear_border

    mask = np.zeros((400, 400), np.uint8)
    for y in range(10, 400, 40):
        for x in range(10, 400, 40):
            mask[y : y + 20, x : x + 20] = 1  # 20 x 20 squares, 400 pixels each
    image = np.repeat(mask[..., None], 3, axis=2).astype(np.float32)
    for seed in range(5):
        _, crop = scaled_crop(image, mask, 100, (0.5, 0.5), np.random.default_rng(seed))
        labels, n = ndimage.label(clear_border(crop))
        areas = np.bincount(labels.ravel())[1:]
        assert n >= 4 and 80 <= areas.mean() <= 120  # scale 0.5 in each direction: a quarter of the area


def test_losses() -> None:
    logits = torch.tensor([[[[10.0, -10.0]]]])
    target = torch.tensor([[[[1.0, 0.0]]]])
    for kind in ("bce", "dice", "bce+dice"):
        assert float(segmentation_loss(logits, target, kind)) < 1e-3
    assert float(segmentation_loss(-logits, target, "dice")) == pytest.approx(1 - 1 / 3, abs=1e-3)  # smoothing 1
    two = torch.cat([logits, -logits], 1), torch.cat([target, target], 1)  # one channel right, one wrong
    assert float(segmentation_loss(*two, "dice")) == pytest.approx(
        (1 - 1 / 3) / 2, abs=1e-3
    )  # Dice averaged over channels
    # a batch of a large right image and a small wrong one: pooled Dice barely notices the small one
    big, small = torch.full((1, 1, 10, 10), 10.0), torch.full((1, 1, 10, 10), -10.0)
    target = torch.zeros(2, 1, 10, 10)
    target[0] = 1
    target[1, :, :1, :1] = 1
    batch = torch.cat([big, small])
    assert float(segmentation_loss(batch, target, "dice")) < 0.01
    assert float(segmentation_loss(batch, target, "bce+image-dice")) - float(
        segmentation_loss(batch, target, "bce")
    ) == pytest.approx(0.25, abs=0.01)


def test_ddp_on_two_cpu_processes_matches_one_process(tiny_dataset: Path, tmp_path: Path) -> None:
    """Global batch 4: one process with batch 4 against two gloo processes with batch 2 each and
    synchronised BatchNorm. With the whole training part in one global batch, the sample order cannot
    differ. In float64 and with SGD the two agree to ~1e-14; in float32 the cancellation in BatchNorm's
    backward leaves ~1e-3 relative noise in the updates, and Adam's first steps (lr * sign(g)) would
    turn noise in near-zero gradients into lr-sized differences."""
    ids = sorted(p.stem for p in (tiny_dataset / "images").glob("*.png"))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ids[:4], "valid": ids[4:6], "test": ids[6:7]}))
    common = [
        "train",
        "--data",
        str(tiny_dataset),
        "--split-file",
        str(split),
        "--preset",
        "small",
        "--width",
        "4",
        "--depth",
        "2",
        "--epochs",
        "2",
        "--optimizer",
        "sgd",
        "--lr",
        "0.1",
        "--accelerator",
        "cpu",
        "--sync-bn",
        "--precision",
        "64-true",
    ]
    runs = {
        "one": [*common, "--batch-size", "4", "--devices", "1"],
        "ddp": [*common, "--batch-size", "2", "--devices", "2", "--strategy", "ddp"],
    }
    for name, argv in runs.items():
        result = subprocess.run(
            [sys.executable, "-m", "attention_unet", *argv, "--out", str(tmp_path / name)],
            check=False,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-2000:]
    one, ddp = (
        torch.load(tmp_path / r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for r in ("one", "ddp")
    )
    for key in one:
        torch.testing.assert_close(ddp[key], one[key], atol=1e-10, rtol=1e-10, msg=key)

    def losses(run: str) -> list[float]:
        lines = (tmp_path / run / "metrics.csv").read_text().splitlines()
        header = lines[0].split(",")
        col = header.index("train_loss_epoch")
        return [float(v.split(",")[col]) for v in lines[1:] if v.split(",")[col]]

    assert len(losses("one")) == 2
    np.testing.assert_allclose(losses("ddp"), losses("one"), rtol=1e-10)


def test_several_datasets_train_together_each_with_its_own_split(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    slides = tmp_path / "slides"
    for folder in ("images", "masks"):
        (slides / folder).mkdir(parents=True)
    for i in range(10):
        image, labels = synthetic(20 + i)
        iio.imwrite(
            slides / "images" / f"{i // 2:02d}_{i % 2}.png", np.dstack([255 - image, 200 - image // 2, 255 - image])
        )
        iio.imwrite(slides / "masks" / f"{i // 2:02d}_{i % 2}.png", labels.astype(np.uint16))
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(tiny_dataset),
                str(slides),
                *TINY,
                "--input",
                "crop:32",
                "--augment",
                "robust",
                "--balance",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    split = json.loads((run / "split.json").read_text())
    assert set(split) == {str(tiny_dataset), str(slides)}
    valid = split[str(slides)]["valid"]  # whole slides: 5 slides give 3 / 1 / 1
    assert len(valid) == 2 and valid[0][:2] == valid[1][:2]
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(run),
                "--data",
                str(tiny_dataset),
                str(slides),
                "--split",
                "valid",
                "--out",
                str(tmp_path / "e"),
                "--no-strips",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert f"| {slides} | 2 |" in table and f"| {tiny_dataset} | 2 |" in table
    assert (tmp_path / "e" / "slides" / "score.csv").read_text().count(f"{valid[0][:2]}_") == 2


def test_init_from_starts_from_the_model_and_refuses_contradictions(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    first = tmp_path / "first"
    assert (
        main(["train", "--data", str(tiny_dataset), *TINY, "--contour", "--norm", "polarity", "--out", str(first)]) == 0
    )
    config = TrainConfig.from_dict({"init_from": str(first)})
    assert (config.model_config().width, config.model_config().depth, config.contour, config.norm) == (
        4,
        2,
        True,
        "polarity",
    )
    fine = tmp_path / "fine"
    args = [
        "train",
        "--data",
        str(tiny_dataset),
        "--init-from",
        str(first),
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--lr",
        "1e-12",
        "--out",
    ]
    assert main([*args, str(fine)]) == 0
    start, tuned = weights(first), weights(fine)
    assert all(
        torch.allclose(start[k].float(), tuned[k].float(), atol=1e-6)
        for k in start
        if "running" not in k and "num_batches" not in k
    )
    info = read_model_info(fine)
    assert info["init"]["from"] == str(first) and len(info["init"]["sha256"]) == 64
    assert main([*args, str(tmp_path / "bad"), "--width", "8"]) == 2
    assert "--width gives width 8, but the --init-from model" in capsys.readouterr().err
    frozen = tmp_path / "frozen"
    assert main([*args[:-2], "1e-2", "--freeze-encoder", "--out", str(frozen)]) == 0
    after = weights(frozen)
    assert all(
        torch.equal(start[k], after[k]) for k in start if k.startswith(("encoders.", "bridge."))
    )  # BatchNorm statistics too
    assert not all(torch.equal(start[k], after[k]) for k in start if k.startswith("decoders."))


def test_stain_jitter_is_the_identity_at_zero_strength() -> None:
    """On an image made of haematoxylin, eosin and DAB (what H&E tissue is), zero jitter gives it back."""
    from skimage.color import hed2rgb

    rng = np.random.default_rng(0)
    image = hed2rgb(rng.uniform(0.0, 0.1, (16, 16, 3))).astype(np.float32)
    assert np.allclose(stain_jitter(image, rng, sigma=0.0), image, atol=1e-4)
    assert not np.allclose(stain_jitter(image, rng, sigma=0.2), image, atol=1e-2)


def test_pseudo_stain_renders_bright_nuclei_as_dark_purple_on_paler_tissue() -> None:
    """Rendered fluorescence reads as H&E: coloured, nuclei darker than the ground and bluer
    (haematoxylin); normalised with polarity, the nuclei come out bright again, as in training."""
    from attention_unet.io import data

    image, labels = synthetic(3, (96, 96))
    grey = data.normalise(np.repeat(image[..., None], 3, axis=2), "polarity")
    rendered = pseudo_stain(grey, np.random.default_rng(0))
    assert rendered.shape == grey.shape and rendered.dtype == np.float32
    assert 0.0 <= rendered.min() and rendered.max() <= 1.0
    assert data.modality((rendered * 255).astype(np.uint8)) == "stained"
    nuclei, ground = rendered[labels > 0].mean(axis=0), rendered[labels == 0].mean(axis=0)
    assert nuclei.sum() < ground.sum() - 0.3 and nuclei[2] - nuclei[0] > ground[2] - ground[0]
    back = data.normalise(rendered, "polarity").mean(axis=2)
    assert back[labels > 0].mean() > back[labels == 0].mean() + 0.3
    assert np.array_equal(rendered, pseudo_stain(grey, np.random.default_rng(0)))


def test_stain_grain_blurs_or_roughens_a_smooth_stained_crop_into_the_range_of_grainy_scans() -> None:
    """Half the draws blur (texture falls), half add stain grain (texture reaches TNBC's 40x scans,
    data.sharpness 0.032-0.111); the crop stays a stained image of the same shape, and a seed
    gives the same crop."""
    from scipy.ndimage import gaussian_filter
    from skimage.color import hed2rgb

    image, _ = synthetic(5, (128, 128))
    grey = gaussian_filter(data.normalise(np.repeat(image[..., None], 3, axis=2), "polarity").mean(axis=2), 2)
    hed = np.stack([0.01 + 0.06 * grey, np.full_like(grey, 0.015), np.full_like(grey, 0.01)], axis=-1)
    smooth = np.clip(hed2rgb(hed), 0, 1).astype(np.float32)
    before = data.sharpness(smooth, "polarity")
    assert before < 0.02  # as smooth as the DSB archive's stained images
    kinds = []
    for seed in range(12):
        out = stain_grain(smooth, np.random.default_rng(seed))
        assert out.shape == smooth.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
        assert data.modality((out * 255).astype(np.uint8)) == "stained"
        assert np.array_equal(out, stain_grain(smooth, np.random.default_rng(seed)))
        after = data.sharpness(out, "polarity")
        kinds.append("blurred" if after < before else "grainy")
        assert after < before or after > 0.03
    assert 3 <= kinds.count("blurred") <= 9  # both kinds, about half each


def test_stain_grain_touches_stained_crops_only() -> None:
    """A stained record's crops change with --stain-grain 1; a fluorescence record's stay as they were."""
    image, labels = synthetic(6, (64, 64))
    grey = np.repeat(image[..., None], 3, axis=2)
    stained = (255 - grey * np.array([0.6, 0.9, 0.4])).astype(np.uint8)  # dark purple nuclei on a bright ground
    records = [data.Record("fluo", grey, labels), data.Record("stain", stained, labels)]
    assert [data.modality(r.image) for r in records] == ["fluorescence", "stained"]

    def samples(grain: float) -> list[torch.Tensor]:
        config = TrainConfig(input="crop:48", augment="robust", norm="polarity", stain_grain=grain, samples_per_epoch=2)
        torch.manual_seed(0)
        return [TrainDataset(records, config)[i][0] for i in range(2)]

    plain, grainy = samples(0.0), samples(1.0)
    assert torch.equal(plain[0], grainy[0]) and not torch.equal(plain[1], grainy[1])


def test_stain_jitter_strength_widens_the_stain_amounts_of_stained_crops_only() -> None:
    """--stain-jitter sets how far each stain's amount moves: the haematoxylin of a jittered crop
    spreads wider at 0.3 than at the default 0.1, and a fluorescence record's crops never change."""
    from skimage.color import rgb2hed

    image, labels = synthetic(7, (64, 64))
    grey = np.repeat(image[..., None], 3, axis=2)
    stained = (255 - grey * np.array([0.6, 0.9, 0.4])).astype(np.uint8)
    records = [data.Record("fluo", grey, labels), data.Record("stain", stained, labels)]

    def samples(jitter: float | None) -> list[torch.Tensor]:
        extra = {} if jitter is None else {"stain_jitter": jitter}
        config = TrainConfig(input="crop:48", augment="robust", norm="polarity", samples_per_epoch=2, **extra)
        dataset = TrainDataset(records, config)
        dataset.transform = None  # the stain jitter alone, without the geometric and colour steps
        torch.manual_seed(0)
        return [dataset[i][0] for i in range(2)]

    default, light, strong = samples(None), samples(0.1), samples(0.3)
    assert all(torch.equal(a, b) for a, b in zip(default, light))  # 0.1 is what runs had before
    assert torch.equal(light[0], strong[0]) and not torch.equal(light[1], strong[1])

    base = stained.astype(np.float32) / 255
    amount = {
        sigma: [
            float(rgb2hed(stain_jitter(base, np.random.default_rng(seed), sigma))[..., 0].mean()) for seed in range(20)
        ]
        for sigma in (0.1, 0.3)
    }
    assert np.std(amount[0.3]) > 2 * np.std(amount[0.1])
    with pytest.raises(InputError, match="stain-jitter"):
        TrainConfig(stain_jitter=0.9).validate()


def test_finetune_trains_on_every_image_validates_on_strips_and_keeps_the_parent_settings(tmp_path: Path) -> None:
    data_dir = tmp_path / "mine"
    for sub in ("images", "masks"):
        (data_dir / sub).mkdir(parents=True)
    for i in range(3):  # a handful of images, too few for a train/valid/test split
        image, labels = synthetic(i, (96, 112))
        iio.imwrite(data_dir / "images" / f"m{i}.png", image)
        iio.imwrite(data_dir / "masks" / f"m{i}.png", labels.astype(np.uint16))
    parent = tmp_path / "parent"
    assert (
        main(["train", "--data", str(data_dir), *TINY, "--contour", "--valid-strip", "24", "--out", str(parent)]) == 0
    )
    tuned = parent / "tuned"
    info = read_model_info(parent)
    save_model(load_model(parent), tuned, {**info, "inference": {"scale": "auto", "h": 3.0}})
    fine = tmp_path / "fine"
    assert main(["finetune", str(data_dir), "--model", str(tuned), "--epochs", "1", "--out", str(fine)]) == 0
    split = json.loads((fine / "split.json").read_text())
    assert sorted(split["train"]) == ["m0", "m1", "m2"] and split["valid"] == split["test"] == []
    rows = [r for r in csv.DictReader((fine / "metrics.csv").open()) if r.get("val_f1")]
    assert rows  # validated, on the strips
    info = read_model_info(fine)
    assert info["inference"]["h"] == 3.0 and info["init"]["from"] == str(tuned)
    assert info["train"]["valid_strip"] == 128 and info["train"]["contour"] is True


def test_strip_validation_needs_images_large_enough(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    """The tiny dataset's 48-row images leave no 16-row strip: one line, exit 2."""
    argv = ["train", "--data", str(tiny_dataset), *TINY, "--valid-strip", "32", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "strip for validation, which takes one of at least 64 x 16 pixels (the largest here is 48 x 64)" in (
        capsys.readouterr().err
    )
    assert main(["finetune", str(tiny_dataset), "--out", str(tmp_path / "f")]) == 2  # no --valid-strip given there
    assert "the largest here is 48 x 64" in capsys.readouterr().err


def test_every_training_option_is_a_flag_generated_from_the_config() -> None:
    """train's flags come from TrainConfig's fields: a new option is written once, and parses to its field."""
    from dataclasses import fields

    from attention_unet.cli import build_parser
    from attention_unet.training.config import TrainConfig

    parser = build_parser()
    train = next(a for a in parser._actions if a.dest == "command").choices["train"]
    dests = {a.dest for a in train._actions}
    assert {f.name for f in fields(TrainConfig)} <= dests
    args = parser.parse_args(["train", "--stain-jitter", "0.2", "--no-attention", "--scale", "0.5", "3", "--balance"])
    assert (args.stain_jitter, args.attention, args.scale, args.balance, args.epochs) == (
        0.2,
        False,
        [0.5, 3.0],
        True,
        None,
    )
    assert parser.parse_args(["train", "--resume"]).resume == "last"
