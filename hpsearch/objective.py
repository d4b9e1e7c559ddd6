"""A metric to optimize and its goal, the one place that says which of two values is better: status, report,
replay, the CLI's checks and the engines all rank through it (as Syne Tune's `metric_mode` and Ray Tune's
`_metric_op`). NaN, infinities, non-numbers and missing values rank last, whatever the goal."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MAXIMIZE, MINIMIZE = "maximize", "minimize"


def finite(value: Any) -> bool:
    """A finite number (not a bool): a metric value that ranks."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Objective:
    name: str
    goal: str = MINIMIZE  # W&B's default when a sweep's metric names none

    def __post_init__(self) -> None:
        if self.goal not in (MAXIMIZE, MINIMIZE):
            raise ValueError(f"metric.goal: {self.goal!r}; allowed: {MAXIMIZE}, {MINIMIZE}")

    @classmethod
    def of(cls, metric: Mapping[str, Any]) -> Objective:
        """The objective of a `{name, goal}` mapping (a sweep's `metric`, or one of its `metrics`)."""
        return cls(metric["name"], metric.get("goal", MINIMIZE))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Objective | None:
        """The sweep config's `metric`; None if it sets none (grid and random sweeps may not)."""
        metric = config.get("metric")
        return cls.of(metric) if metric else None

    @property
    def sign(self) -> int:
        """+1 or -1: a value times the sign is bigger the better it is."""
        return 1 if self.goal == MAXIMIZE else -1

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "goal": self.goal}

    def sort_key(self, value: Any) -> tuple[int, float]:
        """Ascending order is best first; values that do not rank come last, tied."""
        return (0, -self.sign * value) if finite(value) else (1, 0.0)

    def better(self, a: Any, b: Any) -> bool:
        """Whether `a` is strictly better than `b` (a value that ranks beats one that does not)."""
        return self.sort_key(a) < self.sort_key(b)

    def best(self, values: Iterable[Any]) -> Any:
        """The best of `values` (the first of equals); None if none ranks."""
        ranked = [v for v in values if finite(v)]
        return min(ranked, key=self.sort_key) if ranked else None
