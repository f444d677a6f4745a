"""Wall time per graph node, for run manifests.

Nodes are wrapped when a graph is compiled, and each wrapper adds its elapsed time to the
`NodeTimings` found in the graph's context (per-run state goes through the context, never a
global). A node that a human-in-the-loop interrupt stops is not counted: it runs again on resume.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from langgraph.runtime import Runtime


class NodeTimings:
    """Thread-safe totals of seconds and calls per node name (concurrent trials share one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = {}
        self._calls: dict[str, int] = {}

    def add(self, node: str, seconds: float) -> None:
        with self._lock:
            self._seconds[node] = self._seconds.get(node, 0.0) + seconds
            self._calls[node] = self._calls.get(node, 0) + 1

    def summary(self) -> dict[str, dict[str, float]]:
        """{node: {calls, total_s, mean_s}}, slowest first."""
        with self._lock:
            rows = {
                node: {"calls": self._calls[node], "total_s": round(total, 4), "mean_s": round(total / self._calls[node], 4)}
                for node, total in self._seconds.items()
            }
        return dict(sorted(rows.items(), key=lambda item: -item[1]["total_s"]))


def timed(name: str, node: Callable[[Any, Runtime], dict]) -> Callable[[Any, Runtime], dict]:
    """Wrap a `(state, runtime)` node so its wall time lands in `runtime.context.timings`, if the context has one."""

    def run(state: Any, runtime: Runtime) -> dict:
        started = time.perf_counter()
        update = node(state, runtime)
        timings = getattr(runtime.context, "timings", None)
        if timings is not None:
            timings.add(name, time.perf_counter() - started)
        return update

    run.__name__ = name
    run.__doc__ = node.__doc__
    return run
