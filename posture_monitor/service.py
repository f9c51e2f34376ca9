"""``posture-monitor run``: the production gateway, wired to the broker.

On real hardware the gateway uses bleak's platform backend; with
``--simulate SCENARIO.toml`` the same gateway runs over the simulator's bleak
backend, so there is no code path that exists only for the simulator.

With more than one process (``--processes`` or the config's
``ble.processes``; ``device_gateway.shards``) the allow-list is split into
shards, each served by a worker process running :func:`serve` for its shard
(and simulating only its shard's wearables); with one, everything runs in
this process as it always did.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import logging
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

from alerts import AlertPublisher, MqttSettings
from common.errors import ConfigError, PostureMonitorError
from common.shutdown import run_until_terminated
from device_gateway import Gateway, GatewayConfig
from device_gateway.config import BrokerConfig
from device_gateway.shards import (
    EXIT_PERMANENT,
    Shard,
    ShardProcesses,
    process_count,
    shards,
    warn_of_leftover_outboxes,
)

__all__ = ["configure_parser", "mqtt_settings", "run", "serve"]

_log = logging.getLogger(__name__)


def mqtt_settings(
    broker: BrokerConfig, url: str | Sequence[str] | None = None, *, insecure: bool = False
) -> MqttSettings:
    """MQTT settings from the config's [broker] table; ``url`` (one URL, a
    comma-separated list or a sequence of them) overrides its addresses.

    An override never silently removes the TLS the config set, and a
    password never crosses plain TCP to another machine, unless
    ``insecure`` (then it is logged as a warning).

    Raises:
        ConfigError: either of those without ``insecure``, or a bad URL.
    """
    config_tls = (
        MqttSettings.from_urls(broker.all_urls).tls
        or broker.ca_file is not None
        or broker.cert_file is not None
    )
    if url and config_tls and not MqttSettings.from_urls(url).tls:
        if not insecure:
            raise ConfigError(
                "the config's [broker] uses TLS but --broker gives a plain mqtt:// URL, which "
                "would send without it: give mqtts://HOST:PORT (the config's CA and client "
                "certificate still apply), or add --insecure to drop TLS on purpose"
            )
        _log.warning("--broker drops the TLS the config sets (--insecure)")
        broker = dataclasses.replace(broker, ca_file=None, cert_file=None, key_file=None)
    overrides = {
        "username": broker.username,
        "password": broker.password,
        "ca_file": broker.ca_file,
        "cert_file": broker.cert_file,
        "key_file": broker.key_file,
    }
    # Only what the config sets overrides the URL (which may carry a user).
    settings = MqttSettings.from_urls(
        url or broker.all_urls,
        protocol=broker.protocol,
        **{name: value for name, value in overrides.items() if value is not None},
    )
    settings.check_transport(insecure=insecure)
    return settings


async def serve(
    config: GatewayConfig,
    settings: MqttSettings,
    *,
    scenario: Path | None = None,
    seed: int = 0,
    speed: float = 1.0,
    shard: Shard | None = None,
) -> None:
    """Run the gateway until cancelled, on real BLE or on a simulated scenario.

    ``shard``: this process serves one shard (``config`` is its config), and
    simulates only the scenario's wearables of that shard.
    """
    async with AsyncExitStack() as stack:
        scanner_backend = client_backend = None
        if scenario is not None:
            from simulator import SimulatedWorld, load_scenario

            ward = load_scenario(scenario)
            if shard is not None:
                ward = dataclasses.replace(
                    ward,
                    patients=tuple(p for p in ward.patients if shard.holds(p.wearable.address)),
                )
            world = await stack.enter_async_context(SimulatedWorld(ward, seed=seed, speed=speed))
            scanner_backend, client_backend = world.scanner_backend, world.client_backend
        publisher = await stack.enter_async_context(
            AlertPublisher(
                settings,
                gateway_id=config.gateway_id,
                topic_root=config.topic_root,
                outbox_path=config.outbox_path,
            )
        )
        gateway = Gateway(
            config, publisher, scanner_backend=scanner_backend, client_backend=client_backend
        )
        await gateway.run()


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "A service: it never gives up. A broker that is down (at start or later) and a "
        "wearable that is away are retried with backoff until you stop it with Ctrl-C or "
        "SIGTERM; meanwhile events wait in the on-disk outbox. It logs its start, links "
        "and events at info level (-v for debug). Exit status: 0 when stopped, 2 on a bad "
        "config or no Bluetooth adapter."
    )
    parser.add_argument("--config", required=True, type=Path, help="gateway config (TOML)")
    parser.add_argument(
        "--simulate",
        type=Path,
        metavar="SCENARIO.toml",
        help="run over simulated wearables from this scenario instead of real BLE",
    )
    parser.add_argument(
        "--broker",
        action="append",
        metavar="URL",
        help="override the config's broker URL(s); repeat (or comma-separate) for a cluster",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow a password over plain mqtt:// to another machine, and --broker "
        "mqtt:// to drop the TLS the config sets (logged as a warning)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="spread the wearables over N gateway processes (default: the config's "
        "ble.processes, else one per 1,000 wearables up to the number of cores)",
    )
    parser.add_argument("--seed", type=int, default=0, help="simulation seed (with --simulate)")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="simulation speed factor (with --simulate)"
    )


def run(args: argparse.Namespace) -> int:
    config = GatewayConfig.load(args.config)
    settings = mqtt_settings(config.broker, args.broker, insecure=args.insecure)
    processes = process_count(config, args.processes)
    warn_of_leftover_outboxes(config, processes)
    if processes > 1:
        parts = shards(config, processes)
        worker = functools.partial(
            _serve_shard, settings, args.simulate, args.seed, args.speed, logging.root.level
        )
        return ShardProcesses(parts, worker).run()
    try:
        # SIGTERM (systemd's stop) unwinds like Ctrl-C: wearables disconnected,
        # the outbox flushed within its grace, "offline" published, exit 0.
        _result, terminated = asyncio.run(
            run_until_terminated(
                serve(config, settings, scenario=args.simulate, seed=args.seed, speed=args.speed)
            )
        )
        if terminated:
            _log.info("stopped by SIGTERM")
    except KeyboardInterrupt:
        _log.info("stopped by Ctrl-C")
    return 0


def _serve_shard(
    settings: MqttSettings,
    scenario: Path | None,
    seed: int,
    speed: float,
    log_level: int,
    shard: Shard,
) -> int:
    """A worker process: serve ``shard`` until SIGTERM; returns the exit status.

    0 when stopped; 2 (the CLI's status for a user's error) when the service
    raised one of its own errors (bad config, no Bluetooth), which a restart
    cannot mend. A bug raises, with its traceback, and the parent restarts
    the worker.
    """
    # A new process: the CLI's logging is not inherited. Each line names the shard.
    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s %(levelname)s [{shard.id}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        _result, terminated = asyncio.run(
            run_until_terminated(
                serve(
                    shard.config, settings, scenario=scenario, seed=seed, speed=speed, shard=shard
                )
            )
        )
    except (PostureMonitorError, BaseExceptionGroup) as exc:
        from posture_monitor.cli import own_error

        ours = own_error(exc)
        if ours is None:
            raise
        print(f"posture-monitor run [{shard.id}]: error: {ours}", file=sys.stderr)
        return EXIT_PERMANENT
    if terminated:
        _log.info("stopped by SIGTERM")
    return 0
