"""Training: config tree, model, data, optimizer and schedule, loop, guards, checkpoints, metrics."""
