"""`emolab experiment=generate_scenarios`: grow a labelled scenario file with a (strong) model."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from omegaconf import DictConfig
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from emotion_probe.data import resolve_data_file
from emotion_probe.limits import InputLimits
from emotion_probe.models.base import GenerateConfig
from emotion_probe.scenario_checks import normalized
from emotion_probe.scenarios import load_scenarios
from emotion_probe.terminal import printable_text
from emotion_probe.wheel import EmotionWheel
from environments.scenario_generator import GeneratorContext, build_scenario_generator_graph
from experiments.app.common import build_model, input_hashes, output_dir, validated
from experiments.app.fingerprints import reads_config
from experiments.app.manifest import write_manifest
from experiments.app.run_lock import LockSettings, only_writer_of


class GeneratorSettings(BaseModel):
    """conf/experiment/generate_scenarios.yaml; no defaults here, they live in the YAML."""

    model_config = ConfigDict(extra="forbid")

    output: str = Field(min_length=1, description="JSONL file to append to; a rerun with the same file resumes")
    wheel: str = Field(description="bundled wheel name or path whose words get scenarios")
    words: list[str] | None = Field(description="only these words; null = every word of the wheel")
    per_emotion: int = Field(ge=1, description="scenarios wanted per emotion word")
    max_attempts: int = Field(ge=1, description="generate-and-validate rounds per word before giving up")
    max_parse_retries: int = Field(ge=0, description="times a malformed reply is sent back with its error")
    temperature: float = Field(ge=0, description="sampling temperature")
    max_tokens: int = Field(ge=16, description="token budget of one reply")


@reads_config(*GeneratorSettings.model_fields, "model", "limits", "cache", "retry", "seed", "wait_for_lock", "paths",
              "progress")
def run(cfg: DictConfig) -> dict:
    settings = validated(GeneratorSettings, {key: cfg[key] for key in GeneratorSettings.model_fields}, "")
    wait = validated(LockSettings, {"wait_for_lock": cfg.wait_for_lock}, "").wait_for_lock
    # The output is appended to, outside the run dir: two runs on one file would both write every row.
    with only_writer_of(Path(settings.output), wait=wait):
        return _generate(cfg, settings)


def _generate(cfg: DictConfig, settings: GeneratorSettings) -> dict:
    inputs = input_hashes(resolve_data_file("wheels", settings.wheel))
    wheel = EmotionWheel.load(settings.wheel)
    words = settings.words or wheel.words
    for word in words:
        wheel.primary_of(word)  # an unknown word fails here, by name
    output = Path(settings.output)
    limits = validated(InputLimits, cfg.limits, "limits")
    existing = load_scenarios(output, limits=limits) if output.exists() and output.stat().st_size else []
    counts = Counter(s.emotion for s in existing)
    numbers: dict[str, int] = {}
    for s in existing:
        suffix = s.id.rsplit("-", 1)[-1]
        if suffix.isdigit():
            numbers[s.emotion] = max(numbers.get(s.emotion, 0), int(suffix))
    todo = [w for w in words if counts[w] < settings.per_emotion]
    model = build_model(cfg.model, cfg)
    context = GeneratorContext(
        model=model, output=output, per_emotion=settings.per_emotion, max_attempts=settings.max_attempts,
        max_parse_retries=settings.max_parse_retries,
        generate_config=GenerateConfig(temperature=settings.temperature, max_tokens=settings.max_tokens, seed=cfg.seed),
    )
    graph = build_scenario_generator_graph()
    seen = [normalized(s.text) for s in existing]
    # Words come from the wheel file: every cell is escaped and shown as text.
    summary = Table(title=printable_text(f"Scenario generation into {output}"))
    for column in ["emotion", "had", "written", "rejected", "status"]:
        summary.add_column(column)
    written_total = 0
    with Progress(disable=not cfg.progress) as progress:
        task = progress.add_task("generating", total=len(todo))
        for word in todo:
            state = graph.invoke(
                {"emotion": word, "primary": wheel.primary_of(word), "needed": settings.per_emotion - counts[word],
                 "existing": seen, "first_index": numbers.get(word, 0) + 1, "accepted": [], "rejected": [],
                 "attempts": 0, "status": "running"},
                context=context,
            )
            seen += [normalized(t) for t in state["accepted"]]
            written_total += len(state["accepted"])
            summary.add_row(*(printable_text(cell) for cell in (word, counts[word], len(state["accepted"]),
                                                                len(state["rejected"]), state["status"])))
            progress.advance(task)
    Console().print(summary)
    Console().print(f"{written_total} new rows; {len(words) - len(todo)} emotions were already complete")
    write_manifest(output_dir(cfg), cfg, models={"writer": model}, written=written_total, inputs=inputs)
    return {"written": written_total, "skipped": len(words) - len(todo)}
