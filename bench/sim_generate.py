"""Dataset generation benchmark: `kilowatch sim generate` for 100 meters at 1-minute resolution.

Run from the repository root: ``.venv/bin/python bench/sim_generate.py [--days 365] [--meters 100]``.
The goal is one year x 100 meters in under 60 s, in the columnar format (``--format npz``, one process per
core); the contract's JSON lines (some 33 GB a year) are timed over ``--jsonl-days`` in the same run, for
comparison. A shorter run prints the rate and the year it implies. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from sim.generate import Format, Run, write_dataset
from sim.scenario import Scenario

YEAR_READINGS = 365 * 1440 * 100


def scenario(meters: int) -> Scenario:
    """A province of offices, cabinets, signs and machines, `meters` in all (one per site and gateway)."""
    models = ["office", "lighting_cabinet", "advertising", "machine"]
    kinds = {
        "office": "office",
        "lighting_cabinet": "street_lighting",
        "advertising": "advertising",
        "machine": "factory",
    }
    sites = [
        {
            "id": f"site-{i:03d}", "kind": kinds[models[i % 4]],
            "gateways": [{"id": "gw", "buses": [{"id": "bus", "meters": [
                {"id": "m", "profile": "eastron-sdm630", "unit": 1, "model": models[i % 4], "rated_kw": 20}
            ]}]}],
        }
        for i in range(meters)
    ]  # fmt: skip
    return Scenario.model_validate({"name": "bench", "seed": 1, "start": "2025-01-01", "sites": sites})


def measure(spec: Scenario, days: int, fmt: Format, jobs: int) -> tuple[int, float, int]:
    """(readings, seconds, bytes) of one `write_dataset` run, labels included."""
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        run = Run(spec, start=spec.start, days=days, interval_s=60)
        write_dataset(run, Path(out), fmt=fmt, jobs=jobs)
        elapsed = time.perf_counter() - started
        size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    return run.steps * len(spec.meters), elapsed, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365, help="days of the npz run")
    parser.add_argument("--jsonl-days", type=int, default=3, help="days of the jsonl run (0: skip it)")
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    spec = scenario(args.meters)
    print(f"{args.meters} meters at 1 min, {args.jobs} processes on {os.cpu_count()} cores")
    runs: list[tuple[Format, int]] = [("npz", args.days)]
    if args.jsonl_days:
        runs.append(("jsonl", args.jsonl_days))
    rates = {}
    for fmt, days in runs:
        readings, elapsed, size = measure(spec, days, fmt, args.jobs)
        rates[fmt] = readings / elapsed
        print(f"{fmt:>5}: {days} days, {readings:,} readings in {elapsed:.1f} s ({rates[fmt]:,.0f} readings/s, "
              f"{size / readings:.0f} bytes/reading); 1 year x 100 meters: {YEAR_READINGS / rates[fmt]:,.0f} s "
              f"and {size / readings * YEAR_READINGS / 1e9:.1f} GB"
              + (" (goal < 60 s)" if fmt == "npz" else ""))  # fmt: skip
    if len(rates) == 2:
        print(f"npz writes {rates['npz'] / rates['jsonl']:.0f} times as many readings per second as jsonl")


if __name__ == "__main__":
    main()
