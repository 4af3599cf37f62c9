"""Self-contained HTML reports with inline SVG charts (no JavaScript, no network), shared by ``bench``,
``simulate`` and ``validate``.

:mod:`llmfleet.report.svg` draws charts as SVG strings; :mod:`llmfleet.report.html` assembles a page.
"""

from llmfleet.report.html import HtmlReport
from llmfleet.report.svg import Series, bar_chart, cdf_chart, histogram, line_chart

__all__ = ["HtmlReport", "Series", "bar_chart", "cdf_chart", "histogram", "line_chart"]
