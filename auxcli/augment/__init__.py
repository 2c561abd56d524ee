"""Pure, batched augmentations on the training device; each returns its auxiliary targets."""
