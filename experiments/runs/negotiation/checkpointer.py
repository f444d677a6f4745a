"""Where a negotiation's LangGraph checkpoints live (conf/checkpointer), and what may be read back from them.

A checkpoint is a file (SQLite in the run dir) or a table (a shared PostgreSQL database) that others
can write. LangGraph's serializer rebuilds any `(module, name, args)` it finds by calling it, so a
crafted row could run a command on resume. Every checkpointer here deserializes only LangGraph's own
safe types (its strict msgpack mode), and a row holding anything else stops the run with one line
instead of being half-read: emolab's graph state is plain data, so such a row was not written by emolab.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from langgraph.checkpoint.serde.event_hooks import register_serde_event_listener
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from emotion_probe.errors import ConfigError


class StrictSerializer(JsonPlusSerializer):
    """LangGraph's serializer limited to its built-in safe types; a blocked type is an error, not raw data."""

    def __init__(self, source: str) -> None:
        super().__init__(allowed_msgpack_modules=None, allowed_json_modules=None, pickle_fallback=False)
        self.source = source
        self._blocked = threading.local()

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        kind = data[0]
        if kind not in ("msgpack", "json", "null", "bytes", "bytearray"):
            # "pickle" rows run code by design; emolab never writes them.
            raise ConfigError(f"{self.source} holds a checkpoint of type {kind!r}, which emolab never writes; it was not "
                              "read. Delete it to start the run afresh, or run into a new directory")
        blocked: list[str] = []

        def listen(event: dict) -> None:
            if event.get("kind", "").endswith("blocked"):
                blocked.append(f"{event.get('module')}.{event.get('name')}")

        unregister = register_serde_event_listener(listen)
        try:
            value = super().loads_typed(data)
        finally:
            unregister()
        if blocked:
            raise ConfigError(f"{self.source} holds a checkpoint that would call {blocked[0]}, which emolab never "
                              "writes; nothing was run. Delete it to start the run afresh, or run into a new directory")
        return value


class CheckpointerSettings(BaseModel):
    """conf/checkpointer/*.yaml."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sqlite", "postgres"] = Field(description="which checkpointer to build")
    # Each kind sets only its own key, so the other kind's key is legitimately absent from its file.
    filename: str | None = Field(default=None, min_length=1,
                                 description="kind=sqlite: the SQLite file inside the job's run dir")
    url_env: str | None = Field(default=None, description="kind=postgres: the environment variable holding the "
                                                          "connection string")

    @model_validator(mode="after")
    def _kind_has_its_key(self) -> "CheckpointerSettings":
        needed = "filename" if self.kind == "sqlite" else "url_env"
        if getattr(self, needed) is None:
            raise ValueError(f"{needed}: kind={self.kind} needs it")
        return self


#: Key of the advisory lock that serializes checkpoint-table setup across jobs ("emolab" in ASCII).
POSTGRES_SETUP_LOCK = 0x656D6F6C6162


@contextmanager
def open_checkpointer(settings: CheckpointerSettings, out_dir: Path) -> Iterator[Any]:
    """The LangGraph checkpointer the `checkpointer` config group names (one SQLite file per job, or Postgres)."""
    if settings.kind == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        path = out_dir / settings.filename
        # As SqliteSaver.from_conn_string opens it, with the strict serializer that it cannot be given.
        connection = sqlite3.connect(str(path), check_same_thread=False)
        try:
            saver = SqliteSaver(connection, serde=StrictSerializer(str(path)))
            try:
                saver.setup()  # the first read: a file that is no SQLite database fails here, not mid-run
            except sqlite3.DatabaseError as err:
                raise ConfigError(f"{path} is not a readable checkpoint database ({err}); delete it to start the "
                                  "run afresh, or run into a new directory") from None
            yield saver
        finally:
            connection.close()
        return
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
    except ImportError:
        raise ConfigError('checkpointer=postgres needs the postgres extra: pip install "emolab[postgres]"') from None
    url = os.environ.get(settings.url_env or "")
    if not url:
        raise ConfigError(f"checkpointer.url_env: environment variable {settings.url_env} is not set "
                          "(it must hold the PostgreSQL connection string)")
    from psycopg import Connection
    from psycopg.rows import dict_row

    # As PostgresSaver.from_conn_string connects, with the strict serializer that it cannot be given.
    with Connection.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row) as connection:
        saver = PostgresSaver(connection, serde=StrictSerializer(f"the PostgreSQL checkpointer (${settings.url_env})"))
        # setup() creates the tables on first use. Jobs that start together on a fresh database would
        # all run its migrations and collide on their bookkeeping table, so a session advisory lock
        # lets one job run them while the others wait (and then find nothing left to do). The others
        # poll rather than block: a blocked statement is an open transaction, and the migrations'
        # CREATE INDEX CONCURRENTLY waits for every open transaction, which would deadlock.
        with saver.conn.cursor() as cursor:
            while not cursor.execute("SELECT pg_try_advisory_lock(%s) AS ok", (POSTGRES_SETUP_LOCK,)).fetchone()["ok"]:
                time.sleep(0.2)
            try:
                saver.setup()
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (POSTGRES_SETUP_LOCK,))
        yield saver


