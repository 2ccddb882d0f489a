"""Run the benchmarks (`python -m nox -s bench`; never part of CI).

Each `benchmarks/bench_*.py` is a script that prints one JSON object per line on stdout (one per
measured configuration, peers included, so that ratios come from the same run). This runner executes
them in turn, echoes their lines, and appends them, stamped with the machine and the time, to
`.bench/results.jsonl`. The figures quoted in BENCHMARKS.md name the command that produced them.

    python benchmarks/run.py                 # every benchmark
    python benchmarks/run.py fft_floor       # only bench_fft_floor.py
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE.parent / ".bench" / "results.jsonl"


def main(selected: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if selected:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in selected]
    if not scripts:
        print("no benchmark scripts selected (benchmarks/bench_*.py)")
        return 1
    RESULTS.parent.mkdir(exist_ok=True)
    stamp = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "python": platform.python_version(),
    }
    failed = 0
    for script in scripts:
        print(f"== {script.name}", flush=True)
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        sys.stderr.write(proc.stderr[-4000:])
        with RESULTS.open("a") as fh:
            for line in proc.stdout.splitlines():
                print(line)
                if line.startswith("{"):
                    fh.write(json.dumps({**stamp, "bench": script.stem, **json.loads(line)}) + "\n")
        failed += proc.returncode != 0
    print(f"results appended to {RESULTS}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
