"""Accumulate daily summaries from the state and event streams (pure, no clock).

Each state message stands for the time until the next one of that patient,
capped at ``max_gap_s``: a gateway publishes state about once a second, so a
longer silence is missing data, not more of the same posture. Times are the
ones the caller files each message under (``Inbound.at_s``: the sender's
sample time when its clock is credible, else the receipt time; see
``alerts.clock``), never read here, so a recorded stream replays to the same
totals. A state older than the previous one of the same patient (a
re-delivered retained message) is ignored.
"""

from __future__ import annotations

import logging
import math
from array import array
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from zoneinfo import ZoneInfo

from alerts.acks import Ack, AckAction
from alerts.events import AlertEvent, EventType
from alerts.state import Activity, PatientState
from alerts.summary import (
    BIN_FIELDS,
    DailySummary,
    FallRecord,
    SlouchEpisode,
    day_bounds,
)

__all__ = ["SummaryBook"]

_log = logging.getLogger(__name__)

_STATE_CLOSES_EPISODE_AFTER_S = 5.0  # a state may lag its slouch_started event


@dataclass
class _Day:
    patient_id: str
    day: date
    start_s: float
    n_bins: int
    # array('d'): 8 bytes a value; 50 patients x 2 days x 8 series x 1440 bins
    # stay under 10 MB.
    bins: dict[str, array[float]]
    flexion_sum: array[float]  # degree-seconds
    flexion_s: array[float]  # seconds with a known flexion
    episodes: dict[str, SlouchEpisode] = field(default_factory=dict)
    falls: dict[str, FallRecord] = field(default_factory=dict)
    threshold_deg: float | None = None
    updated_s: float = 0.0


@dataclass(frozen=True)
class _Seen:
    state: PatientState
    t_s: float  # when it is filed, POSIX s


@dataclass
class _Patient:
    last_state: _Seen | None = None
    episode: tuple[date, str] | None = None  # the current or last episode
    episode_closed_by_event: bool = True
    last_fall: tuple[date, str] | None = None


