"""Batched generation across concurrent callers gives each caller its own, correct reply."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from emotion_probe.models.base import GenerateConfig
from emotion_probe.models.wrappers.batching import BatchingBackend

pytestmark = pytest.mark.embedded


def test_concurrent_requests_share_a_batch_and_match_single_generation(smollm2):
    batched = BatchingBackend(smollm2, max_batch=4, wait_s=0.2)
    config = GenerateConfig(max_tokens=12)
    prompts = [[{"role": "user", "content": f"Count from {i} to {i + 3}."}] for i in range(4)]
    streamed: dict[int, list[str]] = {i: [] for i in range(4)}
    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(lambda i: batched.generate(prompts[i], config, streamed[i].append), range(4)))
    assert max(batched.batch_sizes) > 1  # they really were batched
    for i, output in enumerate(outputs):
        alone = smollm2.generate(prompts[i], config)
        assert output.text == alone.text  # greedy decoding: padding must not change the answer
        assert "".join(streamed[i]) == output.text
