"""Daily summary computation: known streams give known totals (alerts/summary.py, summary_book)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.acks import Ack
from alerts.events import AlertEvent, EventType
from alerts.state import Activity, PatientState
from alerts.summary import DailySummary, day_bounds
from alerts.wire import PayloadError, utc_from_timestamp
from physio.dashboard.summary_book import SummaryBook

UTC_ZONE = ZoneInfo("UTC")
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC).timestamp()


def state(
    t_s: float,
    *,
    activity: str = "upright",
    slouching: bool = False,
    connected: bool = True,
    flexion_deg: float | None = 10.0,
    patient_id: str = "p-001",
) -> PatientState:
    return PatientState(
        patient_id=patient_id,
        gateway_id="ward-3",
        time=utc_from_timestamp(t_s),
        flexion_deg=flexion_deg if connected else None,
        lateral_deg=0.0 if connected else None,
        activity=Activity(activity),
        slouching=slouching,
        device_connected=connected,
        battery_pct=80,
        calibrated=True,
        slouch_threshold_deg=25.0,
    )


def event(
    kind: str, t_s: float, event_id: str, patient_id: str = "p-001", **details: float
) -> AlertEvent:
    return AlertEvent(
        EventType(kind),
        patient_id,
        "ward-3",
        utc_from_timestamp(t_s),
        details=details,
        event_id=event_id,
    )


def put(book: SummaryBook, s: PatientState) -> None:
    """A state filed at its own time (a sender whose clock is credible)."""
    book.on_state(s, s.time_s)


def take(book: SummaryBook, e: AlertEvent) -> None:
    """An event filed at its own time."""
    book.on_event(e, e.time_s)


def feed(book: SummaryBook, start_s: float, seconds: int, **kwargs: object) -> float:
    """One state per second for ``seconds`` s; returns the next start time."""
    for i in range(seconds):
        put(book, state(start_s + i, **kwargs))  # type: ignore[arg-type]
    return start_s + seconds


def typical_day(book: SummaryBook) -> None:
    """10 min upright, 5 min slouched, 2 min walking, 1 min lying, 2 min off."""
    t = feed(book, T0, 600)
    t = feed(book, t, 300, slouching=True, flexion_deg=35.0)
    t = feed(book, t, 120, activity="walking")
    t = feed(book, t, 60, activity="lying")
    t = feed(book, t, 120, connected=False)
    put(book, state(t))  # closes the last second


def test_known_stream_gives_known_minutes_and_percentages() -> None:
    book = SummaryBook(UTC_ZONE)
    typical_day(book)
    summary = book.summary("p-001")
    assert summary is not None and summary.day == date(2026, 11, 24)
    totals = summary.totals()
    assert totals.monitored_min == 20.0
    assert totals.worn_min == 18.0
    assert totals.upright_min == 10.0
    assert totals.slouched_min == 5.0
    assert totals.active_min == 2.0
    assert totals.lying_min == 1.0
    assert totals.upright_pct == pytest.approx(66.7)
    assert totals.slouched_pct == pytest.approx(33.3)
    # 08:00-08:10 upright at 10°, 08:10-08:15 slouched at 35°.
    first_bin = int((T0 - summary.day_start_s) // 60)
    assert summary.flexion_mean_deg[first_bin] == pytest.approx(10.0)
    assert summary.flexion_mean_deg[first_bin + 12] == pytest.approx(35.0)
    assert summary.flexion_mean_deg[first_bin + 19] is None  # not worn


def test_episodes_and_falls_are_counted_once_with_their_lengths() -> None:
    book = SummaryBook(UTC_ZONE)
    put(book, state(T0))
    take(book, event("slouch_started", T0 + 600, "e1"))
    take(book, event("slouch_started", T0 + 600, "e1"))  # QoS 1 re-delivery
    take(book, event("slouch_ended", T0 + 900, "e2", duration_s=330.0))
    take(book, event("slouch_started", T0 + 1000, "e3"))
    take(book, event("slouch_ended", T0 + 1090, "e4"))  # no duration: from times
    take(book, event("fall_detected", T0 + 2000, "f1"))
    take(book, event("fall_detected", T0 + 3000, "f2"))
    take(book, event("fall_detected", T0 + 3000, "f2"))
    take(book, event("fall_cancelled", T0 + 3020, "f3"))
    summary = book.summary("p-001")
    assert summary is not None
    totals = summary.totals()
    assert totals.slouch_episodes == 2
    assert totals.slouch_longest_min == 5.5
    assert totals.slouch_mean_min == 3.5  # (330 + 90) / 2 s
    assert totals.falls == 1
    assert totals.falls_cancelled == 1
    assert [f.cancelled for f in summary.falls] == [False, True]


def test_lost_slouch_end_is_closed_by_the_state_stream_and_corrected_by_a_late_event() -> None:
    book = SummaryBook(UTC_ZONE)
    t = feed(book, T0, 10)
    take(book, event("slouch_started", t, "e1"))
    t = feed(book, t, 120, slouching=True)
    feed(book, t, 30)
    episode = book.summary("p-001").episodes[0]  # type: ignore[union-attr]
    assert not episode.open and episode.duration_s == pytest.approx(120.0)
    take(book, event("slouch_ended", t + 2, "e2", duration_s=150.0))
    episode = book.summary("p-001").episodes[0]  # type: ignore[union-attr]
    assert episode.duration_s == 150.0 and book.summary("p-001").totals().slouch_episodes == 1  # type: ignore[union-attr]


def test_an_ongoing_episode_reports_its_length_so_far() -> None:
    book = SummaryBook(UTC_ZONE)
    take(book, event("slouch_started", T0, "e1"))
    feed(book, T0, 61, slouching=True)
    episode = book.summary("p-001").episodes[0]  # type: ignore[union-attr]
    assert episode.open and episode.duration_s == pytest.approx(60.0)


def test_silence_longer_than_the_gap_limit_is_missing_data_not_posture() -> None:
    book = SummaryBook(UTC_ZONE, max_gap_s=10.0)
    put(book, state(T0))
    put(book, state(T0 + 100))
    put(book, state(T0 + 101))
    assert book.summary("p-001").totals().monitored_min == round(11 / 60, 1)  # type: ignore[union-attr]
    assert sum(book.summary("p-001").bins["covered_s"]) == pytest.approx(11.0)  # type: ignore[union-attr]


def test_redelivered_and_out_of_order_states_are_ignored() -> None:
    book = SummaryBook(UTC_ZONE)
    feed(book, T0, 60)
    put(book, state(T0 + 30))  # a retained state delivered again
    put(book, state(T0 + 59))
    put(book, state(T0 + 60))
    assert sum(book.summary("p-001").bins["covered_s"]) == pytest.approx(60.0)  # type: ignore[union-attr]


def test_midnight_splits_time_between_two_days() -> None:
    zone = ZoneInfo("Europe/Berlin")
    book = SummaryBook(zone)
    # 23:59:50 to 00:00:10 local time on 24/25 November (UTC+1).
    start = datetime(2026, 11, 24, 23, 59, 50, tzinfo=zone).timestamp()
    feed(book, start, 21)
    first = book.summary("p-001", date(2026, 11, 24))
    second = book.summary("p-001", date(2026, 11, 25))
    assert first is not None and second is not None
    assert sum(first.bins["covered_s"]) == pytest.approx(10.0)
    assert sum(second.bins["covered_s"]) == pytest.approx(10.0)
    assert book.latest_day("p-001") == date(2026, 11, 25)


@pytest.mark.parametrize(
    ("day", "hours"), [(date(2026, 3, 29), 23), (date(2026, 10, 25), 25), (date(2026, 11, 24), 24)]
)
def test_daylight_saving_days_have_their_real_length(day: date, hours: int) -> None:
    zone = ZoneInfo("Europe/Berlin")
    start_s, end_s = day_bounds(day, zone)
    assert end_s - start_s == hours * 3600
    book = SummaryBook(zone)
    put(book, state(start_s + 3600))
    assert book.summary("p-001").n_bins == hours * 60  # type: ignore[union-attr]


def test_old_days_are_forgotten_and_late_data_for_them_dropped() -> None:
    book = SummaryBook(UTC_ZONE, keep_days=2)
    for day in range(4):
        feed(book, T0 + day * 86400, 5)
    assert book.summary("p-001", date(2026, 11, 24)) is None
    assert book.summary("p-001", date(2026, 11, 27)) is not None
    put(book, state(T0 + 10))
    assert book.summary("p-001", date(2026, 11, 24)) is None


def test_json_round_trip_keeps_everything_shown() -> None:
    book = SummaryBook(UTC_ZONE)
    typical_day(book)
    take(book, event("slouch_started", T0 + 600, "e1"))
    take(book, event("slouch_ended", T0 + 900, "e2"))
    take(book, event("fall_detected", T0 + 1000, "f1"))
    summary = book.summary("p-001")
    assert summary is not None
    payload = summary.to_json()
    obj = json.loads(payload)
    assert obj["totals"]["upright_min"] == 10.0 and obj["totals"]["falls"] == 1
    assert obj["bins"]["bin_s"] == 60 and len(obj["bins"]["covered_s"]) == 1440
    again = DailySummary.from_json(payload)
    assert again.totals() == summary.totals()
    assert again.episodes == summary.episodes and again.falls == summary.falls


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: o.pop("bins"),
        lambda o: o["bins"]["covered_s"].pop(),
        lambda o: o["bins"].__setitem__("start", "2026-11-24T01:00:00.000Z"),
        lambda o: o["bins"]["worn_s"].__setitem__(3, 61.0),
        lambda o: o.__setitem__("timezone", "Mars/Olympus"),
    ],
)
def test_malformed_summaries_are_refused(mutate: object) -> None:
    book = SummaryBook(UTC_ZONE)
    feed(book, T0, 5)
    obj = book.summary("p-001").to_dict()  # type: ignore[union-attr]
    mutate(obj)  # type: ignore[operator]
    with pytest.raises(PayloadError):
        DailySummary.from_json(json.dumps(obj).encode())
    with pytest.raises(PayloadError):
        DailySummary.from_json(b"[1, 2]")


def test_a_restarted_dashboard_continues_the_day_from_the_published_summary() -> None:
    whole = SummaryBook(UTC_ZONE)
    typical_day(whole)
    before, after = SummaryBook(UTC_ZONE), SummaryBook(UTC_ZONE)
    t = feed(before, T0, 600)
    t = feed(before, t, 300, slouching=True, flexion_deg=35.0)
    put(before, state(t, activity="walking"))
    published = before.summary("p-001")
    assert published is not None
    after.on_remote(DailySummary.from_json(published.to_json()))
    t = feed(after, t, 120, activity="walking")
    t = feed(after, t, 60, activity="lying")
    t = feed(after, t, 120, connected=False)
    put(after, state(t))
    assert after.summary("p-001").totals() == whole.summary("p-001").totals()  # type: ignore[union-attr]
    # Our own summary coming back from the broker changes nothing.
    mine = after.summary("p-001")
    after.take_dirty()
    after.on_remote(DailySummary.from_json(mine.to_json()))  # type: ignore[union-attr]
    assert after.summary("p-001").totals() == mine.totals()  # type: ignore[union-attr]
    assert after.take_dirty() == []


def test_merge_keeps_the_better_covered_bin_and_unions_events() -> None:
    a, b = SummaryBook(UTC_ZONE), SummaryBook(UTC_ZONE)
    feed(a, T0, 61)
    feed(b, T0, 31)
    take(b, event("fall_detected", T0 + 5, "f1"))
    merged = b.summary("p-001").merge(a.summary("p-001"))  # type: ignore[union-attr, arg-type]
    assert sum(merged.bins["covered_s"]) == pytest.approx(60.0)
    assert merged.totals().falls == 1
    with pytest.raises(ValueError, match="same patient"):
        feed(b, T0, 1, patient_id="p-002")
        merged.merge(b.summary("p-002"))  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0.05, max_value=30.0), min_size=1, max_size=60),
    kinds=st.lists(
        st.sampled_from(["upright", "slouch", "walking", "lying", "off"]), min_size=61, max_size=61
    ),
)
def test_every_second_is_accounted_once(gaps: list[float], kinds: list[str]) -> None:
    book = SummaryBook(UTC_ZONE, max_gap_s=10.0)
    t = T0 + 59.5  # crosses minute bins
    expected = {"covered": 0.0, "worn": 0.0, "upright": 0.0, "slouched": 0.0}
    for raw_gap, kind in zip([*gaps, 0.0], kinds, strict=False):
        gap = round(raw_gap, 3)  # the wire carries milliseconds
        put(
            book,
            state(
                t,
                activity="upright" if kind in ("slouch", "off") else kind,
                slouching=kind == "slouch",
                connected=kind != "off",
            ),
        )
        if gap == 0.0:
            break
        dt = min(gap, 10.0)
        expected["covered"] += dt
        expected["worn"] += 0.0 if kind == "off" else dt
        expected["upright"] += dt if kind == "upright" else 0.0
        expected["slouched"] += dt if kind == "slouch" else 0.0
        t += gap
    summary = book.summary("p-001")
    assert summary is not None
    for name in expected:
        # Times travel in whole ms: the sum is off by at most one rounding at each
        # end (consecutive roundings telescope), whatever the number of states.
        assert sum(summary.bins[f"{name}_s"]) == pytest.approx(expected[name], abs=2e-3)
    assert all(v <= 60.0 + 1e-9 for v in summary.bins["covered_s"])


def test_fall_handling_is_recorded_survives_json_and_merges() -> None:

    book = SummaryBook(UTC_ZONE)
    take(book, event("fall_detected", T0, "f1"))
    book.on_escalation("p-001", "f1", 1)
    book.on_ack("p-001", Ack.at("f1", "acknowledged", "Anna", T0 + 150))
    book.on_ack("p-001", Ack.at("f1", "acknowledged", "Ben", T0 + 160))  # later: ignored
    book.on_ack("p-002", Ack.at("f1", "resolved", "Eve", T0 + 170))  # other patient
    fall = book.summary("p-001").falls[0]  # type: ignore[union-attr]
    assert (fall.escalation_level, fall.acknowledged_by, fall.acknowledged_s) == (
        1,
        "Anna",
        T0 + 150,
    )
    assert fall.resolved_by is None
    again = DailySummary.from_json(book.summary("p-001").to_json())  # type: ignore[union-attr]
    assert again.falls == (fall,)
    other = SummaryBook(UTC_ZONE)
    take(other, event("fall_detected", T0, "f1"))
    other.on_escalation("p-001", "f1", 2)
    other.on_ack("p-001", Ack.at("f1", "resolved", "Ben", T0 + 400))
    merged = again.merge(other.summary("p-001"))  # type: ignore[arg-type]
    assert merged.falls[0].escalation_level == 2
    assert (merged.falls[0].acknowledged_by, merged.falls[0].resolved_by) == ("Anna", "Ben")
