"""The physiotherapist's terminal views: ``watch`` and ``status``."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from brokers import HANG_S, EmbeddedTestBroker, MosquittoBroker, free_port

from alerts import (
    Activity,
    AlertEvent,
    AlertPublisher,
    EventType,
    GatewayState,
    GatewayStatus,
    Message,
    MqttClient,
    PatientState,
    Topics,
)
from physio import WatchModel, watch_live
from physio import status as status_cli
from physio import watch as watch_module

T0 = datetime(2026, 11, 24, 8, 15, 0, tzinfo=UTC)
TOPICS = Topics()
AnyBroker = MosquittoBroker | EmbeddedTestBroker


def msg(topic: str, payload: bytes, retain: bool = False) -> Message:
    return Message(topic, payload, 1, retain)


def state_msg(patient: str, **changes: object) -> Message:
    values: dict[str, object] = dict(
        patient_id=patient,
        gateway_id="ward-3",
        time=T0,
        flexion_deg=31.5,
        lateral_deg=-2.0,
        activity=Activity.UPRIGHT,
        slouching=True,
        device_connected=True,
        battery_pct=64,
        calibrated=True,
        slouch_threshold_deg=25.0,
    )
    values.update(changes)
    state = PatientState(**values)  # type: ignore[arg-type]
    return msg(TOPICS.state(patient), state.to_json(), retain=True)


def event_msg(event: AlertEvent) -> Message:
    return msg(TOPICS.events(event.patient_id), event.to_json())


def test_model_renders_patients_gateways_and_a_deduplicated_feed() -> None:
    model = WatchModel(TOPICS, clock=lambda: T0.timestamp() + 5)
    status = GatewayStatus("ward-3", GatewayState.ONLINE, T0, {"events_pending": 0})
    assert model.handle(msg(TOPICS.status("ward-3"), status.to_json(), retain=True))
    assert model.handle(state_msg("p-001"))
    assert model.handle(
        state_msg("p-002", slouching=False, activity="walking", flexion_deg=None, battery_pct=None)
    )
    slouch = AlertEvent(EventType.SLOUCH_STARTED, "p-001", "ward-3", T0, flexion_deg=31.5)
    fall = AlertEvent(
        EventType.FALL_DETECTED,
        "p-002",
        "ward-3",
        T0 + timedelta(seconds=1),
        flexion_deg=78.1,
        details={"peak_acc_g": 5.1},
    )
    assert model.handle(event_msg(slouch))
    assert model.handle(event_msg(fall))
    assert not model.handle(event_msg(fall))  # QoS 1 duplicate: shown once
    screen = model.render()
    assert "p-001" in screen and "p-002" in screen
    row1 = next(line for line in screen.splitlines() if line.startswith("p-001"))
    assert "online" in row1 and "+31.5°" in row1 and "64%" in row1 and "YES" in row1
    row2 = next(line for line in screen.splitlines() if line.startswith("p-002"))
    assert "walking" in row2 and " - " in row2  # no flexion, battery unknown
    feed = screen.split("ALERTS")[1].splitlines()[1:]
    assert "FALL DETECTED" in feed[0] and "HIGH" in feed[0] and "impact 5.1 g" in feed[0]
    assert "SLOUCH STARTED" in feed[1]
    assert screen.count("FALL DETECTED") == 1 and model.duplicates == 1
    assert "1 duplicate event(s) suppressed" in screen
    colored = model.render(color=True)
    assert "\x1b[1;97;41m" in colored  # the fall is highlighted


def test_cancelled_and_acknowledged_falls_drop_below_open_ones() -> None:
    model = WatchModel(TOPICS)
    first = AlertEvent(EventType.FALL_DETECTED, "p-1", "gw", T0)
    second = AlertEvent(EventType.FALL_DETECTED, "p-2", "gw", T0 + timedelta(seconds=5))
    third = AlertEvent(EventType.FALL_DETECTED, "p-3", "gw", T0 + timedelta(seconds=6))
    cancel = AlertEvent(EventType.FALL_CANCELLED, "p-2", "gw", T0 + timedelta(seconds=9))
    for event in (first, second, third, cancel):
        model.handle(event_msg(event))
    ack = {
        "event_id": third.event_id,
        "action": "acknowledged",
        "by": "physio-anna",
        "time": "2026-11-24T08:16:00.000Z",
    }
    assert model.handle(msg(TOPICS.acks("p-3"), json.dumps(ack).encode()))
    feed = model.render().split("ALERTS")[1].splitlines()[1:]
    assert "p-1" in feed[0] and "CANCELLED" not in feed[0]  # the only open fall leads
    assert any("p-2" in line and "(CANCELLED)" in line for line in feed)
    assert any("p-3" in line and "acknowledged by physio-anna" in line for line in feed)


@pytest.mark.parametrize(
    "payload", [b"not json", b"{}", b'{"type": "fall_detected"}', b'{"patient_id": "p/1"}']
)
def test_malformed_messages_are_counted_not_fatal(payload: bytes) -> None:
    model = WatchModel(TOPICS)
    for topic in (
        TOPICS.events("p-1"),
        TOPICS.state("p-1"),
        TOPICS.status("gw"),
        TOPICS.acks("p-1"),
    ):
        assert not model.handle(msg(topic, payload))
    assert model.malformed >= 3
    assert not model.handle(msg("other/topic", b"x")) and model.ignored == 1
    assert "bad message(s) dropped" in model.render()


def test_plain_lines_report_changes_not_every_angle() -> None:
    model = WatchModel(TOPICS)
    model.handle(state_msg("p-1"))
    model.handle(state_msg("p-1", flexion_deg=33.0))  # angle only: no new line
    model.handle(state_msg("p-1", slouching=False))
    lines = model.take_lines()
    assert len(lines) == 2 and "slouching=yes" in lines[0] and "slouching=no" in lines[1]
    assert model.take_lines() == []


async def test_watch_shows_live_states_and_events_from_a_real_broker(broker: AnyBroker) -> None:
    out = io.StringIO()
    async with AlertPublisher(broker.settings(), gateway_id="ward-3", state_interval_s=0.05) as pub:
        await pub.publish_event(AlertEvent(EventType.DEVICE_CONNECTED, "p-001", "ward-3", T0))
        async with asyncio.timeout(HANG_S):
            while pub.metrics.events_published < 1:  # delivered before anyone watched
                await asyncio.sleep(0.02)
        task = asyncio.create_task(
            watch_live(broker.settings(), out=out, tty=False)  # cancelled below
        )
        async with asyncio.timeout(HANG_S):
            while "GATEWAY ward-3 ONLINE" not in out.getvalue():  # retained status seen
                await asyncio.sleep(0.02)
        fall = AlertEvent(
            EventType.FALL_DETECTED,
            "p-001",
            "ward-3",
            datetime.now(UTC),
            flexion_deg=80.0,
            details={"peak_acc_g": 4.8},
        )
        await pub.publish_event(fall)
        pub.update_state(
            PatientState(
                "p-001",
                "ward-3",
                datetime.now(UTC),
                80.0,
                3.0,
                Activity.LYING,
                False,
                True,
                55,
                True,
                25.0,
            )
        )
        async with MqttClient(broker.settings()) as raw:  # a redelivered duplicate
            await raw.publish(TOPICS.events("p-001"), fall.to_json(), qos=1)
        async with asyncio.timeout(HANG_S):
            while "activity=lying" not in out.getvalue():
                await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    text = out.getvalue()
    assert text.count("FALL DETECTED") == 1 and "impact 4.8 g" in text
    assert "DEVICE CONNECTED" not in text  # sent before the watcher subscribed
    assert "\x1b[" not in text  # plain output when not a terminal


async def test_watch_tty_mode_redraws_with_ansi(broker: AnyBroker) -> None:
    out = io.StringIO()
    async with AlertPublisher(broker.settings(), gateway_id="ward-3", state_interval_s=0.05) as pub:
        pub.update_state(
            PatientState(
                "p-042",
                "ward-3",
                datetime.now(UTC),
                28.0,
                1.0,
                Activity.UPRIGHT,
                True,
                True,
                90,
                True,
                25.0,
            )
        )
        async with asyncio.timeout(HANG_S):  # retained by now
            while pub.metrics.states_published < 1:
                await asyncio.sleep(0.02)
        task = asyncio.create_task(watch_live(broker.settings(), out=out, tty=True, refresh_hz=10))
        async with asyncio.timeout(HANG_S):  # redrawn several times, with the patient
            while out.getvalue().count("\x1b[H") < 3 or "p-042" not in out.getvalue():
                await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    text = out.getvalue()
    assert "p-042" in text and "YES" in text and text.endswith("\x1b[?25h\n")


def _args(broker_url: str, **extra: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    status_cli.configure_parser(parser)
    args = parser.parse_args(["--broker", broker_url])
    for key, value in extra.items():
        setattr(args, key, value)
    return args


def test_unreachable_broker_exits_2_with_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"mqtt://user:hunter2@127.0.0.1:{free_port()}"
    parser = argparse.ArgumentParser()
    watch_module.configure_parser(parser)
    args = parser.parse_args(["--broker", url, "--duration", "1", "--connect-timeout", "0.5"])
    code = watch_module.run(args)
    err = capsys.readouterr().err
    assert code == 2
    # A password in the URL is warned about, as by every physio command; then the error.
    warning, error = err.splitlines()
    assert warning.startswith("warning: a password in --broker is visible to every user")
    assert (
        error.startswith("posture-monitor watch: error: cannot connect") and "Traceback" not in err
    )
    assert "hunter2" not in err
    assert status_cli.run(_args(url, wait=0.2, connect_timeout=0.5)) == 2
    assert watch_module.run(parser.parse_args(["--broker", "http://x"])) == 2


async def test_status_prints_retained_gateway_status_and_metrics(broker: AnyBroker) -> None:
    async with AlertPublisher(broker.settings(), gateway_id="ward-3") as pub:
        pub.set_device_metrics("p-001", {"packets_dropped": 2, "malformed": 0})
        await pub.publish_event(AlertEvent(EventType.BATTERY_LOW, "p-001", "ward-3", T0))
        async with asyncio.timeout(HANG_S):
            while pub.metrics.events_published < 1:
                await asyncio.sleep(0.02)
        found = await status_cli.collect_statuses(
            broker.settings(), gateway_id="ward-3", wait_s=HANG_S
        )
        assert found["ward-3"].online
        assert found["ward-3"].metrics["connected"] is True
        online = _args(broker.url, gateway="ward-3", wait=HANG_S)
        assert await asyncio.to_thread(status_cli.run, online, io.StringIO()) == 0
    # After a clean exit: offline, with the final metrics, read by the CLI.
    out = io.StringIO()
    code = await asyncio.to_thread(status_cli.run, _args(broker.url, wait=3.0), out)
    table = out.getvalue()
    # Every gateway offline: the table says so and the exit status is not 0.
    assert code == 3 and "ward-3" in table and "OFFLINE" in table
    assert "p-001: malformed=0, packets_dropped=2" in table
    out = io.StringIO()
    code = await asyncio.to_thread(
        status_cli.run, _args(broker.url, json=True, gateway="ward-3"), out
    )
    report = json.loads(out.getvalue())
    assert code == 3 and report[0]["status"] == "offline"
    assert report[0]["metrics"]["events_published"] == 1
    code = await asyncio.to_thread(
        status_cli.run, _args(broker.url, gateway="ward-9", wait=0.3), io.StringIO()
    )
    assert code == 1


def open_falls_msg(patient: str, *falls: AlertEvent, retain: bool = True) -> Message:
    """The gateway's ``.../alerts`` list of a patient's open falls (retained: replayed
    at subscription; not: published live while the view runs)."""
    body = {
        "patient_id": patient,
        "gateway_id": "ward-3",
        "time": "2026-11-24T08:20:00.000Z",
        "open": [json.loads(f.to_json()) for f in falls],
    }
    return msg(f"{TOPICS.root}/patients/{patient}/alerts", json.dumps(body).encode(), retain)


def test_falls_open_before_start_are_restored_and_ring_the_bell() -> None:
    model = WatchModel(TOPICS)
    old = AlertEvent(EventType.FALL_DETECTED, "p-7", "ward-3", T0, flexion_deg=70.0)
    assert model.handle(open_falls_msg("p-7", old))
    assert model.take_bells() == 1 and model.take_bells() == 0
    assert not model.handle(open_falls_msg("p-7", old))  # the same list again: nothing new
    assert not model.handle(event_msg(old)) and model.take_bells() == 0  # seen already
    feed = model.render().split("ALERTS")[1].splitlines()[1:]
    assert "FALL DETECTED" in feed[0] and "RESTORED" in feed[0]
    assert any(line.startswith("RESTORED ") for line in model.take_lines())
    # A dashboard escalates it: the bell again, and the feed says so.
    escalation = {"event_id": old.event_id, "level": 1, "time": "2026-11-24T08:22:00.000Z"}
    topic = f"{TOPICS.root}/patients/p-7/escalations"
    assert model.handle(msg(topic, json.dumps(escalation).encode()))
    assert model.take_bells() == 1
    assert "ESCALATED level 1" in model.render()
    assert not model.handle(msg(topic, json.dumps(escalation).encode()))  # no second bell
    # Lists of another patient's falls, or not lists at all, are counted, not shown.
    assert not model.handle(open_falls_msg("p-8", old))
    assert not model.handle(msg(f"{TOPICS.root}/patients/p-8/alerts", b'{"open": 3}'))
    assert model.malformed == 2 and model.take_bells() == 0


def test_a_fall_listed_live_before_its_event_is_news_not_restored() -> None:
    # The gateway publishes the patient's open-falls list as it queues the fall
    # event, so a running view may get the list first: that fall is new.
    model = WatchModel(TOPICS)
    fall = AlertEvent(EventType.FALL_DETECTED, "p-7", "ward-3", T0, flexion_deg=70.0)
    assert model.handle(open_falls_msg("p-7", fall, retain=False))
    assert not model.handle(event_msg(fall))  # the event itself: seen already
    assert model.take_bells() == 1
    feed = model.render().split("ALERTS")[1].splitlines()[1:]
    assert "FALL DETECTED" in feed[0] and "RESTORED" not in feed[0]


def test_open_falls_are_never_trimmed_from_the_feed() -> None:
    model = WatchModel(TOPICS, max_events=3)
    fall = AlertEvent(EventType.FALL_DETECTED, "p-1", "gw", T0)
    model.handle(event_msg(fall))
    for n in range(10):
        model.handle(
            event_msg(
                AlertEvent(EventType.SLOUCH_STARTED, "p-2", "gw", T0 + timedelta(seconds=n + 1))
            )
        )
    assert len(model.feed) == 3 and model.feed[0].event.event_id == fall.event_id


async def test_watch_rings_for_a_restored_and_a_live_fall(broker: AnyBroker) -> None:
    out = io.StringIO()
    old = AlertEvent(EventType.FALL_DETECTED, "p-009", "ward-3", datetime.now(UTC))
    async with MqttClient(broker.settings()) as raw:
        retained = open_falls_msg("p-009", old)
        await raw.publish(retained.topic, retained.payload, qos=1, retain=True)
        task = asyncio.create_task(
            watch_live(broker.settings(), out=out, tty=True, refresh_hz=20, duration_s=10.0)
        )
        async with asyncio.timeout(5):
            while "RESTORED" not in out.getvalue():
                await asyncio.sleep(0.02)
        assert out.getvalue().count("\a") == 1
        live = AlertEvent(EventType.FALL_DETECTED, "p-010", "ward-3", datetime.now(UTC))
        await raw.publish(TOPICS.events("p-010"), live.to_json(), qos=1)
        async with asyncio.timeout(5):
            while out.getvalue().count("\a") < 2:
                await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
