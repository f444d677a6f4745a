"""One writer per run dir: an exclusive lock on `<dir>/.emolab.lock`, held from the start of a run (or a
sweep job, or a sweep in its sweep dir) to its end.

A second process on the same dir stops with `error: <dir> is in use by pid N on <host>` (or waits, with
`wait_for_lock`). A lock that cannot be taken (a lock file that is a dir or a link, a read-only dir) stops
the run too: a run never goes on without its lock.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import logging
import os
import platform
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from omegaconf import DictConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emotion_probe.errors import ConfigError
from emotion_probe.terminal import printable
from experiments.app.common import validated, write_json_atomic
from experiments.app.run_records import utc_now
from experiments.app.user_error import USER_ERROR, report_error

log = logging.getLogger(__name__)

#: The run dir's lock (held with flock for the whole run), and the sidecar that names its holder.
LOCK_FILE = ".emolab.lock"
LOCK_OWNER_FILE = ".emolab.lock.json"


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
            write_json_atomic(owner_file, {"pid": os.getpid(), "host": platform.node(), "since": utc_now()})
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


def hold_run_dir(config: DictConfig, run_dir: Path) -> str | None:
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
        report_error(str(err))
        sys.exit(USER_ERROR)
    except Exception:  # a bug: its traceback, and still no run without the lock
        log.exception("cannot lock %s", printable(run_dir))
        sys.exit(1)
