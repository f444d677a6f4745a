"""Do concurrent negotiation turns share batched generation, and what does the grammar cost? One run, side by side.

    python benchmarks/generation_batching.py        # (make bench) embedded SmolLM2, CPU

Every request is a customer turn as the negotiation sends it by default: temperature 0.5, a seed
of its own per trial (GenerateConfig.reseeded, as agents.negotiators.turn_config does), and
the CustomerTurn JSON schema, decoded under its xgrammar mask.

(1)  one trial: one generate() alone.
(16) sixteen concurrent trials: 16 threads call generate() at once through BatchingBackend.
     Target: tokens/s of (16) / tokens/s of (1) >= 4.
grammar cost: the same requests with structured_output=prompt (no mask, the schema left to the
     prompt), at batch 1 and 16. Target: tokens/s with the mask >= 0.9 x without.
batch shape: each of the 16 batched replies against the same (prompt, seed) generated alone. They
     differ only where floating-point differences between batch shapes flip a sampled token.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from agents.negotiation import NegotiationScenario, customer_messages, turn_schemas
from agents.records import SalespersonTurnRecord
from emotion_probe.models.base import GenerateConfig
from emotion_probe.models.wrappers.batching import BatchingBackend
from emotion_probe.models.providers.smollm2 import load_smollm2
from emotion_probe.wheel import EmotionWheel

SCENARIO = NegotiationScenario.model_validate(
    yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "scenario" / "acorn.yaml").read_text()))
#: The default run's emotions (conf/probe/default.yaml's wheel) and its customer schema.
EMOTIONS = tuple(EmotionWheel.load("shaver").primaries)
CustomerTurn = turn_schemas(EMOTIONS).customer


def request(trial: int) -> list:
    opening = f"Good day, customer {trial}! This acorn is a rare find from a 300-year-old oak. Fifteen dollars."
    return customer_messages(SCENARIO, [SalespersonTurnRecord.model_construct(text=opening)], EMOTIONS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrent", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=160, help="the negotiation's default token budget")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    model = load_smollm2()
    batched = BatchingBackend(model, max_batch=args.concurrent)
    base = GenerateConfig(max_tokens=args.max_tokens, temperature=0.5, seed=0,
                          response_schema=CustomerTurn.model_json_schema())

    def one(trial: int, repeat: int) -> float:
        start = time.perf_counter()
        reply = model.generate(request(trial), base.reseeded(trial, repeat))
        return reply.completion_tokens / (time.perf_counter() - start)

    batched_texts: dict[tuple[int, int], str] = {}

    def many(repeat: int) -> float:
        with ThreadPoolExecutor(args.concurrent) as pool:
            start = time.perf_counter()
            outputs = list(pool.map(lambda t: batched.generate(request(t), base.reseeded(t, repeat)),
                                    range(args.concurrent)))
            elapsed = time.perf_counter() - start
        if model.structured_output == "grammar":
            batched_texts.update({(t, repeat): o.text for t, o in enumerate(outputs)})
        return sum(o.completion_tokens for o in outputs) / elapsed

    model.generate(request(0), base)  # warm-up, and the one grammar compile
    rates: dict[str, dict[str, float]] = {}
    for mode in ("grammar", "prompt"):
        model.structured_output = mode
        singles, batches = [], []
        for repeat in range(args.repeats):
            singles.append(one(0, repeat))
            batches.append(many(repeat))
        rates[mode] = {"1": max(singles), str(args.concurrent): max(batches)}
    model.structured_output = "grammar"
    same = sum(model.generate(request(t), base.reseeded(t, 0)).text == batched_texts[(t, 0)]
               for t in range(args.concurrent))
    sizes = batched.batch_sizes
    n = str(args.concurrent)
    print(f"model {model.name} on {model.device}; customer turns, seeded per trial, temperature 0.5, "
          f"max_tokens {args.max_tokens}")
    print(f"(1)  one trial:          {rates['grammar']['1']:8.1f} tokens/s (grammar)")
    print(f"({n}) concurrent trials: {rates['grammar'][n]:8.1f} tokens/s (grammar)   "
          f"mean batch size {sum(sizes) / len(sizes):.1f}")
    ratio = rates["grammar"][n] / rates["grammar"]["1"]
    print(f"batching ratio = {ratio:.2f}   target >= 4   {'OK' if ratio >= 4 else 'MISSED'}")
    print(f"batch shape: {same}/{args.concurrent} batched replies equal the same (prompt, seed) generated alone")
    for size in ("1", n):
        cost = rates["grammar"][size] / rates["prompt"][size]
        print(f"grammar at batch {size:>2}: {rates['grammar'][size]:7.1f} tokens/s with the mask, "
              f"{rates['prompt'][size]:7.1f} without; ratio {cost:.2f}   target >= 0.90   "
              f"{'OK' if cost >= 0.9 else 'MISSED'}")


if __name__ == "__main__":
    main()
