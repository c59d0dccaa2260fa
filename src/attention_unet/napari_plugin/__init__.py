"""The napari plugin (npe2 manifest ``napari.yaml``): a "Segment nuclei" dock widget, the embedded
sample as sample data, and a reader that opens ``<name>_labels.tif`` as a Labels layer.

The widget runs :class:`Segmenter` in napari's thread worker, so the viewer stays responsive; any
problem (no image layer, a stack where a plane is expected, a broken model file) is a message in
the widget and a napari notification, never a traceback dialog, and the layers stay as they were.
Install with ``pip install "attention-unet[napari]"``.
"""

from .files import get_labels_reader, sample_data, write_csv
from .finetune import FineTuneWidget
from .widget import SegmentWidget

__all__ = ["FineTuneWidget", "SegmentWidget", "get_labels_reader", "sample_data", "write_csv"]
