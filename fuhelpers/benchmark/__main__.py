"""Command line: ``python -m fuhelpers.benchmark --scenario iid --scale smoke [--seeds 3] [--seed 0]``.

Runs the chapter 6 benchmark outside the notebook and merges the scenario into
``results/06_benchmark.json`` under the scale (other scenarios and scales are kept).
"""
from __future__ import annotations

import argparse
import sys
import time

from .. import results as results_io
from ..device import set_threads, try_gpu
from . import METHODS, SCALES, SCENARIOS, STEM, record, run_scenario, setting_for


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fuhelpers.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", nargs="+", choices=[*SCENARIOS, "all"], default=["all"],
                        help="scenarios to run (default: all five)")
    parser.add_argument("--scale", choices=sorted(SCALES), default="smoke",
                        help="smoke: CPU, minutes; medium: CPU, about an hour; full: GPU (default: smoke)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the scale's, 3)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=None,
                        help="methods to run (default: all; Retrain always runs)")
    parser.add_argument("--device", default=None, help="torch device (default: the first GPU, else CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    parser.add_argument("--out", default=None, help="folder of the results JSON (default: the repository's results/)")
    return parser.parse_args(argv)


def save(scenario: str, rec: dict, scale: str, seed: int, root=None):
    """Merge one scenario's record into ``results/06_benchmark.json`` under ``scale``."""
    previous = results_io.load_results(STEM, scale, root=root)
    merged = dict(previous["results"]) if previous else {}
    merged[scenario] = rec
    wall = sum(r.get("wall_seconds") or 0.0 for r in merged.values())
    return results_io.save_results(STEM, merged, scale=scale, seed=seed, wall_seconds=wall, root=root,
                                   scenarios=sorted(merged))


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = set_threads(args.threads)
    device = args.device or str(try_gpu())
    scenarios = list(SCENARIOS) if "all" in args.scenario else args.scenario
    num_seeds = args.seeds or SCALES[args.scale]["seeds"]
    seeds = [args.seed + k for k in range(num_seeds)]
    for scenario in scenarios:
        setting = setting_for(scenario, args.scale)
        start = time.perf_counter()
        runs = run_scenario(scenario, setting, seeds, args.methods, device=device)
        rec = record(runs, setting, seconds=time.perf_counter() - start)
        path = save(scenario, rec, args.scale, args.seed, root=args.out)
        print(f"{scenario}: {len(seeds)} seeds on {device} ({threads} threads) in {rec['wall_seconds']:.0f} s "
              f"-> {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
