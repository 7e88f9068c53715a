"""What the embedded server answers on GET (besides /healthz): plain functions of the path, so any
HTTP server can call them.

- `GET /v1/channels`: the channel-health feed for payment routers (detectors/channel_feed.py).
- `GET /v1/orders/{order_id}`: the order's trail, the documents `paywatch orders show --json`
  prints, for support tooling.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from paywatch.detectors.channel_feed import ChannelBoard, channels_reply
from paywatch.store import HistoryReader

ORDERS = "/v1/orders/"
TRAIL_VERSION = "1"


class Queries:
    def __init__(self, channels: ChannelBoard, history: HistoryReader) -> None:
        self.channels = channels
        self.history = history

    def get(self, target: str) -> tuple[int, dict[str, Any]]:
        path = urlsplit(target).path
        if path == "/v1/channels":
            return 200, channels_reply(self.channels)
        if path.startswith(ORDERS) and len(path) > len(ORDERS):
            order_id = unquote(path[len(ORDERS) :])
            trail = self.history.order_timeline(order_id)
            if not trail:
                return 404, {"error": f"no events stored for order {order_id}"}
            return 200, {"version": TRAIL_VERSION, "order_id": order_id, "trail": trail}
        return 404, {"error": f"no such endpoint {path}; GET /v1/channels or /v1/orders/{{order_id}}"}
