"""One check's verdict (PASS / FAIL / SKIP with the measured value, the target and the evidence)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Status(enum.StrEnum):
    """The outcome of one check."""

    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass
class CheckResult:
    """What a check found: ``value`` measured against ``target`` (both human-readable), and the evidence."""

    name: str
    status: Status
    value: str
    target: str
    evidence: str
    details: dict[str, Any] = field(default_factory=dict)
    """Machine-readable figures behind the verdict (kept in verdict.json beside the five required keys)."""

    def to_json(self) -> dict[str, Any]:
        """The ``checks[]`` entry of verdict.json."""
        return {
            "name": self.name,
            "status": self.status.value,
            "value": self.value,
            "target": self.target,
            "evidence": self.evidence,
            "details": self.details,
        }


def skipped(name: str, target: str, reason: str) -> CheckResult:
    """A check that could not run here, and why."""
    return CheckResult(name, Status.SKIP, "-", target, reason)


def verdict(name: str, passed: bool, value: str, target: str, evidence: str, **details: Any) -> CheckResult:
    """PASS or FAIL from ``passed``."""
    return CheckResult(name, Status.PASS if passed else Status.FAIL, value, target, evidence, dict(details))


def verdict_document(results: list[CheckResult], meta: dict[str, Any]) -> dict[str, Any]:
    """The whole verdict.json: ``{"checks": [...], "passed": bool, "fleet": {...}}``."""
    return {
        "checks": [r.to_json() for r in results],
        "passed": all(r.status is not Status.FAIL for r in results),
        "fleet": meta,
    }
