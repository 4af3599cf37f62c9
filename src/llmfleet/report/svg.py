"""Charts as inline SVG strings: line charts (several series, gaps allowed), histograms, CDFs and bar charts.

Pure functions of their data; no dependency beyond the standard library. Each chart is a fixed-size ``<svg>`` with
axes, round-number ticks, labels and a legend; data is drawn as ``<path>`` (lines) or ``<rect>`` (bars), so a test
can check a chart is not empty by looking for a path with points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 46, 44


@dataclass(frozen=True)
class Series:
    """One line: points ``(xs[i], ys[i])``; a ``None`` y breaks the line."""

    name: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    color: str | None = None


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering ``lo..hi`` (about ``count`` of them)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if raw <= s * mag)
    start = math.floor(lo / step) * step
    ticks = [round(start, 12)]
    while ticks[-1] < hi - step * 1e-9:
        ticks.append(round(start + len(ticks) * step, 12))
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:.4g}"


class _Frame:
    """Maps data coordinates to pixels inside the plot area and draws the axes."""

    def __init__(self, width: int, height: int, xs: list[float], ys: list[float], y_from_zero: bool) -> None:
        self.width, self.height = width, height
        x_lo, x_hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
        y_lo, y_hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
        if y_from_zero:
            y_lo = min(0.0, y_lo)
        self.xt = nice_ticks(x_lo, x_hi)
        self.yt = nice_ticks(y_lo, y_hi)
        self.x0, self.x1 = self.xt[0], self.xt[-1]
        self.y0, self.y1 = self.yt[0], self.yt[-1]

    def px(self, x: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return _LEFT + (x - self.x0) / span * (self.width - _LEFT - _RIGHT)

    def py(self, y: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return self.height - _BOTTOM - (y - self.y0) / span * (self.height - _TOP - _BOTTOM)

    def axes(self, title: str, x_label: str, y_label: str, x_ticks: bool = True) -> list[str]:
        w, h = self.width, self.height
        out = [
            f'<text x="{w / 2:.0f}" y="18" text-anchor="middle" class="title">{escape(title)}</text>',
            f'<text x="{w / 2:.0f}" y="{h - 6}" text-anchor="middle" class="label">{escape(x_label)}</text>',
            f'<text transform="translate(14,{h / 2:.0f}) rotate(-90)" text-anchor="middle" class="label">'
            f"{escape(y_label)}</text>",
        ]
        for t in self.yt:
            y = self.py(t)
            out.append(f'<line x1="{_LEFT}" x2="{w - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
            out.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{_fmt(t)}</text>')
        for t in self.xt if x_ticks else ():
            x = self.px(t)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{h - _BOTTOM}" y2="{h - _BOTTOM + 4}" class="axis"/>')
            out.append(f'<text x="{x:.1f}" y="{h - _BOTTOM + 16}" text-anchor="middle" class="tick">{_fmt(t)}</text>')
        out.append(f'<polyline points="{_LEFT},{_TOP} {_LEFT},{h - _BOTTOM} {w - _RIGHT},{h - _BOTTOM}" class="axis"/>')
        return out


def _svg(width: int, height: int, body: list[str]) -> str:
    style = (
        "<style>.title{font:600 13px sans-serif}.label{font:11px sans-serif;fill:#444}"
        ".tick{font:10px sans-serif;fill:#555}.grid{stroke:#e5e5e5}.axis{stroke:#888;fill:none}"
        ".legend{font:11px sans-serif}.empty{font:12px sans-serif;fill:#999}</style>"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">{style}' + "".join(body) + "</svg>"
    )


def _legend(names: list[tuple[str, str]], width: int) -> list[str]:
    """One row under the title, left to right, so it never covers the data."""
    if len(names) < 2:
        return []
    out = []
    x = float(_LEFT)
    for name, color in names:
        out.append(f'<rect x="{x:.0f}" y="26" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{x + 14:.0f}" y="35" class="legend">{escape(name)}</text>')
        x += 24 + 6.5 * len(name)
    return out


def _empty(width: int, height: int, title: str) -> str:
    return _svg(
        width,
        height,
        [
            f'<text x="{width / 2:.0f}" y="18" text-anchor="middle" class="title">{escape(title)}</text>',
            f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" class="empty">no data</text>',
        ],
    )


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 560,
    height: int = 280,
    y_from_zero: bool = True,
    markers: bool = False,
) -> str:
    """Lines for each series; ``None`` values leave gaps. ``markers`` adds a dot at each point."""
    xs = [x for s in series for x, y in zip(s.xs, s.ys, strict=True) if y is not None and math.isfinite(y)]
    ys = [y for s in series for y in s.ys if y is not None and math.isfinite(y)]
    if not ys:
        return _empty(width, height, title)
    frame = _Frame(width, height, xs, ys, y_from_zero)
    body = frame.axes(title, x_label, y_label)
    names = []
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        names.append((s.name, color))
        d: list[str] = []
        pen_up = True
        for x, y in zip(s.xs, s.ys, strict=True):
            if y is None or not math.isfinite(y):
                pen_up = True
                continue
            d.append(f"{'M' if pen_up else 'L'}{frame.px(x):.1f},{frame.py(y):.1f}")
            pen_up = False
            if markers:
                body.append(f'<circle cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="3" fill="{color}"/>')
        if d:
            body.append(f'<path d="{" ".join(d)}" fill="none" stroke="{color}" stroke-width="1.6"/>')
    body += _legend(names, width)
    return _svg(width, height, body)


def histogram(
    values: Sequence[float],
    *,
    title: str,
    x_label: str,
    bins: int = 40,
    width: int = 560,
    height: int = 280,
    color: str = PALETTE[0],
) -> str:
    """Counts of ``values`` in ``bins`` equal-width bins between the smallest and the largest value."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return _empty(width, height, title)
    lo, hi = min(vals), max(vals)
    if hi <= lo:
        hi = lo + (abs(lo) * 0.01 or 1.0)
    step = (hi - lo) / bins
    counts = [0] * bins
    for v in vals:
        counts[min(bins - 1, int((v - lo) / step))] += 1
    frame = _Frame(width, height, [lo, hi], [0.0, float(max(counts))], True)
    body = frame.axes(title, x_label, "requests")
    d = []
    for i, c in enumerate(counts):
        if c:
            x0, x1 = frame.px(lo + i * step), frame.px(lo + (i + 1) * step)
            y0, y1 = frame.py(0.0), frame.py(float(c))
            d.append(f"M{x0:.1f},{y0:.1f}V{y1:.1f}H{x1:.1f}V{y0:.1f}Z")
    body.append(f'<path d="{"".join(d)}" fill="{color}" fill-opacity="0.75" stroke="#fff" stroke-width="0.5"/>')
    return _svg(width, height, body)


