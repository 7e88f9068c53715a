"""Bounds on how many distinct names (services, instances, channels, merchants) detectors keep
state for.

Names come from producers, and a bug or an attacker can send a new one with every event:
without a bound, each costs memory for ever and pages on its own (5,000 made-up service
names were 10,000 critical alerts). Past its cap a dimension's new names are counted, not
tracked, and one `cardinality_capped` finding says so, naming the dimension, the cap and the
first name refused; it resolves once the tracked names fall back under the cap (forgotten
instances, idle merchants).
"""

from __future__ import annotations

from paywatch.detectors.timebase import to_dt
from paywatch.finding import Evidence, Finding, make_finding


class Cap:
    """One dimension's cap: `admits` before a new name is tracked, `release` when names are forgotten."""

    __slots__ = ("dimension", "first", "knob", "limit", "open", "refused")

    def __init__(self, dimension: str, limit: int, knob: str) -> None:
        self.dimension = dimension  # plural, as the summary says it: "services"
        self.limit = limit
        self.knob = knob  # the setting that raises it, named in the finding
        self.refused = 0  # events of names refused since the cap was hit
        self.first = ""  # the first name refused
        self.open = False

    def admits(self, tracked: int, name: str, at: int, found: list[Finding]) -> bool:
        """May a new `name` be tracked beside the `tracked` ones? If not, it is counted, and the
        first refusal opens the finding."""
        if tracked < self.limit:
            return True
        self.refused += 1
        if not self.open:
            self.open, self.first = True, name
            found.append(self._finding("open", at))
        return False

    def release(self, tracked: int, at: int, found: list[Finding]) -> None:
        """The tracked names fell to `tracked`: below the cap, the finding resolves."""
        if self.open and tracked < self.limit:
            found.append(self._finding("resolved", at))
            self.open, self.refused, self.first = False, 0, ""

    def _finding(self, state: str, at: int) -> Finding:
        return make_finding(
            at=to_dt(at),
            kind="cardinality_capped",
            state=state,  # type: ignore[arg-type]
            fingerprint=f"cardinality_capped:{self.dimension}",
            severity="warning",
            summary=f"more than {self.limit} distinct {self.dimension}: new ones (first {self.first!r}) are "
            f"counted, not tracked; raise detectors.{self.knob} if they are real"
            if state == "open"
            else f"distinct {self.dimension} back under {self.limit}; {self.refused} events of untracked "
            f"{self.dimension} were counted while capped",
            evidence=Evidence(figures={"dimension": self.dimension, "cap": self.limit, "refused_events": self.refused}),
        )
