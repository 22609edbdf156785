"""Small SVG line charts for reports: one self-contained <svg> element each, no scripts."""

from __future__ import annotations

import math
from html import escape

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac")


def nice_ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values from at or below ``low`` to at or above ``high``: steps of 1, 2 or 5
    times a power of ten (whole numbers only, for counts, when ``integer``)."""
    if high <= low:
        low, high = (low - 1, high + 1) if integer else (low, low + 1.0)
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    if integer:
        step = max(1.0, round(step))
    value = math.floor(low / step) * step
    ticks = [round(value, 10)]
    while ticks[-1] < high - step * 1e-9:
        value += step
        ticks.append(round(value, 10))
    return ticks


def _label(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}"


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], x_label: str,
               y_label: str, width: int = 640, height: int = 300, points: bool = False,
               integer_x: bool = False) -> str:
    """A line chart (y from zero) with axes, ticks, a legend and a title; ``points`` marks
    every point (for few, such as t/s by node count); ``integer_x`` for counts."""
    left, right, top, bottom = 64, 16 + (150 if len(series) > 1 else 0), 32, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11" '
           f'role="img" aria-label="{escape(title)}">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{left}" y="18" font-size="13" font-weight="bold">{escape(title)}</text>']
    if not xs:
        out.append(f'<text x="{left}" y="{top + plot_h / 2}">no data</text></svg>')
        return "\n".join(out)
    x_ticks = nice_ticks(min(xs), max(xs), integer=integer_x)
    y_ticks = nice_ticks(0.0, max(ys) or 1.0)
    x0, x1, y1 = x_ticks[0], x_ticks[-1], y_ticks[-1]

    def px(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * plot_w

    def py(y: float) -> float:
        return top + plot_h - y / (y1 or 1) * plot_h

    for y in y_ticks:
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
                   f'stroke="#e0e0e0"/>')
        out.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{_label(y)}</text>')
    for x in x_ticks:
        out.append(f'<text x="{px(x):.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                   f'{_label(x)}</text>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#555"/>')
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" '
               f'stroke="#555"/>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">'
               f'{escape(x_label)}</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + plot_h / 2})">{escape(y_label)}</text>')
    for i, (name, pts) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(pts))
        out.append(f'<polyline class="series" fill="none" stroke="{color}" stroke-width="2" '
                   f'points="{path}"><title>{escape(name)}</title></polyline>')
        if points:
            out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{color}"/>'
                    for x, y in pts]
        if len(series) > 1:
            ly = top + 14 * i + 6
            out.append(f'<rect x="{width - right + 12}" y="{ly - 8}" width="10" height="10" '
                       f'fill="{color}"/>')
            out.append(f'<text x="{width - right + 26}" y="{ly + 1}">{escape(name[:22])}</text>')
    out.append("</svg>")
    return "\n".join(out)
