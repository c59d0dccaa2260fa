"""Training: its options (:mod:`.config`, no torch, so the command line stays fast), the
augmentations (:mod:`.augment`), the datasets (:mod:`.datasets`), the LightningModule and its
callbacks (:mod:`.module`) and ``fit`` (:mod:`.fit`)."""
