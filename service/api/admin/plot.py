"""A tiny server-side SVG line plot (eval loss across adapter versions): no JS, no plotting library."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

from markupsafe import Markup

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 360, 140, 52, 12, 12, 26


def line_plot_svg(points: Sequence[tuple[int, float]], label: str = "eval loss") -> Markup:
    """An inline SVG of `(version, value)` points; empty Markup when there are none."""
    if not points:
        return Markup("")
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    if y0 == y1:  # a flat line still needs a visible band
        y0, y1 = y0 - 0.5, y1 + 0.5

    def sx(x: float) -> float:
        return PAD_L + (x - x0) / (x1 - x0) * (W - PAD_L - PAD_R)

    def sy(y: float) -> float:
        return PAD_T + (y1 - y) / (y1 - y0) * (H - PAD_T - PAD_B)

    # Enough significant digits that the two axis labels differ even for close values.
    digits = max(3, 2 + int(math.ceil(-math.log10((y1 - y0) / max(abs(y1), 1e-12)))))
    coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    dots = "".join(
        f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3"><title>v{x}: {y:.4g}</title></circle>' for x, y in points)
    ticks = "".join(
        f'<text x="{sx(x):.1f}" y="{H - 8}" text-anchor="middle">v{x}</text>' for x in sorted(set(xs)))
    svg = (
        f'<svg class="plot" role="img" aria-label="{escape(label)} per version" viewBox="0 0 {W} {H}" '
        f'width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg">'
        f'<line class="axis" x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}"/>'
        f'<line class="axis" x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}"/>'
        f'<text x="{PAD_L - 4}" y="{PAD_T + 4}" text-anchor="end">{y1:.{digits}g}</text>'
        f'<text x="{PAD_L - 4}" y="{H - PAD_B}" text-anchor="end">{y0:.{digits}g}</text>'
        f'<polyline points="{coords}"/>{dots}{ticks}</svg>'
    )
    return Markup(svg)


SERIES_COLOURS = ("var(--accent)", "#c2410c", "#15803d", "#7c3aed")


def series_plot_svg(series: Mapping[str, Sequence[tuple[int, float]]], label: str = "eval loss") -> Markup:
    """Several `(version, value)` series on shared axes, one colour each, with a legend; empty when no points.

    One series draws exactly as `line_plot_svg`."""
    series = {k: list(v) for k, v in series.items() if v}
    if not series:
        return Markup("")
    if len(series) == 1:
        return line_plot_svg(next(iter(series.values())), label)
    allp = [p for pts in series.values() for p in pts]
    xs = [p[0] for p in allp]
    ys = [p[1] for p in allp]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    if y0 == y1:
        y0, y1 = y0 - 0.5, y1 + 0.5
    h = H + 14 * len(series)  # room for the legend under the axis

    def sx(x: float) -> float:
        return PAD_L + (x - x0) / (x1 - x0) * (W - PAD_L - PAD_R)

    def sy(y: float) -> float:
        return PAD_T + (y1 - y) / (y1 - y0) * (H - PAD_T - PAD_B)

    digits = max(3, 2 + int(math.ceil(-math.log10((y1 - y0) / max(abs(y1), 1e-12)))))
    body = []
    for i, (name, pts) in enumerate(series.items()):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        body.append(f'<polyline style="stroke:{colour}" points="{coords}"/>')
        body.extend(f'<circle style="fill:{colour}" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3">'
                    f'<title>{escape(name)} v{x}: {y:.4g}</title></circle>' for x, y in pts)
        ly = H + 4 + 14 * i
        body.append(f'<line x1="{PAD_L}" y1="{ly - 3}" x2="{PAD_L + 16}" y2="{ly - 3}" style="stroke:{colour};'
                    f'stroke-width:2"/><text x="{PAD_L + 20}" y="{ly}">{escape(name)}</text>')
    ticks = "".join(f'<text x="{sx(x):.1f}" y="{H - 8}" text-anchor="middle">v{x}</text>' for x in sorted(set(xs)))
    svg = (
        f'<svg class="plot" role="img" aria-label="{escape(label)} per version" viewBox="0 0 {W} {h}" '
        f'width="{W}" height="{h}" xmlns="http://www.w3.org/2000/svg">'
        f'<line class="axis" x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}"/>'
        f'<line class="axis" x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}"/>'
        f'<text x="{PAD_L - 4}" y="{PAD_T + 4}" text-anchor="end">{y1:.{digits}g}</text>'
        f'<text x="{PAD_L - 4}" y="{H - PAD_B}" text-anchor="end">{y0:.{digits}g}</text>'
        f'{"".join(body)}{ticks}</svg>'
    )
    return Markup(svg)
