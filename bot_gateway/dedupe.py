"""De-duplication of provider redeliveries across gateways.

A provider that misses our 200 in time (or retries on its own schedule) sends the same message
again, and with several gateways the copy may land on another one. With Redis
(``PARLEY_REDIS__URL``), before a webhook message's turn starts, ``SET
parley:dedupe:{channel_id}:{message_id} 1 NX EX 86400`` claims it: the first delivery runs, a
copy within a day is dropped (logged ``webhook.duplicate``, counted) and the provider still gets
its normal 200. If Redis cannot be reached the webhook answers ``503 unavailable`` naming Redis,
so the provider delivers it again later (nothing is lost, nothing runs twice). Messages
without a provider id are never dropped. Without Redis nothing is claimed here; the tracker's
``seen`` ids (``bot_gateway.conversations.runtime``) drop a redelivery in either mode, as a
second line.
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.base import InboundMessage
from core.logging import log_event
from core.metrics import counters
from core.redis import KEY_PREFIX, redis_errors, sync_client
from core.settings import RedisSettings

__all__ = ["KEEP_S", "first_deliveries"]

KEEP_S = 86_400
"""Seconds a delivered message id is remembered."""


def _key(channel_id: str, message_id: str) -> str:
    return f"{KEY_PREFIX}dedupe:{channel_id}:{message_id}"


def first_deliveries(
    redis: RedisSettings,
    *,
    channel_id: str,
    channel_type: str,
    messages: Sequence[InboundMessage],
) -> list[InboundMessage]:
    """The ``messages`` of one webhook call not delivered before (all of them without Redis);
    claims them in one transaction, so a failed call claims none (``Unavailable``)."""
    if redis.url is None:
        return list(messages)
    ided = [m for m in messages if m.message_id is not None]
    if not ided:
        return list(messages)
    with redis_errors(redis.url, "dropping providers' redeliveries"):
        pipe = sync_client(redis).pipeline(transaction=True)
        for m in ided:
            pipe.set(_key(channel_id, str(m.message_id)), 1, nx=True, ex=KEEP_S)
        claimed = dict(zip((id(m) for m in ided), pipe.execute(), strict=True))
    fresh = []
    for m in messages:
        if claimed.get(id(m), True):
            fresh.append(m)
            continue
        counters.incr("webhook.duplicate", channel=channel_type)
        log_event("webhook.duplicate", channel=channel_id, message_id=m.message_id)
    return fresh
