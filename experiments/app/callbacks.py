"""Hydra callbacks that make sweeps resumable and self-describing.

`on_job_end` runs in the job's own process, wherever the launcher put it (a joblib worker, a
Slurm node, a Ray worker), so each job records its own outcome in `<job dir>/job.json`.
`on_multirun_end` runs where the sweep was launched and merges those records into
`<sweep dir>/manifest.json`. A rerun of the sweep into the same dir reads `job.json` back
(`finished_job`) and skips jobs that already completed with the same config and the same input files.

A run dir has one writer at a time: the callback holds an exclusive lock on `<dir>/.emolab.lock` from
the start of a run (or a sweep job, or a sweep in its sweep dir) to its end, and on the dir the job
writes (`paths.output_dir`) when that is elsewhere; a second process on the same dir stops with
`error: <dir> is in use by pid N on <host>` (or waits, with `wait_for_lock`). A lock that cannot be
taken (a lock file that is a dir or a link, a read-only dir) stops the run too.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import hashlib
import json
import logging
import os
import platform
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emotion_probe.errors import ConfigError
from emotion_probe.terminal import printable
from experiments.app.common import changed_inputs, current_inputs, git_commit, validated, write_json_atomic

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
#: Written by claim_run_dir when a resumable run starts: the fingerprint and input hashes a resume must match.
RUN_SETTINGS_FILE = "run_settings.json"
SWEEP_MANIFEST = "manifest.json"
#: The exit code of a run stopped for the user to fix something (experiments.app.main's).
USER_ERROR = 2
#: The run dir's lock (held with flock for the whole run), and the sidecar that names its holder.
LOCK_FILE = ".emolab.lock"
LOCK_OWNER_FILE = ".emolab.lock.json"
# Keys that change how a run looks or where it writes, not what it computes: a rerun may differ in them.
# (`paths` is the run dir itself: a sweep moved to another disk is still the same sweep.)
VOLATILE_KEYS = ("progress", "wait_for_lock", "paths")
#: How fingerprints are made: 3 = `task` (an entry-point name) and the keys the task declared; 2 = the
#: same with `task` as the module path emolab then recorded; 1 (records without a version) = the whole
#: config but `progress`, as emolab recorded them before experiments declared their keys.
FINGERPRINT_VERSION = 3
#: Left out of a version-1 fingerprint's comparison: `progress`, as then, and the keys that configs gained
#: with version 2, so an old record still matches a config that differs from its own only by them.
_LEGACY_LEFT_OUT = ("progress", "wait_for_lock", "limits")
#: The attribute `reads_config` sets on a task.
_CONFIG_KEYS_ATTRIBUTE = "config_keys"

Task = TypeVar("Task", bound=Callable[..., Any])


def reads_config(*keys: str) -> Callable[[Task], Task]:
    """Declare the top-level config keys an experiment's task reads.

    A sweep job's fingerprint (`job_fingerprint`) covers these and `task`, nothing else, so editing a
    config the task never reads (conf/scenario/acorn.yaml for a probe) leaves its finished jobs finished.
    tests/test_run_dir_trust.py runs every declared task on a config holding only these keys, so a key
    read but not declared fails there.
    """
    def declare(task: Task) -> Task:
        setattr(task, _CONFIG_KEYS_ATTRIBUTE, tuple(keys))
        return task

    return declare


def declared_config_keys(task: str) -> tuple[str, ...] | None:
    """The keys the experiment `task` ("probe") declared with `reads_config`; None when it
    declared none, or is no experiment emolab can find (its fingerprint then covers the whole config)."""
    from experiments.app.registry import registered_experiments, upgrade_task

    entry = registered_experiments().get(upgrade_task(task))
    if entry is None:  # refused before it runs (experiments.app.config_guard); nothing is imported for it here
        return None
    try:
        function = entry.load()
    except (ImportError, AttributeError):  # a task whose extra is missing fails when it runs, with the reason
        return None
    keys = getattr(function, _CONFIG_KEYS_ATTRIBUTE, None)
    return tuple(keys) if keys is not None else None


class JobRecord(BaseModel):
    """`<job dir>/job.json`, as written by `on_job_end` and read back on rerun and by the report."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["COMPLETED", "FAILED"]
    num: int | None
    overrides: list[str]
    fingerprint: str
    # Records written before versions were recorded are version 1 (see FINGERPRINT_VERSION).
    fingerprint_version: int = 1
    output_dir: str
    started_at: str | None
    finished_at: str
    wall_time_s: float | None
    host: str
    pid: int
    error: str | None = None
    result: dict[str, Any] | None = None
    skipped_reruns: int = 0


