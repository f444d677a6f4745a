"""The `emolab` command: one Hydra app; the `experiment` config group picks what runs."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_method
from omegaconf import DictConfig
from rich.console import Console
from rich.text import Text

from emotion_probe.errors import EmolabError
from experiments.callbacks import finished_job


def _report(message: str) -> None:
    # One unwrapped line, and no markup parsing: messages quote user text like "[x]".
    Console(stderr=True, soft_wrap=True).print(Text.assemble(("error: ", "bold red"), message))


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def main(cfg: DictConfig) -> object:
    try:
        task = get_method(cfg.task)
    except Exception:
        _report(f"task {cfg.task!r} (set by the experiment config) is not importable")
        sys.exit(2)
    try:
        finished = finished_job(cfg)
        if finished is not None:
            # A rerun of an interrupted sweep: this job completed before, with the same config.
            Console(stderr=True).print(f"[dim]job already finished ({HydraConfig.get().runtime.output_dir}); skipping[/]")
            return finished
        return task(cfg)
    except EmolabError as err:
        # Bad input is the user's to fix: one clear line, no traceback.
        _report(str(err))
        sys.exit(2)


if __name__ == "__main__":
    main()
