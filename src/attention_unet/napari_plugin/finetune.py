"""The "Fine-tune" dock widget: image layers and their corrected Labels layers train a model from a
shipped one (``finetune``'s recipe) in napari's thread worker, with a progress bar and the
validation score per epoch; it can be cancelled, and the new model joins the Segment widget's list
and, on request, segments the image."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)

from ..errors import InputError
from .controls import FINETUNED, model_choices


class Cancelled(Exception):
    """Raised inside the training loop when the user cancels."""


class FineTuneWidget(Container):
    """Pick an image layer and its Labels layer ("Add pair" keeps them and lets you pick more), a
    starting model, where to save and a time budget; "Fine-tune" trains on every pair in a worker
    thread. Each control is an attribute by its name."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        choices, tooltip = model_choices(others=False)
        buttons = [
            PushButton(text=text, name=name)
            for text, name in (
                ("Add pair", "add"),
                ("Clear pairs", "clear"),
                ("Fine-tune", "start"),
                ("Cancel", "cancel"),
            )
        ]
        super().__init__(
            widgets=[create_widget(annotation="napari.layers.Image", label="image", name="image"),
                     create_widget(annotation="napari.layers.Labels", label="labels", name="labels_layer"),
                     *buttons[:2], Label(value="", name="pair_list"),
                     ComboBox(choices=choices, name="model", label="start from", tooltip=tooltip),
                     FileEdit(mode="d", value="", name="out", label="save the model in"),
                     FloatSpinBox(value=4.5, min=0.1, max=600, step=0.5, name="minutes", label="time budget (min)"),
                     SpinBox(value=10, min=1, max=1000, name="epochs", label="epochs (of 256 crops)"),
                     CheckBox(value=True, text="segment the image with the new model", name="resegment"),
                     *buttons[2:], ProgressBar(value=0, min=0, max=10, visible=False, name="progress"),
                     Label(value="", name="status")]
        )  # fmt: skip
        for button, action in zip(buttons, (self.add_pair, self.clear_pairs, self.run, self.stop), strict=True):
            button.changed.connect(action)
        self.pairs: list[tuple[Any, Any]] = []  # (image layer, labels layer) added with "Add pair"
        self.worker: Any = None
        self.cancelled = False

    def add_pair(self) -> None:
        """Keep the chosen image and labels as one training pair (more than one image trains on all)."""
        pair = (self.image.value, self.labels_layer.value)
        try:
            annotated(*pair)
        except InputError as exc:
            self.status.value = str(exc)
            return
        if pair not in self.pairs:
            self.pairs.append(pair)
        self.pair_list.value = "pairs: " + "; ".join(f"{a.name} + {b.name}" for a, b in self.pairs)

    def clear_pairs(self) -> None:
        self.pairs, self.pair_list.value = [], ""

    def inputs(self) -> tuple[list[tuple[np.ndarray, np.ndarray]], Path]:
        """(the (image, labels) arrays of every pair added and of the chosen one, the new run folder)
        or an InputError."""
        chosen = (self.image.value, self.labels_layer.value)
        pairs = self.pairs if chosen in self.pairs else [*self.pairs, chosen]
        arrays = [annotated(*pair) for pair in pairs]
        out = Path(str(self.out.value)) if str(self.out.value) not in ("", ".") else None
        if out is None or (out.exists() and any(out.iterdir())):
            raise InputError("choose a new or empty folder to save the model in")
        return arrays, out

    def run(self) -> None:
        if self.worker is not None:
            return
        try:
            arrays, out = self.inputs()
        except InputError as exc:
            self.status.value = str(exc)
            return
        from napari.qt.threading import thread_worker

        layer = self.image.value
        options = {"init_from": self.model.value, "max_minutes": self.minutes.value, "epochs": self.epochs.value}
        self.cancelled, self.progress.max, self.progress.value = False, self.epochs.value, 0
        worker = thread_worker(train)(arrays, out, options, self)
        worker.yielded.connect(self.epoch_done)
        worker.returned.connect(lambda result: self.finished(layer, result))
        worker.finished.connect(self.done)
        self.worker, self.progress.visible, self.start.enabled = worker, True, False
        self.status.value = f"fine-tuning on {len(arrays)} image(s) ..."
        worker.start()

    def stop(self) -> None:
        self.cancelled = True

    def epoch_done(self, message: tuple[int, str]) -> None:
        self.progress.value, self.status.value = message

    def finished(self, layer: Any, result: Any) -> None:
        if isinstance(result, str):
            self.status.value = result
            return
        FINETUNED.append(str(result))
        self.status.value = f"model saved in {result}; in the Segment widget's model list"
        if self.resegment.value:
            from ..segmenter import Segmenter

            labels = Segmenter(result, engine="torch").segment(np.asarray(layer.data)).labels
            name = f"{layer.name}_labels"
            if name in self.viewer.layers:
                self.viewer.layers[name].data = labels
            else:
                self.viewer.add_labels(labels, name=name, scale=tuple(layer.scale[-2:]))

    def done(self) -> None:
        self.worker, self.progress.visible, self.start.enabled = None, False, True


