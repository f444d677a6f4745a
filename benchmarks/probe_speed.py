"""How fast is exact emotion probing? Four ways of scoring the same prompts, side by side.

    python benchmarks/probe_speed.py            # (make bench) embedded SmolLM2, CPU, 256 scenarios

(a) floor : one plain batched forward over each prompt extended by the tokens exact
            scoring cannot avoid (the trie's distinct non-final prefixes), logits only
            where the probe needs them. No tree mask, no scoring: the compute floor.
(b) probe : EmotionProbe's backend.score (packed 4D tree mask), tokenization checks included.
(c) naive : every prompt + word as its own sequence (lm-evaluation-harness style);
            measured on a subset and reported per scenario, since it is ~100x slower.
(d) paper : one plain forward over the prompts alone (Zhao et al.'s top-k approximation).

Targets: (b)/(a) <= 1.15 and (c)/(b) >= 30. Each timing is the best of --repeats runs.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import statistics
import time

import numpy as np
import torch

from emotion_probe import EmotionProbe, EmotionWheel
from emotion_probe.models.providers.smollm2 import load_smollm2
from emotion_probe.models.trie import left_pad
from emotion_probe.scenarios import load_scenarios
from experiments.app.config import probe_settings


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def plain_forward(backend, rows: list[list[int]], keep: int) -> None:
    """Left-padded batched forward with an ordinary 2D mask, logits for the last `keep` positions."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for start in range(0, len(order), backend.batch_size):
        batch = left_pad([rows[i] for i in order[start : start + backend.batch_size]], backend._pad_id)
        with torch.inference_mode():
            logits = backend.model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                logits_to_keep=keep, use_cache=False,
            ).logits
            torch.log_softmax(logits.float(), dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", type=int, default=256)
    parser.add_argument("--scenario-file", default="everyday", help="bundled set or JSONL path, cycled to --scenarios")
    parser.add_argument("--naive-subset", type=int, default=8, help="scenarios for (c); reported per scenario")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-scenarios", type=int, default=1024, help="stream this many for the memory check; 0 = skip")
    args = parser.parse_args()

    torch.manual_seed(0)
    backend = load_smollm2()
    settings = probe_settings()  # conf/probe/default.yaml, as `emolab experiment=probe` runs
    wheel = EmotionWheel.load(settings.wheel)
    probe = EmotionProbe(backend, wheel, settings)
    pool = [s.text for s in load_scenarios(args.scenario_file)]
    texts = list(itertools.islice(itertools.cycle(pool), args.scenarios))
    prompts = probe.prompts(texts)
    prompt_ids = backend._encode(prompts)
    cont_ids = backend._continuation_ids(prompts[0], prompt_ids[0], probe.continuations)
    trie = backend._trie(cont_ids, False)
    extension = trie.node_tokens.tolist()
    print(f"model {backend.name} ({backend.num_parameters() / 1e6:.0f}M) on {backend.device}, torch threads "
          f"{torch.get_num_threads()}, batch {backend.batch_size}")
    print(f"{len(texts)} scenarios, {len(wheel.words)} words, {sum(len(c) > 1 for c in cont_ids)} multi-token; "
          f"trie: {trie.num_nodes} non-final prefixes; mean prompt {statistics.mean(map(len, prompt_ids)):.1f} tokens")

    # Warm up every path once (allocators, kernels, caches).
    backend.score(prompts[:4], probe.continuations)
    plain_forward(backend, [p + extension for p in prompt_ids[:4]], trie.num_nodes + 1)

    n = len(prompts)
    floor = best_of(args.repeats, lambda: plain_forward(backend, [p + extension for p in prompt_ids], trie.num_nodes + 1)) / n
    packed = best_of(args.repeats, lambda: backend.score(prompts, probe.continuations)) / n
    paper = best_of(args.repeats, lambda: plain_forward(backend, prompt_ids, 1)) / n
    subset = prompts[: args.naive_subset]
    backend.scoring = "naive"
    naive = best_of(1, lambda: backend.score(subset, probe.continuations)) / len(subset)
    naive_scores = backend.score(subset[:2], probe.continuations).logprobs
    backend.scoring = "packed"
    packed_scores = backend.score(subset[:2], probe.continuations).logprobs
    max_error = float(np.abs(np.exp(packed_scores) - np.exp(naive_scores)).max())

    print(f"\n{'method':<34}{'ms / scenario':>14}")
    for label, value in [("(a) floor: plain forward + prefixes", floor), ("(b) probe: packed exact", packed),
                         (f"(c) naive per-word (n={len(subset)})", naive), ("(d) paper: prompt-only forward", paper)]:
        print(f"{label:<34}{value * 1e3:>14.1f}")
    print(f"\n(b)/(a) = {packed / floor:.3f}   target <= 1.15   {'OK' if packed / floor <= 1.15 else 'MISSED'}")
    print(f"(c)/(b) = {naive / packed:.1f}    target >= 30     {'OK' if naive / packed >= 30 else 'MISSED'}")
    print(f"(b)/(d) = {packed / paper:.2f}    (price of exactness over the paper's approximation)")
    print(f"max |P_probe - P_naive| over 2 x 135 words = {max_error:.2e}")

    if args.memory_scenarios:
        stream = list(itertools.islice(itertools.cycle(pool), args.memory_scenarios))
        peaks = []
        for i, _ in enumerate(probe.iter_distributions(stream)):
            peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(f"\nstreaming {len(stream)} scenarios: peak RSS after first chunk {peaks[0]:.0f} MiB, "
              f"after last {peaks[-1]:.0f} MiB (growth {peaks[-1] - peaks[0]:.0f} MiB)")


if __name__ == "__main__":
    main()
