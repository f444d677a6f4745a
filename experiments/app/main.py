"""The `emolab` command: one Hydra app; the `experiment` config group picks what runs.

Every user error ends the same way: one line `error: ...` on stderr and exit code 2. Errors in the
experiment (an `EmolabError`) are caught around the task; errors of Hydra's config composition
(an unknown `model=nope`, an override of a key that does not exist) happen before the task runs,
so `main` catches those around the whole Hydra app and adds Hydra's list of available options.
A model that failed for a transient reason through every retry (a server that is down, hangs or keeps
dropping its streams) ends the same way: the input is fine, and what the run wrote is kept for a resume.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException, OverrideParseException
from omegaconf import DictConfig
from rich.console import Console

from emotion_probe.errors import EmolabError
from emotion_probe.files import write_text_atomic
from emotion_probe.redaction import redact, redacted
from emotion_probe.terminal import printable
from experiments.app.common import resume_hint
from experiments.app.config_guard import check_composed, check_option_overrides, guarded_config_loading, shipped_groups
from experiments.app.run_records import finished_job
from experiments.app.user_error import USER_ERROR, report_error


def load_task(path: str) -> Callable[[DictConfig], Any]:
    """The experiment function named by `task`: only a registered experiment (experiments.app.registry)."""
    from experiments.app.registry import load_experiment

    return load_experiment(path, "task (set by the experiment config)")


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def app(cfg: DictConfig) -> object:
    try:
        check_composed(cfg)
        task = load_task(cfg.task)
        finished = finished_job(cfg)
        if finished is not None:
            # A rerun of an interrupted sweep: this job completed before, with the same config.
            Console(stderr=True).print(f"[dim]job already finished ({HydraConfig.get().runtime.output_dir}); skipping[/]")
            return finished
        return task(cfg)
    except EmolabError as err:
        # Bad input is the user's to fix: one clear line, no traceback.
        report_error(str(err))
        sys.exit(USER_ERROR)
    except Exception as err:
        from emotion_probe.models.wrappers.core import is_transient

        if not is_transient(err):
            raise  # a bug: keep its traceback
        # A model server that stayed down, dropped its streams or timed out through every retry (conf/retry):
        # nothing is wrong with the input, and every step finished before is on disk. One line, as for bad input.
        report_error(f"the model did not answer: {type(err).__name__}: {' '.join(str(err).split())} "
                     f"(retried as conf/retry allows); what was written is kept, {resume_hint()}")
        sys.exit(USER_ERROR)


def _clean_log_records() -> None:
    """Every log record, Hydra's own included, has URL credentials masked and control characters shown as
    escapes (a model's reply or a server's error text can hold them), whatever handler Hydra configures."""
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "emolab_clean", False):
        return

    def clean_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format: logging reports that itself
            return record
        cleaned = printable(redact(message), newlines=True)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return record

    clean_record.emolab_clean = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(clean_record)


@contextmanager
def _redacted_hydra_records() -> Iterator[None]:
    """Hydra copies the config and the command line into .hydra/{config,hydra,overrides}.yaml and a sweep's
    multirun.yaml: masked, and (the .hydra/ files) written whole or not at all (emotion_probe.files)."""
    from hydra.core import utils as hydra_core_utils
    from omegaconf import OmegaConf

    original = hydra_core_utils._save_config

    def save_config(cfg: Any, filename: str, output_dir: Any) -> None:
        from pathlib import Path

        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        clean = OmegaConf.create(redacted(OmegaConf.to_container(cfg, resolve=False)))
        write_text_atomic(output_dir / filename, OmegaConf.to_yaml(clean))

    save_yaml = OmegaConf.save

    def save_sweep_record(config: Any, f: Any, resolve: bool = False) -> None:
        # The basic sweeper writes multirun.yaml with OmegaConf.save itself, not through _save_config.
        if str(f).endswith("multirun.yaml"):
            config = OmegaConf.create(redacted(OmegaConf.to_container(config, resolve=False)))
        save_yaml(config, f, resolve=resolve)

    hydra_core_utils._save_config = save_config
    OmegaConf.save = staticmethod(save_sweep_record)  # type: ignore[method-assign]
    try:
        yield
    finally:
        hydra_core_utils._save_config = original
        OmegaConf.save = save_yaml  # type: ignore[method-assign]


def split_hydra_error(err: CompactHydraException) -> tuple[str, str]:
    """Hydra's message as (the error line, what follows it).

    What follows keeps Hydra's list of available options; the config search path after it is
    dropped, as it only matters to someone who added a search path, and they can see it with
    HYDRA_FULL_ERROR=1.
    """
    lines = str(err).strip().splitlines()
    if isinstance(err.__cause__, Exception) and str(err.__cause__).strip():
        lines += str(err.__cause__).strip().splitlines()  # OmegaConf's reason, as Hydra prints it
    if "Config search path:" in lines:
        lines = lines[: lines.index("Config search path:")]
    first = lines[0] if lines else type(err).__name__
    if isinstance(err, OverrideParseException):  # the parser's message does not say which override
        first = f"cannot parse the override {err.override!r}: {first}"
    return first, "\n".join(line for line in lines[1:]).strip("\n")


@contextmanager
def _hydra_errors_as_user_errors() -> Iterator[None]:
    """While Hydra runs, its composition errors end as `error: ...` with exit code 2.

    Hydra reports them itself, inside the app, through `hydra._internal.utils.run_and_report`
    (it prints and exits 1, so nothing reaches a caller). That function is wrapped here so a
    composition error is reported our way first; anything else still goes to Hydra's own report.
    HYDRA_FULL_ERROR=1 keeps Hydra's full traces, as Hydra documents.
    """
    from hydra._internal import utils as hydra_utils

    original = hydra_utils.run_and_report

    def run_and_report(func: Callable[[], Any]) -> Any:
        def reported() -> Any:
            try:
                return func()
            except InstantiationException:
                raise  # a broken _target_ in our own conf (a callback, a launcher) is a bug
            except EmolabError as err:  # a config file refused while Hydra loaded it (experiments.app.config_guard)
                report_error(str(err))
                sys.exit(USER_ERROR)
            except CompactHydraException as err:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                report_error(*split_hydra_error(err))
                sys.exit(USER_ERROR)

        return original(reported)

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = original


def _printable_warnings() -> None:
    """Python's warnings reach the terminal escaped, like every other line a run prints: they quote what
    they warn about (matplotlib names a glyph missing from its font, the glyph itself included, when a
    figure's title holds a model's name with a control character in it)."""
    import warnings

    original = warnings.formatwarning

    def formatwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
        return printable(original(message, category, filename, lineno, line), newlines=True)

    warnings.formatwarning = formatwarning


def main() -> None:
    """The `emolab` console script."""
    from hydra._internal.utils import get_args_parser

    _printable_warnings()

    try:
        check_option_overrides(get_args_parser().parse_known_args(sys.argv[1:])[0].overrides, shipped_groups())
    except EmolabError as err:
        report_error(str(err))
        sys.exit(USER_ERROR)
    _clean_log_records()
    with _hydra_errors_as_user_errors(), guarded_config_loading(), _redacted_hydra_records():
        app()


if __name__ == "__main__":
    main()