def job_fingerprint(cfg: DictConfig) -> str:
    """A hash of what a job computes: `task` and the config keys its task declared (`reads_config`),
    resolved, without the volatile keys; the whole config (less the hydra node) for a task that declared none.

    Takes the job's config with or without its hydra node (callbacks get it, the task does not).
    Every model config in it has `device: auto` and `dtype: auto` resolved to what this machine runs
    (emotion_probe.models.wrappers.stack.resolved_model_config): a job finished on a GPU in bfloat16 is not
    the same job as one on a CPU in float32, though their configs read the same.
    """
    declared = declared_config_keys(cfg.get("task"))
    if declared is None:
        kept = [key for key in cfg if key not in ("hydra", *VOLATILE_KEYS)]
    else:
        kept = [key for key in ("task", *declared) if key in cfg and key not in VOLATILE_KEYS]
    return _hash_keys(cfg, kept)


def _legacy_fingerprint(cfg: DictConfig) -> str:
    """A version-1 fingerprint, made as emolab made it then: the whole config but the hydra node."""
    kept = [key for key in cfg if key not in ("hydra", *_LEGACY_LEFT_OUT)]
    data = OmegaConf.to_container(OmegaConf.masked_copy(cfg, kept), resolve=True, throw_on_missing=False)
    return hashlib.sha256(json.dumps(_placed(data), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _hash_keys(cfg: DictConfig, keys: list[str]) -> str:
    # Each key resolved where it sits, so an interpolation into a key left out still resolves.
    data = {}
    for key in keys:
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        data[key] = OmegaConf.to_container(value, resolve=True, throw_on_missing=False) \
            if OmegaConf.is_config(value) else value
    return hashlib.sha256(json.dumps(_placed(data), sort_keys=True, default=str).encode()).hexdigest()[:16]


def same_settings(fingerprint: str, version: int, cfg: DictConfig) -> bool:
    """Whether a recorded fingerprint, made the way `version` says, is this config's."""
    if version >= FINGERPRINT_VERSION:
        return fingerprint == job_fingerprint(cfg)
    cfg = _with_legacy_task(cfg)
    return fingerprint == (job_fingerprint(cfg) if version == 2 else _legacy_fingerprint(cfg))


def _with_legacy_task(cfg: DictConfig) -> DictConfig:
    """`cfg` with `task` as versions 1 and 2 recorded it (a module path), to compare with their fingerprints."""
    from experiments.app.registry import legacy_task

    task = cfg.get("task")
    if not isinstance(task, str):
        return cfg
    copy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(copy):
        copy.task = legacy_task(task)
    return copy


def _other_settings(version: int) -> str:
    """How a refusal names the settings it compared: an old record covers the whole config."""
    if version >= 2:  # versions 2 and 3 cover the same keys
        return "other settings"
    return ("other settings, or was recorded by an earlier emolab over its whole config (which an upgrade "
            "also changes)")


def _placed(node: Any) -> Any:
    """`node` with every model config in it (a dict with a `_target_`) given its resolved device and dtype."""
    if isinstance(node, list):
        return [_placed(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _placed(value) for key, value in node.items()}
    if "_target_" in node:
        from emotion_probe.models.wrappers.stack import resolved_model_config

        node = resolved_model_config(node)
    return node


def read_job_record(job_dir: Path) -> JobRecord | None:
    path = job_dir / JOB_FILE
    if not path.exists():
        return None
    try:
        return JobRecord.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as err:
        problem = err.errors()[0]
        # A key of the file is the file's text: escaped, as it reaches a console and logs.
        field = printable(".".join(str(part) for part in problem["loc"])) or "(file)"
        raise ConfigError(f"{path} is corrupt ({field}: {printable(problem['msg'])}); delete it to rerun that job") \
            from None


class RunSettingsFile(BaseModel):
    """`<run dir>/run_settings.json`, as claim_run_dir writes it and reads it back."""

    model_config = ConfigDict(extra="ignore")

    fingerprint: str
    fingerprint_version: int = 1  # written before versions were recorded (see FINGERPRINT_VERSION)
    overrides: list[str] = Field(default_factory=list)
    # Content hashes of the files the run read (experiments.app.common.input_hashes); None: recorded before
    # runs recorded them, so nothing to compare.
    inputs: dict[str, str] | None = None


def read_run_settings(out_dir: Path) -> RunSettingsFile | None:
    path = out_dir / RUN_SETTINGS_FILE
    if not path.exists():
        return None
    try:
        return RunSettingsFile.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, UnicodeDecodeError) as err:
        reason = f"{type(err).__name__}: {err.errors()[0]['msg']}" if isinstance(err, ValidationError) else str(err)
        raise ConfigError(f"{path} is corrupt ({reason}); delete it, or run into a new dir") from None


def _refuse_changed_inputs(where: str, recorded: dict[str, str] | None, now: dict[str, str]) -> None:
    """A ConfigError naming the input files that differ from those the run in `where` read, if any."""
    changed = changed_inputs(recorded, now)
    if changed:
        raise ConfigError(f"{where} made from other input files: {'; '.join(changed)}; results of other inputs "
                          "are never merged: run into a new directory, or restore the files")


def finished_job(cfg: DictConfig) -> dict[str, Any] | None:
    """In a multirun, the stored result of this job if it already completed with the same config and inputs.

    Returns None when the job must run. A completed job with a *different* config in the same dir is
    refused: the sweep's parameters changed, and mixing results would be silent corruption. So is one
    whose input files (as its run_settings.json recorded them) changed since: its result would be stale.
    """
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    record = read_job_record(job_dir)
    if record is None or record.status != "COMPLETED":
        return None
    if not same_settings(record.fingerprint, record.fingerprint_version, cfg):
        raise ConfigError(
            f"{job_dir} holds a finished job with {_other_settings(record.fingerprint_version)} "
            f"({', '.join(record.overrides) or 'no overrides'}); rerun the sweep with the same parameters, "
            f"or into a new hydra.sweep.dir, or delete {job_dir / JOB_FILE} to run this job again"
        )
    claimed = read_run_settings(job_dir)
    if claimed is not None and claimed.inputs is not None:
        # The files as they are now, read where the job read them: a config that names other files has
        # another fingerprint already.
        _refuse_changed_inputs(f"{job_dir} holds a finished job", claimed.inputs, current_inputs(claimed.inputs))
    return record.result or {}


def claim_run_dir(cfg: DictConfig, out_dir: Path, inputs: dict[str, str] | None = None) -> None:
    """Refuse to resume into `out_dir` when it holds work made with other settings or from other input
    files; else record ours (the fingerprint, the overrides and `inputs`, the content hashes of the files
    this run reads: experiments.app.common.input_hashes).

    A resumable experiment (a negotiation picks up its checkpointed trials, a probe its finished parts)
    calls this before it reads anything back, in a single run as in a multirun. It is the check
    `finished_job` makes for a finished sweep job, made at the start instead of at the end, so it also
    covers a run that was killed (it has no job.json yet) and a single run rerun with `hydra.run.dir`
    (which `finished_job` leaves alone). A refusal names the overrides that differ and the files that
    changed (one edited in place changes no override). Outside a Hydra run (a test calling the task with
    a composed config) there is no command line to compare, and nothing is checked.
    """
    if not HydraConfig.initialized():
        return
    fingerprint = job_fingerprint(cfg)
    overrides = list(HydraConfig.get().overrides.task)
    stored = read_run_settings(out_dir)
    changed = changed_inputs(stored.inputs, inputs) if stored is not None and inputs is not None else []
    earlier: list[tuple[str, int, list[str]]] = []
    if stored is not None:
        earlier.append((stored.fingerprint, stored.fingerprint_version, stored.overrides))
    record = read_job_record(out_dir)  # a run that ended before run settings were recorded
    if record is not None:
        earlier.append((record.fingerprint, record.fingerprint_version, record.overrides))
    for stored_fingerprint, version, stored_overrides in earlier:
        if not same_settings(stored_fingerprint, version, cfg):
            # Named with the overrides that differ, and the files, when a config file was edited in place.
            files = f" and from other input files: {'; '.join(changed)}" if changed else ""
            raise ConfigError(
                f"{out_dir} holds a run with {_other_settings(version)} ({', '.join(stored_overrides) or 'no overrides'}; "
                f"now {', '.join(overrides) or 'no overrides'}){files}; resume it with the same settings, "
                "or run into a new directory"
            )
    if stored is not None and inputs is not None:
        _refuse_changed_inputs(f"{out_dir} holds a run", stored.inputs, inputs)
    # Recorded on the first run, and again where the record lacks what this version records (a version-2
    # fingerprint, the inputs), so the next resume is checked in full.
    if stored is None or stored.fingerprint_version < FINGERPRINT_VERSION or (stored.inputs is None and inputs is not None):
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / RUN_SETTINGS_FILE, {
            "fingerprint": fingerprint, "fingerprint_version": FINGERPRINT_VERSION,
            "overrides": stored.overrides if stored is not None else overrides,
            "inputs": inputs, "written_at": _now()})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any) -> dict[str, Any] | None:
    """A job's return value as stored in job.json: dicts that survive JSON, otherwise nothing.

    A result that is left out is said in the log: a rerun that skips this job returns {} for it.
    Values JSON has no type for (a path, a timestamp) are stored as their text.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        # A table (the probe's) is expected here: it is in the job dir already, so this is only a debug line
        # (at info level it printed on every single run of experiments that return one).
        log.debug("the job's result (a %s) is not a dict; job.json records no result for it, the job dir holds "
                  "its outputs", type(value).__name__)
        return None
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError) as err:
        log.warning("the job's result cannot be stored as JSON (%s); job.json records no result for it", err)
        return None


class LockSettings(BaseModel):
    """The root config's `wait_for_lock` (conf/config.yaml)."""

    model_config = ConfigDict(extra="forbid")

    wait_for_lock: bool = Field(description="a run whose dir another process holds waits for it (true) or "
                                            "stops with one error line (false)")


