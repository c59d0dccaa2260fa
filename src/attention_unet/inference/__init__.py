"""Inference, in three steps with one home each (ARCHITECTURE.md):

- :mod:`.plan`: what to run at which scale and smoothing (a :class:`~.plan.Plan`), decided from the
  image or, block-wise, from a mosaic of it;
- :mod:`.tiles`: sliding-window inference, a pure function of an image, a runner and the tiling;
- :mod:`.decode`: probabilities to instances and their confidence;

with :mod:`.pipeline` (the :class:`~.pipeline.Predictor` that chains them) and :mod:`.engine`
(opening a model file into a runner and its settings).
"""
