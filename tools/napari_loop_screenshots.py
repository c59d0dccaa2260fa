"""The docs' pictures of the correct-then-retrain loop in napari, rendered headless (run under
`xvfb-run -a`, with the napari extra installed): the sample image segmented, its labels corrected
(one nucleus erased, one painted), and segmented again after a one-epoch fine-tune.

    xvfb-run -a python tools/napari_loop_screenshots.py docs/napari-loop
"""

import sys
import tempfile
from pathlib import Path

import imageio.v3 as iio
import napari
from qtpy.QtWidgets import QApplication

from attention_unet.napari_plugin import FineTuneWidget, SegmentWidget, sample_data


def wait(widget: object) -> None:
    while widget.worker is not None:  # type: ignore[attr-defined]
        QApplication.processEvents()


def shot(viewer: napari.Viewer, path: str) -> None:
    QApplication.processEvents()
    picture = viewer.screenshot(canvas_only=False, flash=False)[..., :3]
    iio.imwrite(path, picture, quality=85)
    print(path)


def main(prefix: str) -> None:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    data, meta, _ = sample_data()[0]
    viewer.add_image(data, **meta)
    segment = SegmentWidget(viewer)
    viewer.window.add_dock_widget(segment, name="Segment nuclei", area="right")
    segment.run()
    wait(segment)
    shot(viewer, f"{prefix}-1-segmented.jpg")
    labels = viewer.layers[f"{meta['name']}_labels"]
    corrected = labels.data.copy()
    corrected[corrected == corrected.max()] = 0  # one nucleus erased
    corrected[100:130, 20:50] = corrected.max() + 1  # one painted
    labels.data = corrected
    tune = FineTuneWidget(viewer)
    viewer.window.add_dock_widget(tune, name="Fine-tune", area="right")
    tune.image.value, tune.labels_layer.value = viewer.layers[meta["name"]], labels
    tune.epochs.value, tune.out.value = 1, Path(tempfile.mkdtemp()) / "mine"
    shot(viewer, f"{prefix}-2-corrected.jpg")
    tune.run()
    wait(tune)
    shot(viewer, f"{prefix}-3-fine-tuned.jpg")
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1])
