"""The report's markdown helpers: one table format and one µs format for the report and the terminal."""

from __future__ import annotations

import math

from speedsim.report.markdown import md_table, pct, times, us, whole


def test_us_rounds_to_whole_microseconds_from_100_in_the_report():
    """The report's prose: one decimal below 100 µs, whole µs with thousands separators from 100 up."""
    assert [us(12.34), us(99.94), us(100.4), us(12_345.6)] == ["12.3", "99.9", "100", "12,346"]
    assert us(float("nan")) == "n/a"


def test_us_keeps_the_decimal_in_the_terminal_tables():
    """`whole_from=math.inf` (the terminal tables): one decimal at every size."""
    assert us(12_345.64, math.inf) == "12,345.6" and us(0.25, math.inf) == "0.2"


def test_ratio_percent_and_integer_cells():
    assert (times(1.234), pct(0.0835), whole(12.0), whole(float("nan")), whole(None)) == ("1.23x", "8.3%", "12", "", "")


def test_md_table_leaves_missing_cells_blank():
    assert md_table([{"a": 1}, {"a": 2, "b": "x"}], ["a", "b"]) == "| a | b |\n|---|---|\n| 1 |  |\n| 2 | x |"
