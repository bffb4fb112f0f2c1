"""`scaleplan ladder`'s work behind the command: design the seed runs and write their configs, train
them (a learning-rate sweep first, finished runs skipped), fit them and write the next run."""
