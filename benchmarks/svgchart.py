"""A line chart as a self-contained SVG file: x a number (round-trip time), y seconds, one line
per series with its min-max range as a band. Written by hand: a chart of a few lines does not
warrant plotting libraries (matplotlib and its dependencies) in a CLI project's test extras."""
from __future__ import annotations

from html import escape
from pathlib import Path

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"]


def _nice_top(value: float) -> float:
    for step in (0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10, 20, 50):
        if value <= step * 5:
            return step * 5
    return value


def line_chart(path: Path, title: str, x_label: str, y_label: str,
               series: dict[str, list[tuple[float, float, float, float]]]) -> None:
    """`series`: name -> [(x, median, min, max), ...]."""
    width, height, left, right, top, bottom = 760, 420, 70, 250, 50, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = sorted({x for points in series.values() for x, *_ in points})
    x_max = max(xs) or 1.0
    y_top = _nice_top(max((hi for points in series.values() for *_, hi in points), default=1.0) * 1.05)

    def px(x: float) -> float:
        return left + plot_w * x / x_max

    def py(y: float) -> float:
        return top + plot_h * (1 - y / y_top)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="24" font-size="15" font-weight="bold">{escape(title)}</text>']
    for i in range(6):  # horizontal grid and y ticks
        y = y_top * i / 5
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{py(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
    for x in xs:
        out.append(f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#eee"/>')
        out.append(f'<text x="{px(x):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{x:g}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 18}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text transform="translate(18 {top + plot_h / 2}) rotate(-90)" text-anchor="middle">'
               f'{escape(y_label)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>')
    for n, (name, points) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        points = sorted(points)
        band = [(px(x), py(hi)) for x, _, _, hi in points] + [(px(x), py(lo)) for x, _, lo, _ in reversed(points)]
        out.append('<polygon points="' + " ".join(f"{a:.1f},{b:.1f}" for a, b in band)
                   + f'" fill="{colour}" fill-opacity="0.15" stroke="none"/>')
        out.append('<polyline points="' + " ".join(f"{px(x):.1f},{py(med):.1f}" for x, med, _, _ in points)
                   + f'" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, med, _, _ in points:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(med):.1f}" r="3" fill="{colour}"/>')
        ly = top + 14 + 20 * n
        out.append(f'<line x1="{left + plot_w + 14}" x2="{left + plot_w + 34}" y1="{ly - 4}" y2="{ly - 4}" '
                   f'stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{left + plot_w + 40}" y="{ly}">{escape(name)}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")