def annotated(layer: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """The 2-D image of an image layer and the nuclei of the Labels layer on it, or an InputError
    saying what is missing."""
    if layer is None or labels is None:
        raise InputError("fine-tuning needs an image layer and a Labels layer of its nuclei")
    image, annotation = np.asarray(layer.data), np.asarray(labels.data)
    if annotation.shape != image.shape[: annotation.ndim] or annotation.ndim != 2:
        raise InputError(f"labels '{labels.name}' {annotation.shape} do not lie on image '{layer.name}' {image.shape}")
    if not annotation.any():
        raise InputError(f"labels '{labels.name}' hold no nucleus: paint or correct some first")
    return image, annotation


def train(pairs: list[tuple[np.ndarray, np.ndarray]], out: Path, options: dict, widget: FineTuneWidget) -> Any:
    """A generator for napari's worker: trains, yields (epoch, message) after each validation, and
    returns the run folder, or the reason it failed (a cancelled run leaves no folder)."""
    import queue

    import lightning as L
    import tifffile

    from ..training.config import FINETUNE, TrainConfig
    from ..training.fit import fit

    progress: queue.Queue = queue.Queue()

    class Report(L.Callback):
        def on_validation_epoch_end(self, trainer: L.Trainer, task: Any) -> None:
            score = trainer.callback_metrics.get("val_f1")
            progress.put((trainer.current_epoch + 1, f"epoch {trainer.current_epoch + 1}: val F1 {float(score):.3f}"))

        def on_train_batch_end(self, *args: Any) -> None:
            if widget.cancelled:
                raise Cancelled

    data = Path(tempfile.mkdtemp(prefix="attention-unet-finetune-"))
    for k, (image, annotation) in enumerate(pairs):
        tifffile.imwrite(data / f"image{k}.tif", image)
        tifffile.imwrite(data / f"image{k}_masks.tif", annotation.astype(np.int32))
    cfg = TrainConfig.from_dict({**FINETUNE, **options, "data": [str(data)], "out": str(out)}, "fine-tune options")
    try:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(fit, cfg, [Report()])
            while not running.done() or not progress.empty():
                try:
                    yield progress.get(timeout=0.2)
                except queue.Empty:
                    continue
            return running.result()
    except Cancelled:
        shutil.rmtree(out, ignore_errors=True)
        return "cancelled: no model was saved"
    except Exception as exc:  # noqa: BLE001 - any failure is a message in the viewer, never a traceback dialog
        shutil.rmtree(out, ignore_errors=True)
        return f"fine-tuning failed: {exc}"
    finally:
        shutil.rmtree(data, ignore_errors=True)
