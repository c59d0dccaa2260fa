"""The README's picture of the napari widget: the sample image segmented with the attention maps,
rendered headless (run under `xvfb-run -a`, with the napari extra installed).

    xvfb-run -a python tools/napari_screenshot.py docs/napari-widget.png
"""

import sys

import imageio.v3 as iio
import napari
from qtpy.QtWidgets import QApplication

from attention_unet.napari_plugin import SegmentWidget, sample_data


def main() -> None:
    viewer = napari.Viewer(show=True)
    data, meta, _ = sample_data()[0]
    viewer.add_image(data, **meta)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment nuclei", area="right")
    widget.attention.value = True
    widget.run()
    while widget.worker is not None:
        QApplication.processEvents()
    for layer in viewer.layers:  # the labels over the image; the maps stay in the layer list
        layer.visible = not layer.name.endswith(("_probability", "attention1", "attention2", "attention4"))
    viewer.layers.selection.active = viewer.layers[f"{meta['name']}_labels"]
    viewer.window._qt_window.resize(1400, 900)
    QApplication.processEvents()
    iio.imwrite(sys.argv[1], viewer.screenshot(canvas_only=False, flash=False))
    viewer.close()


if __name__ == "__main__":
    main()
