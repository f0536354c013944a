"""Stage 3, how the model learns: data, FIM, optimizers, schedules, loop, checkpoints, metrics."""
