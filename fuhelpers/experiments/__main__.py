"""Command line of the experiments.

``python -m fuhelpers.experiments list``
    every experiment, its scenarios, methods, scales and seeds;
``python -m fuhelpers.experiments run NAME --scale S [--seeds 0 1 2] [--scenarios ...] [--fresh]``
    run or resume it (one record per seed under ``results/NAME/S/``), with a progress bar and the time left;
``python -m fuhelpers.experiments show NAME --scale S``
    which seeds are finished, and the average gap to Retrain (mean ± 95 % interval) per scenario.
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from ..device import set_threads, try_gpu
from . import records
from .registry import EXPERIMENTS, get
from .runner import run
from .tables import record_table, summaries


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fuhelpers.experiments", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments")
    for name in ("run", "show"):
        p = sub.add_parser(name, help=f"{name} one experiment")
        p.add_argument("name", choices=sorted(EXPERIMENTS))
        p.add_argument("--scale", default="smoke", help="smoke, cpu or gpu (default: smoke)")
        p.add_argument("--out", default=None, help="folder of the records (default: the repository's results/)")
    run_p = sub.choices["run"]
    run_p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: the scale's)")
    run_p.add_argument("--scenarios", nargs="+", default=None, help="scenarios (default: all of the experiment's)")
    run_p.add_argument("--fresh", action="store_true",
                       help="recompute what the records already hold (with --scenarios: only those scenarios)")
    run_p.add_argument("--device", default=None, help="torch device (default: the first GPU, else CPU)")
    run_p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: see set_threads)")
    run_p.add_argument("--client-processes", type=int, default=0, metavar="N",
                       help="train each round's clients in N worker processes sharing the threads (CPU; default 0: "
                            "in this process)")
    return parser.parse_args(argv)


def list_table() -> pd.DataFrame:
    """One row per experiment."""
    return pd.DataFrame([{"experiment": e.name, "chapter": e.chapter, "scenarios": ", ".join(e.scenarios),
                          "methods": ", ".join(v.name for v in e.variants()),
                          "scales": ", ".join(f"{s} (seeds {list(sc.seeds)})" for s, sc in e.scales.items())}
                         for e in EXPERIMENTS.values()]).set_index("experiment")


def show(name: str, scale: str, root=None) -> str:
    """Finished and unfinished seeds, then the average gap per scenario and method."""
    found = records.load_all(name, scale, root, complete_only=False)
    lines = [f"{name} ({scale}): {sum(r['complete'] for r in found)} finished seeds of {len(found)} started "
             f"({records.path(name, scale, 0, root).parent})"]
    for r in found:
        state = {s: "done" if sc["complete"] else f"{len(sc['measures'])} models" for s, sc in r["scenarios"].items()}
        lines.append(f"  seed {r['seed']}: {state}")
    summ = summaries([r for r in found])
    if summ:
        audited = any("lira_auc" in m for rec in summ.values() for m in rec["methods"].values())
        percent = ["test_acc", "forget_acc"] + (["lira_auc", "lira_tpr_1pct"] if audited else [])
        lines.append(record_table(summ, percent, scale=100, digits=1)   # accuracies in %, the gap in points
                     .join(record_table(summ, ["avg_gap"], digits=2)).to_string())
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.command == "list":
        with pd.option_context("display.max_colwidth", 80, "display.width", 200):
            print(list_table().to_string())
        return 0
    get(args.name).scale(args.scale)  # fails early on an unknown scale
    if args.command == "show":
        print(show(args.name, args.scale, args.out))
        return 0
    threads = set_threads(args.threads)
    device = args.device or str(try_gpu())
    done = run(args.name, args.scale, args.seeds, scenarios=args.scenarios, root=args.out, fresh=args.fresh,
               device=device, client_processes=args.client_processes)
    print(f"{args.name} ({args.scale}): seeds {[r['seed'] for r in done]} on {device}, {threads} threads"
          f"{f' in {args.client_processes} client processes' if args.client_processes else ''} -> "
          f"{records.path(args.name, args.scale, 0, args.out).parent}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
