"""Training: the loop, run folders, checkpoints and resume, the per-seed runner."""
