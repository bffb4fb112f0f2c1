"""Parallelism: Layout -> DeviceMesh, one file per technique, composed by parallelize()."""
