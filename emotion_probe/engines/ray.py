"""Probe a scenario set over a Ray cluster with Ray Data: one model per worker, the local engine's table.

`probe_scenarios_on_ray` cuts the scenarios into blocks of `probe.chunk_size` rows and maps
`ProbeWorker` over them with `Dataset.map_batches`. Each worker is a Ray actor that builds the
backend and the `EmotionProbe` once, from plain config data, and then probes one block per call.
A block is exactly the chunk the local engine would have probed, so both engines feed the model
the same batches. The driver gathers the rows, puts them back in scenario order and writes the
same `distributions.parquet` as `runner.probe_scenarios`.

Ray is imported only inside these functions, so the rest of emolab runs without it installed.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from emotion_probe.models.wrappers.stack import CacheOptions, RetryPolicy
from emotion_probe.files import replacing
from emotion_probe.errors import ConfigError, EmolabError
from emotion_probe.probe import (
    FIRST_WORD_COLUMN,
    RANKED_COLUMN,
    TOP_K_PROBABILITIES_COLUMN,
    TOP_K_TOKEN_IDS_COLUMN,
    TOP_K_TOKENS_COLUMN,
    EmotionProbe,
    ProbeSettings,
)
from emotion_probe.engines.local import ID_COLUMNS, probe_chunk, with_labels
from emotion_probe.scenarios import Scenario
from emotion_probe.wheel import EmotionWheel

RAY_INSTALL_HINT = 'pip install "emolab[sweeps]"'
#: Per-row record of which worker probed the row and how; the driver turns it into the manifest and drops it.
PROVENANCE_COLUMN = "_probed_by"
#: Ray's switch for token authentication, which Ray 2.60 turns on for every new local instance.
AUTH_MODE_ENV = "RAY_AUTH_MODE"


class RaySettings(BaseModel):
    """The `ray:` options of `experiment=probe` (used with `engine=ray`), validated."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(description="null = start a local instance; 'auto' or ray://host:port = join a cluster")
    num_workers: int = Field(ge=1, description="probe workers (Ray actors), each with its own copy of the model")
    num_cpus_per_worker: float = Field(gt=0, description="CPUs reserved by each worker")
    num_gpus_per_worker: float = Field(ge=0, description="GPUs reserved by each worker")
    num_cpus: int | None = Field(ge=1, description="CPUs of a local instance; null = all of this machine's")
    worker_start_timeout_s: float = Field(gt=0, description="wait this long for every worker to load its model")

    @model_validator(mode="after")
    def _num_cpus_sizes_a_local_instance(self) -> "RaySettings":
        if self.address is not None and self.num_cpus is not None:
            raise ValueError(
                "num_cpus sizes a local Ray instance; leave it null when ray.address names a cluster, "
                "whose size is the cluster's own"
            )
        return self


def import_ray() -> ModuleType:
    """Ray with its Data library, or one clear error that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the [data] extra: pyarrow, and Ray Data itself)
    except ImportError as err:
        raise ConfigError(f"engine=ray needs Ray and Ray Data ({err.name or err} is missing): {RAY_INSTALL_HINT}") from None
    return ray


@contextmanager
def ray_session(settings: RaySettings) -> Iterator[str]:
    """Connect to Ray for the length of the block; yield where the work runs.

    With no address (neither `ray.address` nor $RAY_ADDRESS), a local instance is started and
    stopped again at the end. Only then is token authentication turned off (RAY_AUTH_MODE=disabled,
    unless the caller set it): Ray 2.60 would otherwise turn it on and write a secret token to
    ~/.ray/auth_token on first use, a file left in the user's home for an instance that only this
    run uses and that stops with it. A cluster the user names keeps its own authentication setting.
    Inside a process that is already part of a Ray cluster (a job of hydra/launcher=ray), that
    cluster is used as it is and left running.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield "the Ray cluster this process already belongs to"
        return
    address = settings.address or os.environ.get("RAY_ADDRESS") or None
    previous_auth_mode = os.environ.get(AUTH_MODE_ENV)
    if address is None:
        os.environ.setdefault(AUTH_MODE_ENV, "disabled")
        # The dashboard would cost a process and a port for an instance nobody looks at.
        ray.init(num_cpus=settings.num_cpus, include_dashboard=False)
        where = "a local Ray instance"
    else:
        if settings.num_cpus is not None:
            raise ConfigError(f"ray.num_cpus sizes a local Ray instance; leave it null to join the cluster at {address}")
        try:
            ray.init(address=address)
        except ConnectionError as err:
            raise ConfigError(f"ray.address: cannot join the Ray cluster at {address!r}: {err}") from None
        where = f"the Ray cluster at {address}"
    try:
        yield where
    finally:
        ray.shutdown()
        if address is None and previous_auth_mode is None:
            os.environ.pop(AUTH_MODE_ENV, None)


