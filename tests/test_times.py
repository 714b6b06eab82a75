"""Measurement times: stored with milliseconds (rows of one second keep their order), sorted
as text beside rows stored with whole seconds, and cut to the second where OONI's format
wants seconds."""

import datetime
import re

from hypothesis import given
from hypothesis import strategies as st

from probe.analysis import analyze
from probe.model.records import Observations, measurement_time, utc_now
from probe.ooni.export import Provenance, to_ooni
from probe.report.timeline import iso

STORED = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$")
OONI_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def test_a_measurement_time_has_milliseconds_and_the_same_second_as_now():
    before = utc_now()
    stored = measurement_time()
    after = utc_now()
    assert STORED.match(stored), stored
    assert before <= stored[:19] <= after


@given(
    st.integers(min_value=0, max_value=86_399),
    st.integers(min_value=0, max_value=999),
    st.integers(min_value=0, max_value=86_399),
)
def test_text_order_is_time_order_across_both_precisions(second, millis, other):
    """A row with milliseconds sorts after its own whole second and before the next one, so
    old rows (whole seconds) and new rows order as time in SQL's ``order by start_time``."""

    def text(s: int) -> str:
        return f"2026-10-26 {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"

    precise = f"{text(second)}.{millis:03d}"
    assert (precise < text(other)) == (second < other)
    assert (precise > text(other)) == (second >= other)


def test_the_ooni_export_cuts_times_to_the_second():
    obs = Observations(
        input="http://example.org/",
        url="http://example.org/",
        domain="example.org",
        start_time="2026-10-26 08:00:01.250",
    )
    p = Provenance("m1", "r1", None, "AS64500", "KG")
    exported = to_ooni(obs, analyze(obs), p)
    assert exported["measurement_start_time"] == "2026-10-26 08:00:01"
    assert OONI_TIME.match(exported["test_start_time"])


@given(st.integers(min_value=-86_400 * 365 * 50, max_value=86_400 * 365 * 300))
def test_iso_is_the_calendar_time(t):
    expected = datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert iso(t) == expected
