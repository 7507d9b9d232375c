"""``python -m orderflow_plugin.simtest``: run seeds, replay one, or show how fast a planted bug is caught.

::

    python -m orderflow_plugin.simtest --seeds 10000            # seeds 0..9999 on 2 processes (+1 pure)
    python -m orderflow_plugin.simtest --seed 1234              # replay one seed with its trace
    python -m orderflow_plugin.simtest --plant ping-never-fails --seeds 200

Exit code 0 when every seed held every invariant, 1 at the first seed that did not (its seed,
the invariant, the virtual time, and the command that replays it are printed).
"""

from __future__ import annotations

import argparse
import os
import sys

from .plants import PLANTS
from .runner import PURE_EVERY, SeedResult, replay_command, run_seeds, trace_lines


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(prog="python -m orderflow_plugin.simtest",
                                     description="Deterministic simulation testing of the real stream.")
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default 100)")
    parser.add_argument("--start", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--seed", type=int, help="replay this one seed, printing its trace")
    parser.add_argument("--plant", choices=sorted(PLANTS), help="plant this bug first (in the worker processes)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="worker processes on the compiled path (default 2; one more runs the pure seeds)")
    parser.add_argument("--pure-every", type=int, default=PURE_EVERY,
                        help=f"run every Nth seed on the pure-Python hot path (default {PURE_EVERY}; 0: none)")
    parser.add_argument("--keep-going", action="store_true", help="run every seed, even after a failure")
    parser.add_argument("--list-plants", action="store_true", help="list the bugs --plant can plant")
    parser.add_argument("--shell", action="store_true", help=argparse.SUPPRESS)  # ignored: every run is the shell
    args = parser.parse_args(argv)

    if args.list_plants:
        for plant in PLANTS.values():
            print(f"{plant.name:30} {plant.target}: {plant.description}")
        return 0
    if args.seed is not None:
        lines, result = trace_lines(args.seed, args.plant, args.pure_every)
        print("\n".join(lines))
        print(f"digest {result.digest}: {result.played} trades played, {result.delivered} delivered, "
              f"{result.steps} loop steps, {result.virtual:.1f} virtual s")
        return _verdict(result, args.plant)

    summary = run_seeds(args.start, args.seeds, jobs=args.jobs, plant=args.plant, pure_every=args.pure_every,
                        keep_going=args.keep_going)
    last = args.start + summary.ran - 1
    print(f"{summary.ran} seeds ({args.start}..{last}, {summary.pure} on the pure path) in {summary.seconds:.1f} s "
          f"on {args.jobs}+{1 if summary.pure else 0} process(es), {summary.cpu:.1f} s of CPU "
          f"({summary.cpu / max(summary.ran, 1) * 1000:.0f} ms per seed); {summary.played} trades played, "
          f"{summary.delivered} delivered, {summary.virtual / 3600:.1f} virtual hours; "
          + ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items())))
    if summary.failed is None:
        print("every invariant held" + (f" (planted {args.plant}: NOT caught)" if args.plant else ""))
        return 0
    if args.plant:
        print(f"planted {args.plant}: caught at seed {summary.failed.seed}, "
              f"after {summary.failed.seed - args.start + 1} seed(s)")
    return _verdict(summary.failed, args.plant)


def _verdict(result: SeedResult, plant: str | None) -> int:
    violation = result.violation
    if violation is None:
        print(f"seed {result.seed}: every invariant held")
        return 0
    print(f"seed {result.seed} FAILED {violation}")
    print(f"replay: {replay_command(result.seed, plant)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
