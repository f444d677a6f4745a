"""Writing a run's files: whole or not at all, and a failed write said in one line.

A file that a run replaces (a table, a figure, a summary) is written under a temporary name beside it
and renamed over it: a reader, a kill or a full disk mid-write leaves the old file or the new one, never
half of either. A write that the disk or the permissions refuse ends the run with a ConfigError that
names the file and says what happened; what the run wrote before stays on disk.
"""

from __future__ import annotations

import errno
import re
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from emotion_probe.errors import ConfigError, EmolabError

#: What a write into an output dir can meet that is no bug: the dir is not writable, or the disk is full.
OUTPUT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
#: SQLite's messages for the same causes (its errors carry no errno).
_SQLITE_OUTPUT_FAILURES = ("database or disk is full", "readonly database", "unable to open database file",
                           "disk i/o error")


def output_error(err: BaseException, path: Path | str | None = None) -> ConfigError | None:
    """The one-line error for a write refused by the disk or the permissions (EACCES, EROFS, ENOSPC, ...),
    found in `err` or what caused it; None when `err` is something else (a bug keeps its traceback).
    `path`, when given, is the file the message names, else the error's own file name."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen and not isinstance(cause, EmolabError):
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in OUTPUT_ERRNOS:
            where = path or cause.filename or "a file of the run"
            # The errno's own words: a library's message may name the temporary file instead (pyarrow does).
            return ConfigError(f"cannot write {where}: {os.strerror(cause.errno)} ({errno.errorcode[cause.errno]}); "
                               "what the run wrote before is kept")
        if isinstance(cause, sqlite3.OperationalError) and any(
                text in str(cause).lower() for text in _SQLITE_OUTPUT_FAILURES):
            return ConfigError(f"cannot write {path or 'a SQLite file of the run'}: {cause}; what the run wrote "
                               "before is kept")
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return None


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, so writers that go by it still can) to write the new
    file to; when the block ends without error it replaces `path` in one rename, else it is removed.

    A write refused by the disk or the permissions raises a ConfigError naming `path` (output_error).
    """
    path = Path(path)
    staging = path.with_name(f".{path.stem}.{os.getpid()}-{os.urandom(4).hex()}.tmp{path.suffix}")
    try:
        yield staging
        with staging.open("rb+") as handle:  # on disk before it takes the name, so a crash cannot leave it empty
            os.fsync(handle.fileno())
        os.replace(staging, path)
    except BaseException as err:
        try:
            staging.unlink(missing_ok=True)
        except OSError:  # a dir that refused the file may refuse this too; nothing was left there then
            pass
        problem = output_error(err, path) if isinstance(err, Exception) else None
        if problem is not None:
            raise problem from None
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` through `replacing`."""
    with replacing(path) as staging:
        staging.write_text(text, encoding="utf-8")


def save_figure(figure, path: Path, **options) -> None:
    """A matplotlib figure's `savefig` to `path` through `replacing` (the format follows the suffix, as there)."""
    with replacing(path) as staging:
        figure.savefig(staging, **options)


def write_frame(frame, path: Path, **options) -> None:
    """A pandas table to `path` through `replacing`: Parquet for a .parquet path, else CSV (`options` go to
    to_parquet or to_csv)."""
    with replacing(path) as staging:
        if Path(path).suffix == ".parquet":
            frame.to_parquet(staging, **options)
        else:
            frame.to_csv(staging, **options)


@contextmanager
def output_errors(path: Path | str | None = None) -> Iterator[None]:
    """Inside the block, a write refused by the disk or the permissions raises the ConfigError of
    `output_error` (naming `path`, when given, as the file); any other error passes as it is."""
    try:
        yield
    except Exception as err:
        problem = output_error(err, path)
        if problem is None:
            raise
        raise problem from None


def file_part(name: object) -> str:
    """`name` (a persona, a wheel word: text from a received file) as one safe part of a file name.

    Anything but letters, digits, '_', '-' and '.' becomes '_', and a leading dot is dropped, so a name
    like "../../x" or "a/b" can neither leave the run dir nor hide the file.
    """
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "_", str(name)).lstrip(".")
    return cleaned or "_"
