"""`llmfleet validate`: the seed's pre-production checklist run against a fleet, one verdict per check.

Seven checks (:mod:`.throughput`, :mod:`.latency`, :mod:`.failover`, :mod:`.scaling`, :mod:`.cost`, :mod:`.memory`,
:mod:`.error_recovery`), each a coroutine over a :class:`~llmfleet.validate.context.CheckContext` returning a
:class:`~llmfleet.validate.verdict.CheckResult`. :mod:`.local_fleet` brings a fleet up with `llmfleet up` in a
subprocess; :mod:`.runner` runs the checks; :mod:`.report` writes the HTML page.
"""

from llmfleet.validate.verdict import CheckResult, Status

__all__ = ["CheckResult", "Status"]