class ProbeWorker:
    """A Ray Data callable class: one backend and one `EmotionProbe` per worker, built once.

    Everything it receives is plain data (a model config dict, the loaded wheel, the ProbeSettings the
    driver validated once), so it pickles to any node; the model itself is loaded where the worker runs.
    """

    def __init__(
        self,
        model_config: dict[str, Any],
        wheel: EmotionWheel,
        probe_settings: ProbeSettings,
        cache: CacheOptions | None,
        retry: RetryPolicy | None,
    ):
        from emotion_probe.models import instantiate_backend
        from emotion_probe.models.wrappers.stack import wrap_backend

        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.startup_error: EmolabError | None = None
        try:
            # The same layers as experiments.app.common.build_model, so both engines share the response cache.
            self.backend = wrap_backend(instantiate_backend(model_config), identity=model_config, cache=cache, retry=retry)
            self.probe = EmotionProbe(self.backend, wheel, probe_settings)
        except EmolabError as err:
            # Raised again on the first chunk: an error in an actor's __init__ reaches the driver only
            # as text inside ActorDiedError, while one raised in a call keeps the exception itself,
            # which the driver reports as one clear line.
            self.startup_error = err

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from emotion_probe.models.wrappers.core import usage_of

        if self.startup_error is not None:
            raise self.startup_error
        frame = probe_chunk(self.probe, batch["id"].tolist(), batch["text"].tolist())
        # Usage is cumulative per worker, so the driver keeps each worker's largest and adds those up.
        frame[PROVENANCE_COLUMN] = json.dumps(
            {"worker": self.worker, "model": self.backend.describe(), "usage": usage_of(self.backend),
             "scored_with": self.probe.last_method, "exact": self.probe.last_exact},
            default=str,
        )
        return frame


@dataclass
class RayProbeResult:
    """What `probe_scenarios_on_ray` wrote, and what the run manifest records about it."""

    table: pd.DataFrame
    model: dict[str, Any]
    probe: dict[str, Any]
    ray: dict[str, Any]


def probe_scenarios_on_ray(
    scenarios: list[Scenario],
    model_config: dict[str, Any],
    wheel: EmotionWheel,
    settings: ProbeSettings,
    ray_settings: RaySettings,
    out_dir: str | Path,
    *,
    cache: CacheOptions | None = None,
    retry: RetryPolicy | None = None,
    show_progress: bool = True,
) -> RayProbeResult:
    """Probe `scenarios` on Ray and write `distributions.parquet`, equal to the local engine's.

    `model_config` is a resolved `model:` node as a plain dict (with its `_target_`); each worker
    builds its backend from it. Nothing is resumed: a rerun probes every scenario again.
    """
    out_dir = Path(out_dir)
    _check_before_workers(model_config, wheel)
    ray = import_ray()
    # One block per chunk: Ray Data then hands each worker exactly the chunks the local engine probes.
    size = settings.chunk_size
    blocks = [
        pd.DataFrame({"id": [s.id for s in scenarios[start : start + size]],
                      "text": [s.text for s in scenarios[start : start + size]]})
        for start in range(0, len(scenarios), size)
    ]
    worker_kwargs = {"model_config": model_config, "wheel": wheel, "probe_settings": settings, "cache": cache,
                     "retry": retry}
    rows, where = _probe_blocks(ray, blocks, worker_kwargs, size, ray_settings, show_progress)
    records = [json.loads(text) for text in rows[PROVENANCE_COLUMN].unique()]
    table = _ordered_table(rows, scenarios, wheel)
    with replacing(out_dir / "distributions.parquet") as staging:
        table.to_parquet(staging, index=False)
    workers = sorted({record["worker"] for record in records})
    usage = _total_usage(records)
    # A worker's description carries its own counters; the run's are the totals over all workers.
    model = {key: usage.get(key, value) for key, value in records[0]["model"].items()}
    return RayProbeResult(
        table=table,
        model={**model, "usage": usage},
        probe={**settings.model_dump(), "scored_with": records[0]["scored_with"], "exact": records[0]["exact"]},
        ray={"ran_on": where, "workers": workers, "num_workers": ray_settings.num_workers,
             "blocks": len(blocks), "ray_version": ray.__version__},
    )


def _check_before_workers(model_config: dict[str, Any], wheel: EmotionWheel) -> None:
    """The checks a worker would fail on, made on the driver: the user gets one line instead of a remote
    traceback, before any worker starts."""
    reserved = set(ID_COLUMNS) | {"emotion", "primary", PROVENANCE_COLUMN}
    if clash := reserved & set(wheel.words):
        raise ConfigError(f"wheel words {sorted(clash)} clash with the table's own columns")
    if "_target_" not in model_config:
        raise ConfigError("model config has no _target_ naming the backend class to build")
    from emotion_probe.models.registry import check_model_config

    check_model_config(model_config)  # workers build only registered providers
    if missing := [key for key, value in model_config.items() if value == "???"]:
        raise ConfigError(f"model config needs a value for: {', '.join(missing)} (e.g. model.{missing[0]}=...)")


