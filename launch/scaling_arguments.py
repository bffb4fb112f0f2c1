"""Flags of the isoFLOP / law-form / small-scale machinery, shared by fit, next and backtest."""
from __future__ import annotations

import argparse

from planner.scaling.law_forms import LAW_FORM_CHOICES


def add_method_arguments(parser: argparse.ArgumentParser, methods: tuple[str, ...], default: str) -> None:
    group = parser.add_argument_group("method (docs/scaling-laws.md#isoflop-and-parametric-side-by-side)")
    meaning = {"parametric": "Chinchilla's Approach 3, L(N, D) fitted to every run",
               "isoflop": "Approach 2, a parabola per compute budget and power laws through the optima",
               "both": "the two side by side", "all": "parametric, isoflop and auto side by side",
               "auto": "the parametric choice unless isoFLOP halves its error in a backtest on your own runs"}
    group.add_argument("--method", choices=methods, default=default,
                       help="; ".join(f"{m}: {meaning[m]}" for m in methods) + f" (default {default})")
    group.add_argument("--law-form", choices=LAW_FORM_CHOICES, default="auto",
                       help="chinchilla: E + A/N^a + B/D^b; tied: one exponent (over-trained runs); kaplan: Kaplan "
                            "et al. 2020 eq. 1.5 plus E; auto: the form with the lowest backtest error (default)")
    group.add_argument("--min-flops", type=float, default=None, metavar="C",
                       help="leave out runs at budgets below C (small runs off the trend of the rest)")
    group.add_argument("--small-weight", type=float, default=None, metavar="W",
                       help="weigh runs at the budgets the small-scale test flags by W in [0, 1] (default: the "
                            "method chooses between keeping and dropping them)")