class SummaryBook:
    """Daily summaries of every patient, for the last ``keep_days`` days.

    Args:
        zone: the clinic's time zone; days are its calendar days.
        bin_s: bin width in seconds (60: one bin a minute).
        max_gap_s: longest time one state message stands for.
        keep_days: days kept in memory per patient (older ones are dropped).
    """

    def __init__(
        self, zone: ZoneInfo, bin_s: int = 60, max_gap_s: float = 10.0, keep_days: int = 2
    ) -> None:
        if bin_s <= 0 or max_gap_s <= 0 or keep_days < 1:
            raise ValueError(
                "bin_s and max_gap_s must be > 0 and keep_days >= 1, got "
                f"{bin_s}, {max_gap_s}, {keep_days}"
            )
        self.zone = zone
        self.bin_s = bin_s
        self.max_gap_s = max_gap_s
        self.keep_days = keep_days
        self._days: dict[tuple[str, date], _Day] = {}
        self._patients: dict[str, _Patient] = {}
        self._dirty: set[tuple[str, date]] = set()
        self.dropped_too_old = 0

    # -- input -----------------------------------------------------------

    def on_state(self, state: PatientState, at_s: float) -> None:
        """Account the time since the patient's previous state to that state
        (filed at ``at_s``, POSIX s)."""
        patient = self._patients.setdefault(state.patient_id, _Patient())
        last = patient.last_state
        if last is not None and at_s <= last.t_s:
            return
        if last is not None:
            end_s = last.t_s + min(at_s - last.t_s, self.max_gap_s)
            self._attribute(last.state, last.t_s, end_s)
        patient.last_state = _Seen(state, at_s)
        day = self._get(state.patient_id, at_s)
        if day is not None:
            day.threshold_deg = state.slouch_threshold_deg
            day.updated_s = max(day.updated_s, at_s)
            self._dirty.add((state.patient_id, day.day))
        self._follow_episode(patient, state, at_s)

    def on_event(self, event: AlertEvent, at_s: float) -> None:
        """Slouch episodes and falls, filed at ``at_s`` (POSIX s); other types are ignored."""
        patient = self._patients.setdefault(event.patient_id, _Patient())
        day = self._get(event.patient_id, at_s)
        if day is None:
            return
        if event.type is EventType.SLOUCH_STARTED:
            if event.event_id not in day.episodes:
                day.episodes[event.event_id] = SlouchEpisode(event.event_id, at_s, 0.0, True)
                patient.episode = (day.day, event.event_id)
                patient.episode_closed_by_event = False
        elif event.type is EventType.SLOUCH_ENDED:
            self._end_episode(patient, day, event, at_s)
        elif event.type is EventType.FALL_DETECTED:
            if event.event_id not in day.falls:
                day.falls[event.event_id] = FallRecord(event.event_id, at_s)
                patient.last_fall = (day.day, event.event_id)
        elif event.type is EventType.FALL_CANCELLED:
            if patient.last_fall is not None:
                fall_day = self._days.get((event.patient_id, patient.last_fall[0]))
                fall = fall_day.falls.get(patient.last_fall[1]) if fall_day else None
                if fall_day is not None and fall is not None and fall.time_s <= at_s:
                    fall_day.falls[fall.event_id] = replace(fall, cancelled=True)
                    self._dirty.add((event.patient_id, fall_day.day))
        else:
            return
        day.updated_s = max(day.updated_s, at_s)
        self._dirty.add((event.patient_id, day.day))

    def on_ack(self, patient_id: str, ack: Ack) -> None:
        """Record who acknowledged or resolved a fall, and when (first one counts)."""
        found = self._find_fall(patient_id, ack.event_id)
        if found is None:
            return
        acc, fall = found
        if ack.action is AckAction.ACKNOWLEDGED and fall.acknowledged_s is None:
            fall = replace(fall, acknowledged_by=ack.by, acknowledged_s=ack.time_s)
        elif ack.action is AckAction.RESOLVED and fall.resolved_s is None:
            fall = replace(fall, resolved_by=ack.by, resolved_s=ack.time_s)
        else:
            return
        acc.falls[fall.event_id] = fall
        self._dirty.add((patient_id, acc.day))

    def on_escalation(self, patient_id: str, event_id: str, level: int) -> None:
        """Record the highest escalation level a fall reached."""
        found = self._find_fall(patient_id, event_id)
        if found is not None and level > found[1].escalation_level:
            acc, fall = found
            acc.falls[event_id] = replace(fall, escalation_level=level)
            self._dirty.add((patient_id, acc.day))

    def _find_fall(self, patient_id: str, event_id: str) -> tuple[_Day, FallRecord] | None:
        for (pid, _day), acc in self._days.items():
            fall = acc.falls.get(event_id) if pid == patient_id else None
            if fall is not None:
                return acc, fall
        return None

    def on_remote(self, summary: DailySummary) -> None:
        """Merge a summary published by another dashboard (or by us, earlier)."""
        key = (summary.patient_id, summary.day)
        if summary.timezone != str(self.zone.key) or summary.bin_s != self.bin_s:
            _log.info(
                "ignoring a summary with zone %s / %d s bins", summary.timezone, summary.bin_s
            )
            return
        current = self._days.get(key)
        if current is None:
            if self._too_old(summary.patient_id, summary.day):
                return
            self._days[key] = self._from_summary(summary)
            return
        mine = self._to_summary(current)
        last = self._patients.get(summary.patient_id, _Patient()).last_state
        open_bin = None
        if last is not None and self._day_of(last.t_s) == summary.day:
            open_bin = int((last.t_s - current.start_s) // self.bin_s)
        merged = mine.merge(summary, keep_bins_from=open_bin)
        if merged != mine:
            self._days[key] = self._from_summary(merged, like=current)
            self._dirty.add(key)

    # -- output ----------------------------------------------------------

    def summary(self, patient_id: str, day: date | None = None) -> DailySummary | None:
        """The summary of one day (default: the patient's latest day), or None."""
        if day is None:
            days = [d for (p, d) in self._days if p == patient_id]
            if not days:
                return None
            day = max(days)
        acc = self._days.get((patient_id, day))
        return None if acc is None else self._to_summary(acc)

    def latest_day(self, patient_id: str) -> date | None:
        """The newest day that has data for this patient."""
        days = [d for (p, d) in self._days if p == patient_id]
        return max(days) if days else None

    def patients(self) -> list[str]:
        """Patient ids with at least one day."""
        return sorted({p for (p, _d) in self._days})

    def take_dirty(self) -> list[tuple[str, date]]:
        """(patient_id, day) pairs changed since the last call, oldest day first."""
        dirty = sorted(self._dirty, key=lambda k: (k[1], k[0]))
        self._dirty.clear()
        return [k for k in dirty if k in self._days]

    def mark_dirty(self, patient_id: str, day: date) -> None:
        """Ask for a pair to be returned again (its publish failed)."""
        self._dirty.add((patient_id, day))

    # -- internals -------------------------------------------------------

    def _day_of(self, t_s: float) -> date:
        return datetime.fromtimestamp(t_s, self.zone).date()

    def _too_old(self, patient_id: str, day: date) -> bool:
        newest = max((d for (p, d) in self._days if p == patient_id), default=day)
        return (newest - day).days >= self.keep_days

    def _get(self, patient_id: str, t_s: float) -> _Day | None:
        day = self._day_of(t_s)
        key = (patient_id, day)
        acc = self._days.get(key)
        if acc is not None:
            return acc
        if self._too_old(patient_id, day):
            self.dropped_too_old += 1
            return None
        acc = self._new_day(patient_id, day)
        self._days[key] = acc
        for old in [
            k for k in self._days if k[0] == patient_id and (day - k[1]).days >= self.keep_days
        ]:
            del self._days[old]
        return acc

    def _new_day(self, patient_id: str, day: date) -> _Day:
        start_s, end_s = day_bounds(day, self.zone)
        n_bins = math.ceil((end_s - start_s) / self.bin_s)
        return _Day(
            patient_id,
            day,
            start_s,
            n_bins,
            bins={name: _zeros(n_bins) for name in BIN_FIELDS},
            flexion_sum=_zeros(n_bins),
            flexion_s=_zeros(n_bins),
        )

    def _attribute(self, state: PatientState, start_s: float, end_s: float) -> None:
        t_s = start_s
        while t_s < end_s:
            acc = self._get(state.patient_id, t_s)
            if acc is None:
                return
            index = int((t_s - acc.start_s) // self.bin_s)
            bin_end_s = min(end_s, acc.start_s + (index + 1) * self.bin_s)
            dt_s = bin_end_s - t_s
            if index >= acc.n_bins or dt_s <= 0:
                break  # guard against float edge cases at midnight
            self._add(acc, index, state, dt_s)
            t_s = bin_end_s

    def _add(self, acc: _Day, index: int, state: PatientState, dt_s: float) -> None:
        bins = acc.bins
        bins["covered_s"][index] += dt_s
        if not state.device_connected:
            return
        bins["worn_s"][index] += dt_s
        if state.slouching:
            bins["slouched_s"][index] += dt_s
        elif state.calibrated and state.activity is Activity.UPRIGHT:
            bins["upright_s"][index] += dt_s
        elif state.activity in (Activity.MOVING, Activity.WALKING):
            bins["active_s"][index] += dt_s
        elif state.activity is Activity.LYING:
            bins["lying_s"][index] += dt_s
        if state.flexion_deg is not None and state.calibrated:
            acc.flexion_sum[index] += state.flexion_deg * dt_s
            acc.flexion_s[index] += dt_s

    def _follow_episode(self, patient: _Patient, state: PatientState, at_s: float) -> None:
        if patient.episode is None or patient.episode_closed_by_event:
            return
        acc = self._days.get((state.patient_id, patient.episode[0]))
        episode = acc.episodes.get(patient.episode[1]) if acc else None
        if acc is None or episode is None:
            return
        duration_s = max(0.0, at_s - episode.start_s)
        still = state.slouching and state.device_connected
        if not episode.open and still:
            return  # closed by a state earlier; a new episode needs a new event
        if still or duration_s < _STATE_CLOSES_EPISODE_AFTER_S:
            acc.episodes[episode.event_id] = SlouchEpisode(
                episode.event_id, episode.start_s, duration_s, episode.open
            )
        elif episode.open:
            # The slouch_ended event may be lost (it expires); the state stream
            # closes the episode, and a late event still corrects the length.
            acc.episodes[episode.event_id] = SlouchEpisode(
                episode.event_id, episode.start_s, duration_s, False
            )
        self._dirty.add((state.patient_id, acc.day))

    def _end_episode(self, patient: _Patient, day: _Day, event: AlertEvent, at_s: float) -> None:
        given_s = event.details.get("duration_s")
        if patient.episode is not None and not patient.episode_closed_by_event:
            acc = self._days.get((event.patient_id, patient.episode[0]))
            episode = acc.episodes.get(patient.episode[1]) if acc else None
            if acc is not None and episode is not None:
                duration_s = given_s if given_s is not None else at_s - episode.start_s
                acc.episodes[episode.event_id] = SlouchEpisode(
                    episode.event_id, episode.start_s, max(0.0, duration_s), False
                )
                patient.episode_closed_by_event = True
                self._dirty.add((event.patient_id, acc.day))
                return
        if given_s is not None and event.event_id not in day.episodes:
            # We missed the start (it came before we did); the end says how long.
            day.episodes[event.event_id] = SlouchEpisode(
                event.event_id, at_s - given_s, given_s, False
            )

    def _to_summary(self, acc: _Day) -> DailySummary:
        flexion = tuple(
            s / n if n > 0 else None for s, n in zip(acc.flexion_sum, acc.flexion_s, strict=True)
        )
        return DailySummary(
            patient_id=acc.patient_id,
            day=acc.day,
            timezone=str(self.zone.key),
            day_start_s=acc.start_s,
            bin_s=self.bin_s,
            bins={name: tuple(values) for name, values in acc.bins.items()},
            flexion_mean_deg=flexion,
            episodes=tuple(sorted(acc.episodes.values(), key=lambda e: e.start_s)),
            falls=tuple(sorted(acc.falls.values(), key=lambda f: f.time_s)),
            threshold_deg=acc.threshold_deg,
            updated_s=acc.updated_s,
        )

    def _from_summary(self, summary: DailySummary, like: _Day | None = None) -> _Day:
        acc = self._new_day(summary.patient_id, summary.day)
        acc.bins = {name: array("d", values) for name, values in summary.bins.items()}
        for i, mean in enumerate(summary.flexion_mean_deg):
            if (
                like is not None
                and like.flexion_s[i] > 0
                and like.bins["covered_s"][i] == acc.bins["covered_s"][i]
            ):
                acc.flexion_sum[i], acc.flexion_s[i] = like.flexion_sum[i], like.flexion_s[i]
            elif mean is not None:
                weight_s = summary.bins["worn_s"][i] or summary.bins["covered_s"][i]
                acc.flexion_sum[i], acc.flexion_s[i] = mean * weight_s, weight_s
        acc.episodes = {e.event_id: e for e in summary.episodes}
        acc.falls = {f.event_id: f for f in summary.falls}
        acc.threshold_deg = summary.threshold_deg
        acc.updated_s = summary.updated_s
        return acc


def _zeros(n: int) -> array[float]:
    return array("d", bytes(8 * n))
