"""Publish a client's books on NATS JetStream and rebuild them exactly anywhere (``pip install 'pm_ws[nats]'``).

:class:`NatsPublisher` publishes what a :class:`~pm_ws.MarketClient` receives and does;
:class:`NatsConsumer` holds a :class:`~pm_ws.BookStore` equal to the publisher's, or with no row LIVE.
The wire format is in :mod:`pm_ws.bus.wire`. ``import pm_ws`` never imports this package (nor nats).
"""

from __future__ import annotations

from .connection import DEFAULT_NATS_URL, redact
from .consumer import CAUSE_BUS, CAUSE_PUBLISHER, NatsConsumer
from .publisher import NatsPublisher

__all__ = ["CAUSE_BUS", "CAUSE_PUBLISHER", "DEFAULT_NATS_URL", "NatsConsumer", "NatsPublisher", "redact"]
