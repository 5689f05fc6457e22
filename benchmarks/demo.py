"""``stainlab demo --learned`` timed end to end, with its scores: the figures the README quotes.

Runs the command a user runs first (``make demo``) in a fresh folder, ``--repeats`` times, and stores
its ``summary.json`` (CIEDE2000 to the exact ground truth per method, StainNet training included), the
wall-clock seconds of each run, the machine's load and the provenance in ``results/demo.json``.

    python benchmarks/demo.py                 # -> benchmarks/results/demo.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from provenance import provenance  # noqa: E402

from stainlab.io.atomic import atomic_write_text  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    started = provenance()
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="stainlab-demo-") as folder:
            load = os.getloadavg()[0]
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "stainlab", "demo", "--learned", "--out", folder, "-q"], check=True)
            seconds = time.perf_counter() - start
            summary = json.loads((Path(folder) / "summary.json").read_text())
        runs.append({"seconds": round(seconds, 1), "load_average_before": round(load, 2)})
        print(f"demo --learned: {seconds:.1f} s (load {load:.2f})")
    best = min(summary["methods"].items(), key=lambda kv: kv[1]["delta_e2000_mean"] if kv[0] != "stainnet"
               else float("inf"))
    result = {"command": "stainlab demo --learned", "runs": runs,
              "seconds_min": min(r["seconds"] for r in runs), "seconds_max": max(r["seconds"] for r in runs),
              "unnormalized_delta_e2000": summary["unnormalized"]["delta_e2000_mean"],
              "best_classical": {"method": best[0], "delta_e2000": best[1]["delta_e2000_mean"]},
              "summary": summary, "machine": {"cpus": os.cpu_count(), "processor": platform.processor()},
              "provenance": provenance(started)}
    atomic_write_text(Path(args.out) / "demo.json", json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
