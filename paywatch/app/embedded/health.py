"""`GET /healthz` of the embedded process, and its heartbeat's checks: one verdict per part it can see.

A part is a name and a check, a callable answering `(ok, detail)`; anything running in the
process registers its own (`IngestServer.health[name] = check`). A check that raises or does
not answer within `CHECK_TIMEOUT_S` counts as stuck: a hung part must turn the health red,
never hang the health endpoint itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

# (ok, detail): a sentence, or a small mapping of figures (backlogs, stuck sinks)
HealthCheck = Callable[[], tuple[bool, Any]]
CHECK_TIMEOUT_S = 2.0


def judge(parts: Mapping[str, HealthCheck], executor: Executor) -> dict[str, dict[str, Any]]:
    """Each part's verdict, `{ok, detail}`: the checks run at once on `executor`, and one that raises
    or does not answer within `CHECK_TIMEOUT_S` is not ok. `/healthz` and the process's heartbeat
    both read this, so they cannot disagree."""
    futures = {name: executor.submit(check) for name, check in list(parts.items())}
    deadline = time.monotonic() + CHECK_TIMEOUT_S
    verdicts: dict[str, dict[str, Any]] = {}
    for name, future in futures.items():
        try:
            ok, detail = future.result(max(deadline - time.monotonic(), 0))
        except TimeoutError:
            future.cancel()  # still queued behind a hung check: not worth running any more
            ok, detail = False, f"no answer within {CHECK_TIMEOUT_S:g} s"
        except Exception as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        verdicts[name] = {"ok": ok, "detail": detail}
    return verdicts


def report(verdicts: Mapping[str, dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """200 and `status: ok` when every part is ok, else 503 and `status: unhealthy`; each part's detail either way."""
    healthy = all(v["ok"] for v in verdicts.values())
    return (200 if healthy else 503), {"status": "ok" if healthy else "unhealthy", "parts": verdicts}


class Progress:
    """When a loop last finished a round; it is stuck when it has not for `stuck_after_s`
    (the detectors' tick loop: absence can only be seen while it runs)."""

    def __init__(self, what: str, stuck_after_s: float) -> None:
        self._what = what
        self._stuck_after_s = stuck_after_s
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    def check(self) -> tuple[bool, str]:
        age = time.monotonic() - self._last
        return age < self._stuck_after_s, f"last {self._what} {age:.1f} s ago"
