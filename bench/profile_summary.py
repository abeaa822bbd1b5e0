"""Summarise py-spy ``--format raw`` profiles: where the server's time goes.

    python bench/profile_summary.py bench/results/profile-bulk-*.txt [--top 40] [--focus NAME]

    python bench/profile_summary.py --instrument [bench/results/instrument-*.json]

Prints, per function, the share of samples in which it is on the stack (inclusive) and at
the top (self). ``--focus`` restricts to stacks through a function (e.g. WSGIHandler.__call__).
With ``--instrument`` it adds up what bench/instrumented_wsgi.py's workers recorded instead.
"""

import argparse
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*?)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    m = FRAME.match(frame)
    return f"{m['func']} ({m['file']})" if m else frame


def summarize(files=None) -> str:
    """Per path: each step's mean wall and CPU per request, and its share of the request."""
    total: dict = defaultdict(lambda: defaultdict(lambda: [0, 0.0, 0.0]))
    for f in files or sorted(RESULTS.glob("instrument-*.json")):
        for path, steps in json.loads(Path(f).read_text()).items():
            for step, (n, wall, cpu) in steps.items():
                entry = total[path][step]
                entry[0] += n
                entry[1] += wall
                entry[2] += cpu
    out = []
    for path, steps in total.items():
        requests = steps.get("request (wsgi)", [0])[0]
        if not requests:
            continue
        req_wall, req_cpu = steps["request (wsgi)"][1], steps["request (wsgi)"][2]
        out.append(
            f"\n{path}: {requests} requests; per request: wall "
            f"{req_wall / requests * 1000:.2f} ms, worker CPU {req_cpu / requests * 1000:.2f} ms"
        )
        head = ("step", "calls/req", "wall ms", "cpu ms", "% wall", "% cpu")
        out.append("  {:28} {:>9} {:>9} {:>9} {:>7} {:>6}".format(*head))
        for step, (n, wall, cpu) in sorted(steps.items(), key=lambda s: -s[1][1]):
            out.append(
                f"  {step:28} {n / requests:9.2f} {wall / requests * 1000:9.3f} "
                f"{cpu / requests * 1000:9.3f} {wall / req_wall:7.1%} "
                f"{(cpu / req_cpu if req_cpu and cpu else 0):6.1%}"
            )
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="*")
    parser.add_argument("--instrument", action="store_true")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--focus", default="")
    args = parser.parse_args()
    if args.instrument:
        print(summarize(args.files or None))
        return
    inclusive, self_, total = Counter(), Counter(), 0
    for path in args.files:
        with open(path) as f:
            for line in f:
                stack, _, n = line.rstrip("\n").rpartition(" ")
                if not stack or not n.isdigit():
                    continue
                frames = [short(x) for x in stack.split(";")]
                if args.focus and not any(args.focus in x for x in frames):
                    continue
                n = int(n)
                total += n
                for name in set(frames):
                    inclusive[name] += n
                self_[frames[-1]] += n
    print(f"{total} samples{' through ' + args.focus if args.focus else ''}")
    print("\ninclusive")
    for name, n in inclusive.most_common(args.top):
        print(f"{n / total:6.1%}  {name}")
    print("\nself")
    for name, n in self_.most_common(args.top):
        print(f"{n / total:6.1%}  {name}")


if __name__ == "__main__":
    main()
