"""Size rules compared on tools/size_table.py's table, without running the network: for each rule,
per dataset and zoom, how far its factor lands from the oracle's (the factor the labels' true
median diameter asks for, by the same ramp), as mean |log2(rule / oracle)| and the share of images
within a factor sqrt(2).

    python tools/size_rules.py runs/size/table.csv [--target 16]
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from collections.abc import Callable

from attention_unet.inference.plan import factor_for_diameter

Row = dict[str, str]


def value(row: Row, key: str) -> float | None:
    text = row.get(key, "")
    return float(text) if text not in ("", None) else None


def median_at(probe: float) -> Callable[[Row, float], float | None]:
    def rule(row: Row, target: float) -> float | None:
        return value(row, f"p{probe:g}_median") or None

    return rule


def pyramid(
    probes: tuple[float, ...], band: tuple[float, float] = (0.5, 2.0), by: str = "conf", share: float = 0.0
) -> Callable:
    """Among the probes whose nuclei came out near the learnt size at the network's scale (their
    median diameter times the probe within ``band`` times the target) and that found at least
    ``share`` of the most nuclei any probe found, the surest one's median."""

    def rule(row: Row, target: float) -> float | None:
        seen = {p: [value(row, f"p{p:g}_{k}") for k in ("median", "conf", "count")] for p in probes}
        seen = {p: v for p, v in seen.items() if v[0] and v[2]}
        most = max((v[2] for v in seen.values()), default=0)
        found = []
        for p, (median, conf, count) in seen.items():
            if count < max(3, share * most):
                continue
            at_network = median * p / target
            key = conf if by == "conf" else -abs(math.log(at_network))
            found.append((band[0] <= at_network <= band[1], key, median))
        return max(found)[2] if found else None

    return rule


def adaptive(share: float = 0.1, finer: tuple[float, ...] = (2.0, 1.0, 0.5)) -> Callable:
    """The coarse pyramid (1/2, 1/4, 1/8); where it finds nuclei below half the learnt size (or
    none), the finer one (``finer``), as small nuclei vanish on the coarse probes."""
    coarse, fine = pyramid((0.5, 0.25, 0.125), share=share), pyramid(finer, share=share)

    def rule(row: Row, target: float) -> float | None:
        d = coarse(row, target)
        return d if d is not None and d >= target / 2 else fine(row, target) or d

    return rule


RULES: dict[str, Callable] = {
    "adaptive share.1": adaptive(),
    "adaptive share.1 fine 1": adaptive(finer=(1.0, 0.5)),
    "adaptive share.1 fine 4": adaptive(finer=(4.0, 2.0, 1.0, 0.5)),
    "adaptive share.2": adaptive(share=0.2),
    "adaptive share.25": adaptive(share=0.25),
    "adaptive share.3": adaptive(share=0.3),
    "median@0.5": median_at(0.5),
    "pyramid 1/2-1/8": pyramid((0.5, 0.25, 0.125)),
    "pyramid 1-1/8": pyramid((1.0, 0.5, 0.25, 0.125)),
    "pyramid 2-1/8": pyramid((2.0, 1.0, 0.5, 0.25, 0.125)),
    "pyramid 1/2-1/8 nearest": pyramid((0.5, 0.25, 0.125), by="near"),
    "pyramid 1/2-1/8 share.1": pyramid((0.5, 0.25, 0.125), share=0.1),
    "pyramid 1-1/8 share.1": pyramid((1.0, 0.5, 0.25, 0.125), share=0.1),
    "pyramid 2-1/8 share.1": pyramid((2.0, 1.0, 0.5, 0.25, 0.125), share=0.1),
    "pyramid 4-1/8 share.1": pyramid((4.0, 2.0, 1.0, 0.5, 0.25, 0.125), share=0.1),
    "pyramid 2-1/8 share.2": pyramid((2.0, 1.0, 0.5, 0.25, 0.125), share=0.2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table")
    parser.add_argument("--target", type=float, default=16.0)
    args = parser.parse_args()
    with open(args.table) as f:
        rows = list(csv.DictReader(f))
    scores: dict = defaultdict(list)
    for row in rows:
        oracle = factor_for_diameter(float(row["true_median"]), args.target)
        group = (row["dataset"], round(float(row["zoom"]), 2))
        rules = dict(RULES)
        for name, rule in rules.items():
            d = rule(row, args.target)
            factor = factor_for_diameter(d, args.target) if d else 1.0
            scores[name, group].append(abs(math.log2(factor / oracle)))
        if row.get("rule_factor"):
            scores["shipped", group].append(abs(math.log2(float(row["rule_factor"]) / oracle)))
    groups = sorted({g for _, g in scores})
    names = list(dict.fromkeys(n for n, _ in scores))
    print("rule".ljust(26) + "".join(f"{d[:8]}@{z:g}".rjust(16) for d, z in groups))
    for name in names:
        cells = []
        for g in groups:
            errs = scores[name, g]
            cells.append(
                f"{sum(errs) / len(errs):.2f}/{sum(e <= 0.5 for e in errs) / len(errs):.2f}".rjust(16)
                if errs
                else "-".rjust(16)
            )
        print(name.ljust(26) + "".join(cells))


if __name__ == "__main__":
    main()
