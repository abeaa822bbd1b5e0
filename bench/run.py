"""``make bench``: run each benchmark module's ``main()`` in turn and print its figures.

A benchmark is a module in bench/ with a ``main()`` that returns a dict of figures (and
prints its own table). Add new ones to BENCHMARKS. Benchmarks are not tests: a missed
target is reported, not failed; only a benchmark that crashes makes this exit non-zero.
"""

import fcntl
import importlib
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BENCHMARKS = ["ingest", "billing", "wallet", "entitlements", "admin"]


def main(names: list[str]) -> int:
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    lock = open(results / ".lock", "w")  # noqa: SIM115 (held until exit)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("another bench run holds bench/results/.lock; not starting", file=sys.stderr)
        return 1
    failed = []
    for name in names:
        print(f"=== bench: {name}", flush=True)
        t0 = time.perf_counter()
        try:
            importlib.import_module(name).main()
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"=== {name}: {time.perf_counter() - t0:.0f} s\n", flush=True)
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or BENCHMARKS))
