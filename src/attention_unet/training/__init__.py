"""Training: its options (:mod:`.config`, no torch, so the command line stays fast); the datasets,
the LightningModule and ``fit`` live in :mod:`attention_unet.train`."""