class LockOwner(BaseModel):
    """A lock's sidecar file: who holds it, so that a second process can name them.

    The sidecar is a file in a dir someone else may have written (a run dir received from another person):
    a pid outside what any system uses, or a host no host name can be, makes it a sidecar that names nobody.
    """

    model_config = ConfigDict(extra="ignore", strict=True)

    pid: int = Field(gt=0, le=2**31 - 1)  # os.kill overflows past a C int, and 0 or -1 mean groups of processes
    host: str = Field(min_length=1, max_length=255)
    since: str | None = Field(default=None, max_length=64)


#: The most of a sidecar that is read: the file emolab writes is a few dozen bytes.
_OWNER_FILE_LIMIT = 4096

#: The locks this process holds: their open file descriptors (flock is held on them), by their lock file's
#: path in its resolved dir. Module state, not the callback's: launchers pickle the callback to send it to
#: their workers, and a held lock is not picklable.
_HELD: dict[str, int] = {}

#: An owner file that exists but names nobody (unreadable, not JSON, not what emolab writes).
_UNNAMED = "unnamed"


def _owner_file(lock_file: Path) -> Path:
    return lock_file.with_name(LOCK_OWNER_FILE if lock_file.name == LOCK_FILE else f"{lock_file.name}.json")


def _lock_key(lock_file: Path) -> str:
    # The dir resolved, not the file: a lock file that is a link must not be followed, even to name it.
    return str(Path(lock_file).parent.resolve() / Path(lock_file).name)


