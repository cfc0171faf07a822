"""How long a ``gensis`` command takes to exit after its last line: ``gensis.cli.main.entry`` (``gc.freeze()`` before
Python's teardown) against a plain ``sys.exit(main())`` (the reference, what the console script did before), in the
same run, interleaved.

    .venv/bin/python benchmarks/exit_time.py                 # 5 pairs of `eval knn --encoder pixels` on builtin:digits
    .venv/bin/python benchmarks/exit_time.py --reps 9 -- eval knn --encoder random --train builtin:digits --k 5

Each repetition starts a fresh process, reads its stdout line by line and times from the last line to the exit.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

PLAIN = "import sys\nfrom gensis.cli.main import main\nsys.exit(main())\n"
ENTRY = "from gensis.cli.main import entry\nentry()\n"
DEFAULT = ["eval", "knn", "--encoder", "pixels", "--train", "builtin:digits", "--test", "builtin:digits@val",
           "--k", "5", "--quiet"]


def exit_seconds(code: str, argv: list[str]) -> float:
    """Seconds from the command's last stdout line to its process's end."""
    p = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
    assert p.stdout is not None
    last = time.perf_counter()
    for _ in p.stdout:
        last = time.perf_counter()
    if p.wait() != 0:
        raise SystemExit(f"the command failed: gensis {' '.join(argv)}")
    return time.perf_counter() - last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("argv", nargs="*", help="the gensis command (after --); default: " + " ".join(DEFAULT))
    args = ap.parse_args()
    argv = args.argv or DEFAULT
    times: dict[str, list[float]] = {"plain sys.exit(main())": [], "entry (gc.freeze)": []}
    for r in range(args.reps):
        order = list(times) if r % 2 == 0 else list(reversed(times))  # A B, B A, ...: load hits each alike
        for name in order:
            times[name].append(exit_seconds(PLAIN if name.startswith("plain") else ENTRY, argv))
    print(f"gensis {' '.join(argv)}; {args.reps} interleaved pairs; seconds from the last line to the exit")
    for name, t in times.items():
        print(f"  {name:24s} median {statistics.median(t):.2f}  ({', '.join(f'{x:.2f}' for x in t)})")
    ratio = statistics.median(times["entry (gc.freeze)"]) / statistics.median(times["plain sys.exit(main())"])
    print(f"  ratio entry / plain: {ratio:.2f}")


if __name__ == "__main__":
    main()
