"""What the physiotherapist sees: the ``watch`` terminal view, ``status``,
and the web dashboard (``physio.dashboard``). Imports only ``alerts``."""

from physio.status import collect_statuses, format_statuses
from physio.watch import WatchModel, watch_live

__all__ = ["WatchModel", "collect_statuses", "format_statuses", "watch_live"]
