"""Training: configuration, the loop, losses, noise, callbacks, the run record, distributed."""
