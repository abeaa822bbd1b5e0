"""Stacked bar charts as inline SVG, drawn on the server: no script, readable without one,
and the same picture in the portal, the admin and a PDF."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.template.loader import render_to_string

WIDTH, HEIGHT = 720, 240
LEFT, BOTTOM, TOP, RIGHT = 72, 28, 12, 8
TICKS = 4
# Colour-blind-safe (Okabe-Ito), in the order series are given.
COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000"]


@dataclass(frozen=True)
class Segment:
    series: str
    value: Decimal
    y: float
    height: float
    colour: str
    title: str


@dataclass(frozen=True)
class Bar:
    label: str
    x: float
    label_x: float
    total: Decimal
    title: str
    segments: list[Segment]


def nice_step(top: Decimal) -> Decimal:
    """The smallest 1, 2, 2.5 or 5 × 10ⁿ that fits ``top`` in ``TICKS`` steps."""
    if top <= 0:
        return Decimal(1)
    rough = top / TICKS
    power = Decimal(1).scaleb(rough.adjusted())
    for factor in (1, 2, Decimal("2.5"), 5, 10):
        if power * factor >= rough:
            return power * factor
    raise AssertionError("unreachable")  # pragma: no cover


def stacked_bars(
    *,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[Decimal]]],
    fmt: Callable[[Decimal], str],
    caption: str,
) -> str:
    """One bar per label, one stacked segment per series; ``fmt`` writes values."""
    totals = [sum((values[i] for _, values in series), Decimal(0)) for i in range(len(labels))]
    step = nice_step(max(totals, default=Decimal(0)))
    steps = max(1, int(-(-max(totals, default=Decimal(0)) // step)))  # no empty band on top
    top = step * steps
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(labels), 1)
    bars = []
    for i, label in enumerate(labels):
        base = Decimal(0)
        segments = []
        for n, (name, values) in enumerate(series):
            value = values[i]
            if value > 0:
                y = TOP + plot_h * float(1 - (base + value) / top)
                height = plot_h * float(value / top)
                segments.append(
                    Segment(
                        name, value, y, height, COLOURS[n % len(COLOURS)], f"{name}: {fmt(value)}"
                    )
                )
                base += value
        bars.append(
            Bar(
                label,
                LEFT + slot * (i + 0.15),
                LEFT + slot * (i + 0.5),
                totals[i],
                f"{label}: {fmt(totals[i])}",
                segments,
            )
        )
    ticks = [{"y": TOP + plot_h * (1 - k / steps), "text": fmt(step * k)} for k in range(steps + 1)]
    every = max(1, len(labels) // 10)  # at most ~10 axis labels
    return render_to_string(
        "charts/stacked_bars.html",
        {
            "width": WIDTH,
            "height": HEIGHT,
            "left": LEFT,
            "right": WIDTH - RIGHT,
            "baseline": HEIGHT - BOTTOM,
            "bar_width": max(slot * 0.7, 1),
            "tick_x": LEFT - 6,
            "label_y": HEIGHT - BOTTOM + 16,
            "bars": bars,
            "axis_labels": [b for i, b in enumerate(bars) if i % every == 0],
            "ticks": ticks,
            "legend": [
                {"name": name, "colour": COLOURS[n % len(COLOURS)]}
                for n, (name, _) in enumerate(series)
            ],
            "caption": caption,
        },
    )
