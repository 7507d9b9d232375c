"""``python -m orderflow_plugin.simtest``: run seeds, replay one, or show how fast a planted bug is caught.

::

    python -m orderflow_plugin.simtest --seeds 10000            # seeds 0..9999 on 2 processes
    python -m orderflow_plugin.simtest --seed 1234              # replay one seed with its trace
    python -m orderflow_plugin.simtest --plant fold-buy-into-sell --seeds 1000
    python -m orderflow_plugin.simtest --shell --seeds 100       # the REAL shell, in virtual time
    python -m orderflow_plugin.simtest --shell --seed 7          # replay one real-shell seed
    python -m orderflow_plugin.simtest --shell-plant ping-never-fails --seeds 50

Exit code 0 when every seed held every invariant, 1 at the first seed that did not (its seed,
the invariant, the virtual time and step, and the command that replays it are printed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .known import KNOWN_BUGS
from .plants import PLANTS
from .runner import SeedResult, replay_command, run_seeds, trace_lines
from .shell import run_shell_seeds, shell_trace
from .shellplants import SHELL_PLANTS, shell_planted


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(prog="python -m orderflow_plugin.simtest",
                                     description="Deterministic simulation testing of the stream's real logic.")
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default 100)")
    parser.add_argument("--start", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--seed", type=int, help="replay this one seed, printing its trace")
    parser.add_argument("--plant", choices=sorted(PLANTS), help="plant this bug first (in this process only)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default 2)")
    parser.add_argument("--keep-going", action="store_true", help="run every seed, even after a failure")
    parser.add_argument("--allow-known", action="store_true",
                        help="count the known, unfixed bugs of the real code (see --list-known) instead of failing")
    parser.add_argument("--list-plants", action="store_true", help="list the bugs --plant can plant")
    parser.add_argument("--list-known", action="store_true", help="list the known bugs of the real code")
    parser.add_argument("--shell", action="store_true",
                        help="run the REAL shell (OrderFlow + the simulator, in virtual time) instead of the Pipeline")
    parser.add_argument("--shell-seeds", type=int, default=0,
                        help="after the Pipeline seeds, also run this many real-shell seeds (from --start)")
    parser.add_argument("--shell-plant", choices=sorted(SHELL_PLANTS), help="plant this bug in the real shell")
    args = parser.parse_args(argv)
    if args.shell or args.shell_plant:
        return _shell(args)

    if args.list_plants:
        for plant in PLANTS.values():
            print(f"{plant.name:28} {plant.target}: {plant.description} (caught by {plant.caught_by})")
        return 0
    if args.list_known:
        for name, bug in KNOWN_BUGS.items():
            print(f"{name} (seed {bug.seed}): {bug.diagnosis}")
        return 0
    if args.seed is not None:
        lines, result = trace_lines(args.seed, args.plant, allow_known=args.allow_known)
        print("\n".join(lines))
        print(f"digest {result.digest}: {result.published} trades published, {result.delivered} delivered, "
              f"{result.steps} steps, {result.virtual:.1f} virtual s")
        return _verdict(result, args.plant, args.allow_known)

    summary = run_seeds(args.start, args.seeds, jobs=args.jobs, plant=args.plant, keep_going=args.keep_going,
                        allow_known=args.allow_known, progress=sys.stdout.isatty())
    last = args.start + summary.ran - 1
    print(f"{summary.ran} seeds ({args.start}..{last}) in {summary.seconds:.1f} s: {summary.rate:.0f} seeds/s on "
          f"{args.jobs} process(es); {summary.published} trades published, {summary.delivered} delivered, "
          f"{summary.virtual / 3600:.1f} virtual hours; "
          + ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items())))
    if summary.failed is None:
        print("every invariant held" + (f" (planted {args.plant}: NOT caught)" if args.plant else ""))
        return _shell(args, args.shell_seeds) if args.shell_seeds and not args.plant else 0
    if args.plant:
        print(f"planted {args.plant}: caught at seed {summary.failed.seed}, "
              f"after {summary.failed.seed - args.start + 1} seed(s)")
    return _verdict(summary.failed, args.plant, args.allow_known)


def _shell(args: argparse.Namespace, count: int | None = None) -> int:
    """The real-shell simulation: one seed with its trace, or many."""
    if args.seed is not None:
        with shell_planted(args.shell_plant):
            lines, result = shell_trace(args.seed)
        print("\n".join(lines))
        print(f"digest {result.digest}: {result.played} trades played, {result.delivered} delivered, "
              f"{result.steps} loop steps, {result.virtual:.1f} virtual s")
        failed = result if not result.ok else None
        ran = 1
    else:
        count = count if count is not None else args.seeds
        began = time.perf_counter()
        ran, failed, counts = run_shell_seeds(args.start, count, jobs=args.jobs, plant=args.shell_plant)
        seconds = time.perf_counter() - began
        print(f"{ran} real-shell seeds ({args.start}..{args.start + ran - 1}) in {seconds:.1f} s "
              f"({seconds * args.jobs / max(ran, 1):.2f} s per seed per process); "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if failed is None:
        print("real shell: every invariant held" + (f" (planted {args.shell_plant}: NOT caught)"
                                                    if args.shell_plant else ""))
        return 0
    if args.shell_plant:
        print(f"planted {args.shell_plant}: caught at seed {failed.seed}, after {failed.seed - args.start + 1} seed(s)")
    print(f"seed {failed.seed} FAILED (real shell) {failed.violation}")
    print(f"replay: python -m orderflow_plugin.simtest --shell --seed {failed.seed}"
          + (f" --shell-plant {args.shell_plant}" if args.shell_plant else ""))
    return 1


def _verdict(result: SeedResult, plant: str | None, allow_known: bool) -> int:
    violation = result.violation
    if violation is None:
        print(f"seed {result.seed}: every invariant held")
        return 0
    print(f"seed {result.seed} FAILED invariant {violation.invariant} at {violation.time:.3f} s (step "
          f"{violation.step}): {violation.detail}")
    print(f"replay: {replay_command(result.seed, plant, allow_known)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
