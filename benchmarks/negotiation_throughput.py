"""How many negotiation trials a minute, one at a time and sixteen at once? One run, side by side.

    python benchmarks/negotiation_throughput.py     # (make bench) embedded SmolLM2, CPU

Runs the real negotiation (`emolab experiment=negotiation`) as a user would, with every default:
seeded sampling, grammar-constrained turns, the probe on each customer message. Only the response
cache is off, so that every turn is really generated.

(1)  trials=--serial-trials concurrency=1
(16) trials=--concurrent concurrency=--concurrent
Target: trials/minute of (16) / trials/minute of (1) >= 5. Also printed: generated tokens/s and the
mean generation batch size, from each run's manifest.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def run(trials: int, concurrency: int, workdir: Path, seed: int) -> dict:
    out = workdir / f"c{concurrency}"
    command = [sys.executable, "-m", "experiments.app.main", "experiment=negotiation", f"trials={trials}",
               f"concurrency={concurrency}", f"seed={seed}", "cache.enabled=false", f"hydra.run.dir={out}"]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text())
    usage = manifest["models"]["salesperson"]["usage"]
    customer = manifest["models"]["customer"]["usage"]
    tokens = usage.get("completion_tokens", 0) + customer.get("completion_tokens", 0)
    histogram = {int(size): count for size, count in usage.get("generation_batch_sizes", {}).items()}
    batches = sum(histogram.values())
    trials_table = pd.read_parquet(out / "trials.parquet")
    return {"seconds": elapsed, "trials_per_minute": 60 * trials / elapsed, "tokens_per_s": tokens / elapsed,
            "mean_batch": sum(s * c for s, c in histogram.items()) / batches if batches else 1.0,
            "turns": int(trials_table["turns"].sum()), "parse_failures": int(trials_table["parse_failures"].sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrent", type=int, default=16)
    parser.add_argument("--serial-trials", type=int, default=3, help="trials of the concurrency=1 run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="emolab-bench-") as tmp:
        serial = run(args.serial_trials, 1, Path(tmp), args.seed)
        concurrent = run(args.concurrent, args.concurrent, Path(tmp), args.seed)
    for label, result in (("1", serial), (str(args.concurrent), concurrent)):
        print(f"concurrency={label:>2}: {result['trials_per_minute']:6.2f} trials/min  "
              f"{result['tokens_per_s']:7.1f} tokens/s  mean batch {result['mean_batch']:.1f}  "
              f"({result['turns']} turns, {result['parse_failures']} unparsed, {result['seconds']:.0f} s)")
    ratio = concurrent["trials_per_minute"] / serial["trials_per_minute"]
    print(f"ratio = {ratio:.2f}   target >= 5   {'OK' if ratio >= 5 else 'MISSED'}")


if __name__ == "__main__":
    main()