def _probe_blocks(
    ray: ModuleType, blocks: list[pd.DataFrame], worker_kwargs: dict[str, Any], size: int,
    ray_settings: RaySettings, show_progress: bool,
) -> tuple[pd.DataFrame, str]:
    """Every block probed by a pool of `ProbeWorker`s: the rows as Ray hands them back (in any order), and
    where the work ran."""
    with ray_session(ray_settings) as where:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = show_progress
        # Start handing out chunks only once every worker has loaded its model: otherwise the first
        # worker up takes the whole queue, and a cluster too small for the pool fails with Ray's own
        # "not enough resources" error instead of waiting forever.
        context.wait_for_min_actors_s = ray_settings.worker_start_timeout_s
        # Let a worker's own exception reach the driver instead of Ray Data's generic UserCodeException.
        context.raise_original_map_exception = True
        probed = ray.data.from_pandas(blocks).map_batches(
            ProbeWorker,
            fn_constructor_kwargs=worker_kwargs,
            batch_size=size,
            batch_format="pandas",
            # A fixed pool: `concurrency=` is deprecated in Ray 2.60 in favour of a compute strategy.
            # One chunk in flight per worker, so chunks queue centrally and go to whichever worker is free.
            compute=ray.data.ActorPoolStrategy(size=ray_settings.num_workers, max_tasks_in_flight_per_actor=1),
            num_cpus=ray_settings.num_cpus_per_worker,
            num_gpus=ray_settings.num_gpus_per_worker,
        )
        try:
            return probed.to_pandas(), where
        except Exception as err:
            # A worker's bad-config error arrives wrapped in Ray's task errors; report it as itself.
            if (user_error := _user_error_inside(err)) is not None:
                raise user_error from None
            raise


def _ordered_table(rows: pd.DataFrame, scenarios: list[Scenario], wheel: EmotionWheel) -> pd.DataFrame:
    """The workers' rows as the local engine's table: its columns and dtypes, in scenario order, labelled."""
    order = [s.id for s in scenarios]
    if sorted(rows["id"]) != sorted(order):
        raise RuntimeError(f"Ray returned {len(rows)} rows for {len(order)} scenarios")
    # Rebuilt as the local engine builds it: Ray hands back Arrow-backed columns, which Parquet would
    # record as different dtypes than the local table's plain strings and float64.
    table = pd.DataFrame(rows[wheel.words].to_numpy(dtype="float64", na_value=np.nan), columns=wheel.words)
    table.insert(0, "id", [str(i) for i in rows["id"]])
    table.insert(1, "text", [str(t) for t in rows["text"]])
    if RANKED_COLUMN in rows.columns:  # the paper probe's rank order, as plain lists and strings
        table[RANKED_COLUMN] = [[str(w) for w in words] for words in rows[RANKED_COLUMN]]
        table[FIRST_WORD_COLUMN] = [w if isinstance(w, str) else None for w in rows[FIRST_WORD_COLUMN]]
    if TOP_K_TOKENS_COLUMN in rows.columns:  # probe.keep_top_k_tokens: every top-k token and its probability
        table[TOP_K_TOKENS_COLUMN] = [[str(t) for t in tokens] for tokens in rows[TOP_K_TOKENS_COLUMN]]
        table[TOP_K_TOKEN_IDS_COLUMN] = [[None if pd.isna(i) else int(i) for i in ids] for ids in rows[TOP_K_TOKEN_IDS_COLUMN]]
        table[TOP_K_PROBABILITIES_COLUMN] = [[float(p) for p in row] for row in rows[TOP_K_PROBABILITIES_COLUMN]]
    return with_labels(table.set_index("id").loc[order].reset_index(), scenarios)


def _total_usage(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum over workers of each worker's final (largest) cumulative usage counters."""

    def combine(total: dict[str, Any], part: dict[str, Any], pick) -> dict[str, Any]:
        merged = dict(total)
        for key, value in part.items():
            if isinstance(value, dict):
                merged[key] = combine(total.get(key, {}), value, pick)
            else:
                merged[key] = pick(total.get(key, 0), value)
        return merged

    final: dict[str, dict[str, Any]] = {}
    for record in records:
        final[record["worker"]] = combine(final.get(record["worker"], {}), record["usage"], max)
    total: dict[str, Any] = {}
    for usage in final.values():
        total = combine(total, usage, lambda a, b: a + b)
    return total


def _user_error_inside(err: BaseException) -> EmolabError | None:
    """The emolab error (bad config or input) that a worker raised, if Ray wrapped one; else None.

    Ray re-raises a task's exception as a RayTaskError that also subclasses the original class, with
    Ray's own message; the original, with emolab's message, is its `.cause`.
    """
    from ray.exceptions import RayError

    seen: set[int] = set()
    stack: list[BaseException | None] = [err]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, EmolabError) and not isinstance(current, RayError):
            # Ray Data appends its retry advice to the message; emolab's own message is one line.
            if current.args and isinstance(current.args[0], str):
                current.args = (current.args[0].split("\n", 1)[0], *current.args[1:])
            return current
        stack.extend([current.__context__, current.__cause__, getattr(current, "cause", None)])
    return None
