"""Do concurrent negotiation trials share batched generation? Tokens/s side by side in one run.

    python benchmarks/generation_batching.py        # (make bench) embedded SmolLM2, CPU

(1) one trial: a single generate() call, alone.
(16) sixteen concurrent trials: 16 threads call generate() at once through BatchingBackend,
     which gathers them into one batched model.generate().
Target: tokens/s of (16) / tokens/s of (1) >= 4.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from emotion_probe.backends.base import GenerateConfig
from emotion_probe.backends.batching import BatchingBackend
from emotion_probe.backends.smollm2 import load_smollm2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrent", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    model = load_smollm2()
    batched = BatchingBackend(model, max_batch=args.concurrent)
    config = GenerateConfig(max_tokens=args.max_tokens)

    def request(i: int) -> list[dict]:
        return [{"role": "system", "content": "You are a salesperson selling an acorn."},
                {"role": "user", "content": f"Customer {i}: how much is the acorn, and why is it special?"}]

    model.generate(request(0), config)  # warm-up
    single_rates, batch_rates = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        one = model.generate(request(0), config)
        single_rates.append(one.completion_tokens / (time.perf_counter() - start))
        with ThreadPoolExecutor(args.concurrent) as pool:
            start = time.perf_counter()
            outputs = list(pool.map(lambda i: batched.generate(request(i), config), range(args.concurrent)))
            elapsed = time.perf_counter() - start
        batch_rates.append(sum(o.completion_tokens for o in outputs) / elapsed)
    single, many = max(single_rates), max(batch_rates)
    print(f"model {model.name} on {model.device}; {args.max_tokens} new tokens per request")
    print(f"(1)  one trial:            {single:8.1f} tokens/s")
    print(f"({args.concurrent}) concurrent trials:   {many:8.1f} tokens/s   batch sizes {batched.batch_sizes[-args.repeats:]}")
    ratio = many / single
    print(f"ratio = {ratio:.2f}   target >= 4   {'OK' if ratio >= 4 else 'MISSED'}")


if __name__ == "__main__":
    main()
