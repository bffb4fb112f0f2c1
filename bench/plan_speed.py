"""How long `scaleplan plan` takes to search every layout, for 8, 512 and 4,096 GPUs.

Our figure: the vectorised search (enumerate + evaluate memory and cost of all candidates as numpy
arrays + rank). Reference, measured in the same run: the same memory and cost code called once per
candidate in a plain Python loop (`evaluate_layout` on each layout), i.e. what a search that
evaluated candidates one at a time would cost. The ratio is reference / ours.

    .venv/bin/python bench/plan_speed.py [--repeats 5] [--loop-sample 400]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.hardware import get_gpu  # noqa: E402
from planner.scaling.shape import spec_for_params  # noqa: E402
from planner.layout.inputs import PlanInputs  # noqa: E402
from planner.layout.search import enumerate_layouts, evaluate_layout, search  # noqa: E402

CASES = ((8, 7e9, 256), (512, 70e9, 1024), (4096, 70e9, 2048))   # GPUs, params, global batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-sample", type=int, default=400,
                        help="candidates timed one at a time (the per-candidate time is extrapolated)")
    args = parser.parse_args()
    gpu = get_gpu("h100-sxm")
    print(f"{'GPUs':>6} {'params':>7} {'candidates':>10} {'search s':>9} {'loop s/cand':>12} "
          f"{'loop s (all)':>12} {'speed-up':>9}")
    for n_gpus, params, batch in CASES:
        inputs = PlanInputs(spec_for_params(params), gpu, n_gpus, batch)
        search(inputs)   # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = search(inputs)
            times.append(time.perf_counter() - start)
        ours = statistics.median(times)
        layouts, _ = enumerate_layouts(inputs)
        sample = range(0, len(layouts), max(1, len(layouts) // args.loop_sample))
        start = time.perf_counter()
        for i in sample:
            evaluate_layout(inputs, layouts.layout(i))
        per_candidate = (time.perf_counter() - start) / len(sample)
        loop_all = per_candidate * result.n_candidates
        print(f"{n_gpus:>6} {params:>7.0e} {result.n_candidates:>10} {ours:>9.4f} {per_candidate:>12.2e} "
              f"{loop_all:>12.2f} {loop_all / ours:>8.0f}×")
    print("search s: median of the vectorised search; loop: the same code one candidate at a time "
          "(timed on a sample, extrapolated to all candidates).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
