"""A simulated posture wearable, exposed to the gateway as a bleak backend.

``load_scenario`` reads a scenario file (docs/scenarios.md);
``SimulatedWorld(scenario, seed=..., speed=...)`` runs it and offers
``world.scanner_backend`` / ``world.client_backend`` to pass as bleak's
``backend=``. The wearables speak the protocol of docs/protocol.md.
"""

from typing import TYPE_CHECKING

from common.lazy import lazy_exports

if TYPE_CHECKING:
    from simulator.config import (
        Mounting,
        Patient,
        Scenario,
        SensorErrors,
        WearableConfig,
        WearableModel,
    )
    from simulator.demo import builtin_scenario_path, builtin_scenarios, demo_scenario
    from simulator.emissions import WearableStats
    from simulator.loader import load_scenario, parse_scenario
    from simulator.sensor import mounting_rotation
    from simulator.trajectory import FallTruth, inclinations_deg, posture_rotation
    from simulator.truth import SampleBlock, Truth
    from simulator.wearable import SimulatedWearable
    from simulator.world import SimulatedWorld, WearableStatus, WorldState

__all__ = [
    "FallTruth",
    "Mounting",
    "Patient",
    "SampleBlock",
    "Scenario",
    "SensorErrors",
    "SimulatedWearable",
    "SimulatedWorld",
    "Truth",
    "WearableConfig",
    "WearableModel",
    "WearableStats",
    "WearableStatus",
    "WorldState",
    "builtin_scenario_path",
    "builtin_scenarios",
    "demo_scenario",
    "inclinations_deg",
    "load_scenario",
    "mounting_rotation",
    "parse_scenario",
    "posture_rotation",
]

# Each name's module is imported on first use (see common.lazy).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Mounting": "config",
        "Patient": "config",
        "Scenario": "config",
        "SensorErrors": "config",
        "WearableConfig": "config",
        "WearableModel": "config",
        "builtin_scenario_path": "demo",
        "builtin_scenarios": "demo",
        "demo_scenario": "demo",
        "WearableStats": "emissions",
        "load_scenario": "loader",
        "parse_scenario": "loader",
        "mounting_rotation": "sensor",
        "FallTruth": "trajectory",
        "inclinations_deg": "trajectory",
        "posture_rotation": "trajectory",
        "SampleBlock": "truth",
        "Truth": "truth",
        "SimulatedWearable": "wearable",
        "SimulatedWorld": "world",
        "WearableStatus": "world",
        "WorldState": "world",
    },
)
