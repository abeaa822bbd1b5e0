import re
from decimal import Decimal

import pytest

from billing.charts import nice_step, stacked_bars
from catalog.money import format_money

D = Decimal


@pytest.mark.parametrize(
    ("top", "step"),
    [(D(0), D(1)), (D("202.5"), D(100)), (D(40), D(10)), (D("0.03"), D("0.01")), (D(9), D("2.5"))],
)
def test_steps_are_round_and_fit_the_top(top, step):
    assert nice_step(top) == step
    assert step * 4 >= top


def test_segments_stack_to_the_total_and_scale_with_it():
    svg = stacked_bars(
        labels=["Nov 1", "Nov 2"],
        series=[("Input", [D("15"), D("0")]), ("Output", [D("45"), D("30")])],
        fmt=lambda v: format_money(v, "usd"),
        caption="Cost per day",
    )
    rects = re.findall(
        r'height="([\d.]+)" fill="[^"]+" data-series="(\w+)" data-value="([\d.]+)"', svg
    )
    assert [(s, v) for _, s, v in rects] == [("Input", "15"), ("Output", "45"), ("Output", "30")]
    heights = [float(h) for h, _, _ in rects]
    assert heights[0] * 3 == pytest.approx(heights[1], abs=0.02)  # $15 is a third of $45
    assert heights[1] * 2 == pytest.approx(heights[2] * 3, abs=0.02)
    assert "Nov 1: $60.00" in svg  # the bar's title gives its total
    assert "Output: $45.00" in svg
    # $60 tops the chart: three steps of $20, no empty band above the tallest bar.
    assert [t for t in re.findall(r'class="tick">([^<]+)<', svg)] == [
        "$0.00",
        "$20.00",
        "$40.00",
        "$60.00",
    ]
    assert 'aria-label="Cost per day"' in svg


def test_an_empty_range_draws_axes_only():
    svg = stacked_bars(labels=["Nov 1"], series=[("Input", [D(0)])], fmt=str, caption="c")
    assert "data-series" not in svg
    assert "Nov 1" in svg
