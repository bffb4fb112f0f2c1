"""Memory and layout planning: per-GPU memory (rule24 and detailed), step time and MFU of every
dp × tp × pp × sharding layout, the search that ranks them, and its report and plots.
Imports numpy and the top of `planner/` (plus `parallel.layout`) only: never torch, never `planner.scaling`.
"""
