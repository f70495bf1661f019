"""The frames a client sends on the market channel: the subscription, then operation frames."""

from __future__ import annotations

from typing import Any

import orjson


def subscription_frame(tokens: list[str], custom_features: bool) -> str:
    """The first frame on a new socket: its tokens, with their initial dump of books."""
    return orjson.dumps(
        {
            "assets_ids": tokens,
            "type": "market",
            "initial_dump": True,
            "custom_feature_enabled": custom_features,
        }
    ).decode()


def operation_frame(operation: str, tokens: list[str], custom_features: bool | None) -> str:
    """An ``operation`` (``subscribe`` or ``unsubscribe``) on an open socket; None leaves the features out."""
    body: dict[str, Any] = {"assets_ids": tokens, "operation": operation}
    if custom_features is not None:
        body["custom_feature_enabled"] = custom_features
    return orjson.dumps(body).decode()
