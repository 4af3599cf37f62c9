"""One self-contained HTML page: headings, paragraphs, tables, warnings and inline SVG figures; no scripts, no
external resources, so the file opens anywhere without a network."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path

from llmfleet.errors import ConfigError

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}th{background:#f5f5f5}
td:first-child,th:first-child{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:12px}.figs svg{border:1px solid #eee;background:#fff}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:6px 10px;margin:6px 0}
.ok{color:#1a7f37;font-weight:600}.fail{color:#c62828;font-weight:600}.skip{color:#777;font-weight:600}
"""


class HtmlReport:
    """Build a page block by block, then :meth:`render` or :meth:`write` it. Text is escaped; SVG is trusted."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self._blocks: list[str] = [f"<h1>{escape(title)}</h1>"]
        if subtitle:
            self._blocks.append(f'<p class="sub">{escape(subtitle)}</p>')

    def section(self, heading: str) -> None:
        """Start a new section."""
        self._blocks.append(f"<h2>{escape(heading)}</h2>")

    def paragraph(self, text: str) -> None:
        """A paragraph of plain text."""
        self._blocks.append(f"<p>{escape(text)}</p>")

    def warning(self, text: str) -> None:
        """A highlighted warning."""
        self._blocks.append(f'<div class="warn">{escape(text)}</div>')

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """A table; floats are shown with 4 significant digits, ``None`` as a dash."""

        def cell(v: object) -> str:
            if v is None:
                return "-"
            if isinstance(v, float):
                return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
            return escape(str(v))

        head = "".join(f"<th>{escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
        self._blocks.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figures(self, *svgs: str) -> None:
        """A row of charts (SVG strings from :mod:`llmfleet.report.svg`)."""
        self._blocks.append('<div class="figs">' + "".join(svgs) + "</div>")

    def render(self) -> str:
        """The whole page."""
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(self.title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(self._blocks)
            + "\n</body></html>\n"
        )

    def write(self, path: Path, option: str = "--report") -> None:
        """Write the page to ``path``; errors name ``option``."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.render())
        except OSError as exc:
            raise ConfigError(f"{option}: cannot write {path}: {exc.strerror or exc}") from None
