"""scripts/broker_check.py, the pre-go-live check of a site's broker, on a real mosquitto."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from brokers import MosquittoBroker

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "broker_check.py"


@pytest.mark.timeout(90)
async def test_broker_check_passes_on_mosquitto(broker: MosquittoBroker) -> None:
    if not isinstance(broker, MosquittoBroker):
        pytest.skip("needs mosquitto")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        broker.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 80)
    text = out.decode()
    assert process.returncode == 0, text + err.decode()[-2000:]
    assert text.count("PASS") == 4 and "FAIL" not in text
    assert "5  MQTT version used by the gateway" in text