def _lock_owner(owner_file: Path) -> LockOwner | None | Literal["unnamed"]:
    """The holder its sidecar names; None when there is no sidecar yet (or any more), or it names a process
    of this host that is gone (a holder killed before it could remove it, whose lock the kernel let go);
    `_UNNAMED` when the sidecar names nobody (a link, not a file, too long, not what emolab writes)."""
    try:
        fd = os.open(owner_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:  # a link (ELOOP), a dir, another user's unreadable file
        return _UNNAMED
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return _UNNAMED
        data = os.read(fd, _OWNER_FILE_LIMIT + 1)
    except OSError:
        return _UNNAMED
    finally:
        os.close(fd)
    if len(data) > _OWNER_FILE_LIMIT:
        return _UNNAMED
    try:
        owner = LockOwner.model_validate_json(data)
    except ValidationError:
        return _UNNAMED
    if owner.host == platform.node():
        try:
            os.kill(owner.pid, 0)
        except ProcessLookupError:
            return None
        except OSError:  # PermissionError: alive, another user's
            pass
    return owner


def _holder(owner: LockOwner | Literal["unnamed"] | None, owner_file: Path) -> str:
    """How an error names the lock's holder. Every text from the sidecar is escaped: a host name with
    terminal controls in it would act on the terminal that shows the error."""
    if isinstance(owner, LockOwner):
        return f"pid {owner.pid} on {printable(owner.host)}"
    return f"an unknown process ({owner_file} does not name it)"


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device or special file"


def _refuse_unless_regular(path: Path, what: Path | str) -> None:
    """A ConfigError when `path` exists and is not a regular file: a lock taken on a link would lock (or let
    emolab write) another file, and a dir or a pipe can hold no lock at all."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise ConfigError(f"cannot lock {what}: {path} is a {_kind(mode)}, not a regular file; remove it")


def _lock_error(err: OSError, lock_file: Path, what: Path | str) -> ConfigError:
    """A failure to take a lock as a user error: a read-only dir or a full disk as emolab says them
    anywhere (emotion_probe.files.output_error), anything else with its errno's words."""
    from emotion_probe.files import output_error

    problem = output_error(err, lock_file)
    if problem is not None:
        return problem
    if err.errno is None:
        reason = str(err)
    else:
        reason = f"{os.strerror(err.errno)} ({errno.errorcode.get(err.errno, err.errno)})"
    return ConfigError(f"cannot lock {what}: {err.filename or lock_file}: {reason}")


def _open_lock_file(lock_file: Path, what: Path | str) -> int:
    """The lock file opened (made if missing), never through a link and only when it is a regular file.

    Checked before it is opened (a device file may act on being opened) and again on what was opened (the
    path may have changed in between). Nothing is ever written to it: flock needs only the descriptor.
    """
    _refuse_unless_regular(lock_file, what)
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise _lock_error(err, lock_file, what) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"cannot lock {what}: {lock_file} is a {_kind(mode)}, not a regular file; remove it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def hold_lock(lock_file: Path, what: Path | str, *, wait: bool) -> bool:
    """Take the exclusive lock `lock_file` for `what` (a run dir, an output file) and name this process in its
    sidecar. When another process holds it: a ConfigError `<what> is in use by pid N on <host>`, or with
    `wait`, one line on stderr and a wait until it is free. False when this process holds it already.

    The lock is flock(2), so the kernel lets go of it when its holder dies, `kill -9` included: a stale lock
    file never blocks a rerun. Any failure to take it (a lock file that is a dir or a link, a sidecar that is
    a link, a read-only dir) is a ConfigError too: a run must never go on without its lock.
    """
    lock_file = Path(lock_file)
    key = _lock_key(lock_file)
    if key in _HELD:
        return False
    owner_file = _owner_file(lock_file)
    fd = _open_lock_file(lock_file, what)
    try:
        # The holder writes its sidecar just after it takes the lock, and removes it just before it lets go:
        # a sidecar missing while the lock is held lasts moments, so it is read again for a while.
        named_by = time.monotonic() + 3.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            except OSError as err:  # a file system without locks (ENOLCK)
                raise _lock_error(err, lock_file, what) from None
            owner = _lock_owner(owner_file)
            if owner is None and time.monotonic() < named_by:
                time.sleep(0.05)
                continue
            if not wait:
                raise ConfigError(f"{what} is in use by {_holder(owner, owner_file)}")
            print(printable(f"waiting for {what}: in use by {_holder(owner, owner_file)} (wait_for_lock=true)"),
                  file=sys.stderr, flush=True)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as err:
                raise _lock_error(err, lock_file, what) from None
            break
        # Replaced by a rename, which never writes through a link; refused all the same when it is one (or
        # a dir), as that is no sidecar emolab left.
        _refuse_unless_regular(owner_file, what)
        try:
            # A plain dict, not a LockOwner: this host's name is written as it is, even one a reader refuses.
            write_json_atomic(owner_file, {"pid": os.getpid(), "host": platform.node(), "since": _now()})
        except OSError as err:
            raise _lock_error(err, owner_file, what) from None
    except BaseException:
        os.close(fd)  # lets go of the lock, if it was taken
        raise
    if not _HELD:
        # A run that ends by sys.exit (a user error, a person who stops play) skips Hydra's end callbacks:
        # its locks are let go, and their sidecars removed, as the process exits.
        atexit.register(_release_all)
    _HELD[key] = fd
    return True


def release_lock(lock_file: Path) -> None:
    """Let go of a lock `hold_lock` took (its sidecar first, so nobody reads a released holder's name)."""
    fd = _HELD.pop(_lock_key(Path(lock_file)), None)
    if fd is None:
        return
    try:
        _owner_file(Path(lock_file)).unlink(missing_ok=True)  # a link is removed, never what it points to
    except OSError:  # replaced by a dir meanwhile: the lock goes all the same
        pass
    finally:
        os.close(fd)
    if not _HELD:
        atexit.unregister(_release_all)


def _release_all() -> None:
    for key in list(_HELD):
        release_lock(Path(key))


@contextmanager
def only_writer_of(path: Path, *, wait: bool) -> Iterator[None]:
    """Hold the lock of a file a run writes outside its run dir (generate_scenarios' output) while the block
    runs: `.<name>.lock` beside it, with hold_lock's refusal (or wait) when another process holds it."""
    lock_file = path.parent / f".{path.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    taken = hold_lock(lock_file, path, wait=wait)
    try:
        yield
    finally:
        if taken:
            release_lock(lock_file)


def _hold_run_dir(config: DictConfig, run_dir: Path) -> str | None:
    """Lock `run_dir` for this run (see hold_lock); the lock file to release, or None if held already.

    A refusal, or any failure to take the lock, ends the process here, as the app ends one for bad input
    (one `error:` line, exit 2): Hydra turns an exception raised in a callback into a warning and runs the
    job anyway, which would be a run without its lock.
    """
    try:
        wait = validated(LockSettings, {"wait_for_lock": config.get("wait_for_lock", False)}, "").wait_for_lock
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _lock_error(err, run_dir, run_dir) from None
        lock_file = run_dir / LOCK_FILE
        return str(lock_file) if hold_lock(lock_file, run_dir, wait=wait) else None
    except ConfigError as err:
        from rich.console import Console
        from rich.text import Text

        from emotion_probe.redaction import redact

        # As experiments.app.main reports a user error: one unwrapped line, no markup parsing, masked and escaped.
        Console(stderr=True, soft_wrap=True).print(Text.assemble(("error: ", "bold red"), printable(redact(str(err)))))
        sys.exit(USER_ERROR)
    except Exception:  # a bug: its traceback, and still no run without the lock
        log.exception("cannot lock %s", printable(run_dir))
        sys.exit(1)


def _written_dir(config: DictConfig) -> Path | None:
    """The dir the job writes (`paths.output_dir`, read by experiments.app.common.output_dir); None when the
    config has none, or it does not resolve (the task then stops on it with its own error)."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        value = OmegaConf.select(config, "paths.output_dir", throw_on_missing=False)
    except OmegaConfBaseException:
        return None
    return Path(os.path.abspath(str(value))) if value is not None else None


class SweepCallback(Callback):
    """Writes `job.json` per job and `manifest.json` per sweep (see the module docstring), and holds each
    run dir's lock: a single run's from its start to its end, each sweep job's for the job, and the sweep
    dir's for the sweep (so a second sweep into it stops at once); and, for the job, the lock of the dir it
    writes (`paths.output_dir`) where that is not its run dir."""

    def __init__(self) -> None:
        self._job_started: float | None = None
        self._job_started_at: str | None = None
        self._sweep_started_at: str | None = None
        # The lock files this callback took (plain paths: the callback is pickled to launcher workers).
        self._run_lock: str | None = None
        self._job_lock: str | None = None
        self._output_lock: str | None = None
        self._sweep_lock: str | None = None

    # ------------------------------------------------------------------ per run
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Before Hydra writes its .hydra/ files and log into the dir: a refused second run leaves them alone.
        # The run dir may name ${hydra:...} values, which resolve only once Hydra's config is set (run_job
        # sets the same config right after this).
        HydraConfig.instance().set_config(config)
        self._run_lock = _hold_run_dir(config, Path(os.path.abspath(str(config.hydra.run.dir))))

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._run_lock is not None:
            release_lock(Path(self._run_lock))
            self._run_lock = None

    # ------------------------------------------------------------------ per job
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._job_started = time.perf_counter()
        self._job_started_at = _now()
        # A sweep job's dir (a single run's is held since on_run_start, which this finds).
        self._job_lock = _hold_run_dir(config, Path(config.hydra.runtime.output_dir))
        # The job writes where `paths.output_dir` says, which a user may point away from its run dir: two
        # runs with their own run dirs and one output dir would write the same files. Taken before the task
        # runs, so a refused run writes nothing there; None when it is the run dir, held already.
        written = _written_dir(config)
        if written is not None:
            self._output_lock = _hold_run_dir(config, written)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        try:
            self._record_job(config, job_return)
        finally:
            for attribute in ("_output_lock", "_job_lock"):
                held = getattr(self, attribute)
                if held is not None:
                    release_lock(Path(held))
                    setattr(self, attribute, None)

    def _record_job(self, config: DictConfig, job_return: JobReturn) -> None:
        hydra = HydraConfig.get()
        job_dir = Path(hydra.runtime.output_dir)
        fingerprint = job_fingerprint(config)
        previous = _safe_read(job_dir)
        failed = job_return.status != JobStatus.COMPLETED
        if not failed and previous is not None and previous.status == "COMPLETED" \
                and same_settings(previous.fingerprint, previous.fingerprint_version, config):
            # A rerun that skipped this finished job: keep the original record, note the visit, and record
            # its fingerprint as this version makes it, so configs the job never reads no longer matter.
            write_json_atomic(job_dir / JOB_FILE, {**previous.model_dump(), "fingerprint": fingerprint,
                                                   "fingerprint_version": FINGERPRINT_VERSION,
                                                   "skipped_reruns": previous.skipped_reruns + 1})
            return
        record = JobRecord(
            status="FAILED" if failed else "COMPLETED",
            num=OmegaConf.select(hydra.job, "num", throw_on_missing=False),
            overrides=list(hydra.overrides.task),
            fingerprint=fingerprint,
            fingerprint_version=FINGERPRINT_VERSION,
            output_dir=str(job_dir),
            started_at=self._job_started_at,
            finished_at=_now(),
            wall_time_s=round(time.perf_counter() - self._job_started, 3) if self._job_started else None,
            host=platform.node(),
            pid=os.getpid(),
            error=f"{type(job_return._return_value).__name__}: {job_return._return_value}" if failed else None,
            result=None if failed else _jsonable(job_return._return_value),
        )
        job_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(job_dir / JOB_FILE, record.model_dump())

    # ---------------------------------------------------------------- per sweep
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._sweep_started_at = _now()
        self._sweep_lock = _hold_run_dir(config, Path(os.path.abspath(str(config.hydra.sweep.dir))))
        self._write_sweep_manifest(config, finished=False)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._write_sweep_manifest(config, finished=True)
        finally:
            if self._sweep_lock is not None:
                release_lock(Path(self._sweep_lock))
                self._sweep_lock = None

    def _write_sweep_manifest(self, config: DictConfig, *, finished: bool) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        jobs = []
        for path in sorted(sweep_dir.rglob(JOB_FILE)):
            record = _safe_read(path.parent)
            if record is not None and record.num is not None:  # run-mode dirs inside (a report) are no sweep jobs
                jobs.append({"dir": str(path.parent.relative_to(sweep_dir)), **record.model_dump(exclude={"output_dir"})})
        jobs.sort(key=lambda job: (job["num"] is None, job["num"], job["dir"]))
        swept = swept_parameters([job["overrides"] for job in jobs])
        for job in jobs:
            values = dict(override.split("=", 1) for override in job["overrides"] if "=" in override)
            job["params"] = {key: values.get(key) for key in swept}
        from importlib.metadata import version

        manifest = {
            "status": "finished" if finished else "running",
            "started_at": self._sweep_started_at,
            "written_at": _now(),
            "emolab": version("emolab"),
            "git": git_commit(),
            "experiment": config.hydra.runtime.choices.get("experiment"),
            "launcher": config.hydra.runtime.choices.get("hydra/launcher"),
            "sweeper": config.hydra.runtime.choices.get("hydra/sweeper"),
            "command_overrides": list(config.hydra.overrides.task),
            "swept": swept,
            "jobs_completed": sum(job["status"] == "COMPLETED" for job in jobs),
            "jobs_failed": sum(job["status"] == "FAILED" for job in jobs),
            "jobs": jobs,
        }
        write_json_atomic(sweep_dir / SWEEP_MANIFEST, manifest)


def swept_parameters(overrides_per_job: list[list[str]]) -> dict[str, list[str]]:
    """The override keys whose value differs between jobs, with their values in first-seen order."""
    values: dict[str, list[str | None]] = {}
    parsed = [dict(o.split("=", 1) for o in overrides if "=" in o) for overrides in overrides_per_job]
    for key in dict.fromkeys(key for job in parsed for key in job):
        seen = list(dict.fromkeys(job.get(key) for job in parsed))
        if len(seen) > 1:
            values[key] = seen
    return values


#: The corrupt job records this process warned about: the sweep manifest reads every record at the start
#: of a sweep and again at its end, and one bad file is one warning.
_WARNED: set[str] = set()


def _safe_read(job_dir: Path) -> JobRecord | None:
    """Like read_job_record, but a corrupt record only warns (once): callbacks must not fail a finished job."""
    try:
        return read_job_record(job_dir)
    except ConfigError as err:
        message = printable(err)
        if message not in _WARNED:
            _WARNED.add(message)
            log.warning("%s", message)
        return None
