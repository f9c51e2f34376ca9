"""What the physiotherapist sees: the ``watch`` terminal view, ``status``,
and the web dashboard (``physio.dashboard``). Imports only ``alerts``.
"""

from typing import TYPE_CHECKING

from common.lazy import lazy_exports

if TYPE_CHECKING:
    from physio.status import collect_statuses, format_statuses
    from physio.watch import watch_live
    from physio.watch_view import WatchModel

__all__ = ["WatchModel", "collect_statuses", "format_statuses", "watch_live"]

# Each name's module is imported on first use (see common.lazy).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "collect_statuses": "status",
        "format_statuses": "status",
        "WatchModel": "watch_view",
        "watch_live": "watch",
    },
)
