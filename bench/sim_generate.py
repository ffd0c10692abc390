"""Dataset generation benchmark: `kilowatch sim generate` for 100 meters at 1-minute resolution.

Run from the repository root: ``.venv/bin/python bench/sim_generate.py [--days 365] [--meters 100]``.
The goal is one year x 100 meters in under 60 s; a shorter run prints the rate and the year it implies.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.generate import Run, write_dataset
from sim.scenario import Scenario


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--meters", type=int, default=100)
    args = parser.parse_args()
    spec = scenario(args.meters)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        run = Run(spec, start=spec.start, days=args.days, interval_s=60)
        write_dataset(run, Path(out))
        elapsed = time.perf_counter() - started
        size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    readings = run.steps * args.meters
    year = elapsed * 365 / args.days * 100 / args.meters
    print(f"{args.meters} meters x {args.days} days at 1 min: {readings:,} readings in {elapsed:.1f} s "
          f"({readings / elapsed:,.0f} readings/s, {size / 1e6:.0f} MB); "
          f"1 year x 100 meters: {year:.0f} s (goal < 60 s)")  # fmt: skip


if __name__ == "__main__":
    main()
