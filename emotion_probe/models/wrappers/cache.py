"""An on-disk response cache around any backend, so a rerun of a finished sweep makes no model calls.

One SQLite file holds every answer, keyed by the sha256 of the canonical JSON of the backend's
identity (its resolved model config, so a scripted backend's script or a model path is part of the
key), the verb, and the full request. Several sweep jobs in parallel processes may share the file:
it runs in WAL mode with a busy timeout, and every write is one short transaction. WAL needs all
writers on one host, so jobs on different cluster nodes should each get their own file (a shared
network disk does not give SQLite the locking it relies on).

score() and top_tokens() are cached per prompt: only the prompts not yet in the cache go to the
model, together in one call, so growing a scenario set scores only the new scenarios.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from emotion_probe.models.base import (
    ChatMessage,
    GenerateConfig,
    Generation,
    ModelBackend,
    RankedToken,
    ScoreResult,
    TokenCallback,
    as_messages,
)
from emotion_probe.models.wrappers.core import BackendWrapper
from emotion_probe.errors import ConfigError, EmolabError

GenerateCaching = Literal["deterministic", "always", "never"]

#: Written into every cache file and into every key: a change of layout starts afresh instead of misreading old rows.
CACHE_FORMAT = "emolab-response-cache/1"
_META_TABLE = "emolab_cache_meta"
#: How long a writer waits for another process's transaction before giving up.
_BUSY_TIMEOUT_S = 60.0
#: Keys per SELECT; old SQLite builds allow at most 999 bound parameters per statement.
_LOOKUP_CHUNK = 500


class ResponseCacheError(EmolabError):
    """The response cache file cannot be used (corrupt, or some other program's database)."""


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, so equal requests hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class CachingBackend(BackendWrapper):
    """Answers repeated requests from an SQLite file; sends only what is new to `inner`.

    `generate`: "deterministic" caches a generate() call only when its reply is reproducible
    (temperature 0, or a fixed seed); "always" and "never" do what they say. On a cache hit with
    `on_token` set, the cached text is replayed to it, so live views still show the reply.
    Thread-safe: concurrent trials share one instance.
    """

    def __init__(
        self,
        inner: ModelBackend,
        path: str | os.PathLike[str],
        identity: dict[str, Any],
        generate: GenerateCaching = "deterministic",
    ):
        super().__init__(inner)
        if generate not in get_args(GenerateCaching):
            raise ConfigError(f"cache.generate: expected one of {', '.join(get_args(GenerateCaching))}, got {generate!r}")
        if not isinstance(identity, dict):
            raise ConfigError(f"cache identity must be a dict (the backend's resolved model config), got {type(identity).__name__}")
        try:
            canonical_json(identity)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"cache identity (the model config) is not plain JSON data: {err}") from None
        self.path = Path(path).expanduser()
        self.generate_caching: GenerateCaching = generate
        self._identity = identity
        self._lock = threading.Lock()
        #: Counts per outcome: "hits" (answered from the file), "misses" (sent to the model, then stored),
        #: "uncached" (generate() calls the setting leaves out of the cache).
        self.stats: Counter[str] = Counter()
        self._pid = os.getpid()
        self._db = self._open()

    # ------------------------------------------------------------------ storage
    def _fail(self, err: sqlite3.Error) -> ResponseCacheError:
        if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
            return ResponseCacheError(
                f"response cache {self.path} stayed locked by another process for {_BUSY_TIMEOUT_S:g} s ({err})"
            )
        return ResponseCacheError(
            f"response cache {self.path} is unreadable or not an emolab response cache ({err}); "
            "delete it, or point cache.path (or EMOLAB_RESPONSE_CACHE) at another file"
        )

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + _BUSY_TIMEOUT_S
        while True:
            # isolation_level=None: autocommit, with transactions opened explicitly where several rows go in together.
            db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            try:
                self._prepare(db)
                return db
            except ResponseCacheError:
                db.close()
                raise
            except sqlite3.OperationalError as err:
                db.close()
                # Switching a new file to WAL needs an exclusive lock that SQLite's busy handler does not
                # wait for, so jobs that open one fresh cache file at the same moment get "database is
                # locked" at once. Wait and try again, as the busy timeout would for any other statement.
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise self._fail(err) from None
                time.sleep(0.05)
            except sqlite3.Error as err:
                db.close()
                raise self._fail(err) from None

    def _prepare(self, db: sqlite3.Connection) -> None:
        """Check the file is ours, switch it to WAL, create the tables once, and check their format."""
        db.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and _META_TABLE not in tables:
            raise ResponseCacheError(
                f"response cache {self.path} is another program's SQLite database (tables: {', '.join(sorted(tables))}); "
                "point cache.path (or EMOLAB_RESPONSE_CACHE) at a file of its own"
            )
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN IMMEDIATE")
        db.execute(f"CREATE TABLE IF NOT EXISTS {_META_TABLE} (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS responses "
                   "(key TEXT PRIMARY KEY, verb TEXT NOT NULL, value TEXT NOT NULL, created_at REAL NOT NULL)")
        db.execute(f"INSERT OR IGNORE INTO {_META_TABLE} VALUES ('format', ?)", (CACHE_FORMAT,))
        db.execute("COMMIT")
        (stored_format,) = db.execute(f"SELECT value FROM {_META_TABLE} WHERE name = 'format'").fetchone()
        if stored_format != CACHE_FORMAT:
            raise ResponseCacheError(
                f"response cache {self.path} has format {stored_format!r}, this emolab writes {CACHE_FORMAT!r}; "
                "delete it or point cache.path elsewhere"
            )

    def _connection(self) -> sqlite3.Connection:
        # An SQLite connection must not cross a fork: a forked worker opens its own.
        if os.getpid() != self._pid:
            self._pid, self._db = os.getpid(), self._open()
        return self._db

    def _lookup(self, keys: Sequence[str]) -> dict[str, Any]:
        unique = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        with self._lock:
            try:
                db = self._connection()
                for start in range(0, len(unique), _LOOKUP_CHUNK):
                    chunk = unique[start : start + _LOOKUP_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    for key, value in db.execute(f"SELECT key, value FROM responses WHERE key IN ({marks})", chunk):
                        found[key] = json.loads(value)
            except sqlite3.Error as err:
                raise self._fail(err) from None
        return found

    def _store(self, verb: str, rows: dict[str, Any]) -> None:
        if not rows:
            return
        now = time.time()
        # allow_nan: score rows hold -inf for continuations an inexact method could not see.
        values = [(key, verb, json.dumps(value, allow_nan=True), now) for key, value in rows.items()]
        with self._lock:
            try:
                db = self._connection()
                db.execute("BEGIN IMMEDIATE")
                try:
                    # First writer wins: a job that computed the same answer in parallel keeps what is there.
                    db.executemany("INSERT OR IGNORE INTO responses VALUES (?, ?, ?, ?)", values)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                raise self._fail(err) from None

    def _key(self, verb: str, request: dict[str, Any]) -> str:
        payload = {"format": CACHE_FORMAT, "identity": self._identity, "verb": verb, "request": request}
        return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()

    def _count(self, **outcomes: int) -> None:
        with self._lock:
            self.stats.update(outcomes)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --------------------------------------------------------------- generation
    def _caches(self, config: GenerateConfig) -> bool:
        if self.generate_caching == "deterministic":
            return config.temperature == 0 or config.seed is not None
        return self.generate_caching == "always"

    def _generation_key(self, messages: Sequence[ChatMessage], config: GenerateConfig) -> str:
        request = {"messages": [m.model_dump() for m in messages], "config": config.model_dump(mode="json")}
        return self._key("generate", request)

    def generate(
        self,
        messages: Sequence[ChatMessage | dict],
        config: GenerateConfig | None = None,
        on_token: TokenCallback | None = None,
    ) -> Generation:
        config = config or GenerateConfig()
        if not self._caches(config):
            self._count(uncached=1)
            return self.inner.generate(messages, config, on_token)
        key = self._generation_key(as_messages(messages), config)
        cached = self._lookup([key]).get(key)
        if cached is not None:
            self._count(hits=1)
            return _replayed(Generation.model_validate(cached), on_token)
        result = self.inner.generate(messages, config, on_token)
        self._store("generate", {key: result.model_dump(mode="json")})
        self._count(misses=1)
        return result

    def _generate_batch(
        self,
        conversations: Sequence[Sequence[ChatMessage | dict]],
        config: GenerateConfig | None = None,
        on_tokens: Sequence[TokenCallback | None] | None = None,
    ) -> list[Generation]:
        config = config or GenerateConfig()
        callbacks = list(on_tokens or [None] * len(conversations))
        if not self._caches(config):
            self._count(uncached=len(conversations))
            return self.inner.generate_batch(conversations, config, callbacks)
        keys = [self._generation_key(as_messages(c), config) for c in conversations]
        cached = self._lookup(keys)
        missing = [i for i, key in enumerate(keys) if key not in cached]
        fresh: dict[str, Any] = {}
        if missing:
            results = self.inner.generate_batch([conversations[i] for i in missing], config,
                                                [callbacks[i] for i in missing])
            fresh = {keys[i]: result.model_dump(mode="json") for i, result in zip(missing, results)}
            self._store("generate", fresh)
        replies = []
        for i, key in enumerate(keys):
            if key in cached:
                replies.append(_replayed(Generation.model_validate(cached[key]), callbacks[i]))
            else:
                replies.append(Generation.model_validate(fresh[key]))
        self._count(hits=len(keys) - len(missing), misses=len(missing))
        return replies

    # ------------------------------------------------------------------ scoring
    def score(self, prompts: Sequence[str], continuations: Sequence[str], *, word_boundary: bool = False) -> ScoreResult:
        prompts, continuations = list(prompts), list(continuations)
        if not prompts:
            return self.inner.score(prompts, continuations, word_boundary=word_boundary)
        keys = [self._key("score", {"prompt": p, "continuations": continuations, "word_boundary": word_boundary})
                for p in prompts]
        rows = self._lookup(keys)
        missing = _first_index_of_each_missing(keys, rows)
        if missing:
            result = self.inner.score([prompts[i] for i in missing], continuations, word_boundary=word_boundary)
            fresh = {keys[i]: {"logprobs": row.tolist(), "method": result.method, "exact": bool(result.exact)}
                     for i, row in zip(missing, np.asarray(result.logprobs))}
            self._store("score", fresh)
            rows.update(fresh)
        self._count(hits=len(keys) - len(missing), misses=len(missing))
        picked = [rows[key] for key in keys]
        # Rows cached by an earlier run may have come from another method (an echo fallback, say):
        # say so in `method` rather than hide it, and call the whole result exact only if every row is.
        methods = sorted({row["method"] for row in picked})
        return ScoreResult(
            logprobs=np.array([row["logprobs"] for row in picked], dtype=np.float64).reshape(len(prompts), len(continuations)),
            method="+".join(methods),
            exact=all(row["exact"] for row in picked),
        )

    def top_tokens(self, prompts: Sequence[str], k: int) -> list[dict[str, float]]:
        return self._per_prompt("top_tokens", prompts, k, self.inner.top_tokens,
                                lambda top: {token: float(value) for token, value in top.items()}, dict)

    def ranked_tokens(self, prompts: Sequence[str], k: int) -> list[list[RankedToken]]:
        return self._per_prompt("ranked_tokens", prompts, k, self.inner.ranked_tokens,
                                lambda ranked: [[token.id, token.text, float(token.logprob)] for token in ranked],
                                lambda rows: [RankedToken(*row) for row in rows])

    def _per_prompt(self, verb: str, prompts: Sequence[str], k: int, compute: Callable[[list[str], int], list],
                    to_json: Callable[[Any], Any], from_json: Callable[[Any], Any]) -> list:
        """A next-token ranking verb cached per prompt: only the prompts not yet in the cache reach `compute`."""
        prompts = list(prompts)
        keys = [self._key(verb, {"prompt": p, "k": k}) for p in prompts]
        rows = self._lookup(keys)
        missing = _first_index_of_each_missing(keys, rows)
        if missing:
            result = compute([prompts[i] for i in missing], k)
            fresh = {keys[i]: to_json(answer) for i, answer in zip(missing, result)}
            self._store(verb, fresh)
            rows.update(fresh)
        self._count(hits=len(keys) - len(missing), misses=len(missing))
        return [from_json(rows[key]) for key in keys]

    # --------------------------------------------------------------- reporting
    def usage(self) -> dict[str, Any]:
        with self._lock:
            return {"cache": {name: self.stats[name] for name in ("hits", "misses", "uncached")}}

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "response_cache": {"path": str(self.path), "generate": self.generate_caching}}


def _first_index_of_each_missing(keys: Sequence[str], found: dict[str, Any]) -> list[int]:
    """Indices of the requests to send: one per distinct key not in the cache."""
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key not in found and key not in first:
            first[key] = i
    return list(first.values())


def _replayed(generation: Generation, on_token: TokenCallback | None) -> Generation:
    if on_token is not None and generation.text:
        on_token(generation.text)
    return generation
