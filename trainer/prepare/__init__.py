"""Streaming, sharded, resumable data preparation (`scaleplan prepare`).

sources.py finds the files and reads them as chunks of raw documents in corpus order; workers.py
tokenizes chunks in a pool of processes and hands the results back in that same order; shards.py
cuts the token stream into fixed-size shards under temporary names; progress.py keeps the record a
re-run resumes from, and index.py writes the finished directory's index.json. pipeline.py joins them.
Nothing here imports torch.
"""