def cdf_chart(
    named_values: dict[str, Sequence[float]],
    *,
    title: str,
    x_label: str,
    width: int = 560,
    height: int = 280,
    max_points: int = 400,
) -> str:
    """Empirical CDFs (fraction of values <= x), one line per name; long series are thinned to ``max_points``."""
    series = []
    for name, values in named_values.items():
        s = sorted(v for v in values if math.isfinite(v))
        if not s:
            continue
        n = len(s)
        idx = (
            range(n) if n <= max_points else sorted({round(i * (n - 1) / (max_points - 1)) for i in range(max_points)})
        )
        series.append(Series(name, [s[i] for i in idx], [(i + 1) / n for i in idx]))
    return line_chart(series, title=title, x_label=x_label, y_label="fraction of requests", width=width, height=height)


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    y_label: str,
    width: int = 560,
    height: int = 280,
    color: str = PALETTE[3],
) -> str:
    """One bar per label (error kinds, sweep points)."""
    if not values:
        return _empty(width, height, title)
    frame = _Frame(width, height, [0.0, float(len(values))], [0.0, float(max(values))], True)
    body = frame.axes(title, "", y_label, x_ticks=False)
    slot = (width - _LEFT - _RIGHT) / len(values)
    d = []
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        x0 = _LEFT + i * slot + slot * 0.15
        x1 = x0 + slot * 0.7
        y0, y1 = frame.py(0.0), frame.py(float(v))
        d.append(f"M{x0:.1f},{y0:.1f}V{y1:.1f}H{x1:.1f}V{y0:.1f}Z")
        body.append(
            f'<text x="{(x0 + x1) / 2:.1f}" y="{height - _BOTTOM + 16}" text-anchor="middle" class="tick">'
            f"{escape(label)}</text>"
        )
        body.append(
            f'<text x="{(x0 + x1) / 2:.1f}" y="{y1 - 4:.1f}" text-anchor="middle" class="tick">{_fmt(v)}</text>'
        )
    body.append(f'<path d="{"".join(d)}" fill="{color}" fill-opacity="0.8"/>')
    return _svg(width, height, body)
