"""The scaling law: fit L(N, D) = E + A/N^α + B/D^β to runs, bootstrap it, allocate a budget to
(N, D), shape a model of N parameters, and simulate the loop against a known law.
Imports numpy/scipy and the top of `planner/` only: never torch, never `planner.layout`.
"""
