"""Conversations across gateways, on Redis (``PARLEY_REDIS__URL``).

**Locks.** A conversation's messages run one at a time on every gateway: inside the runtime's
asyncio lock (FIFO within a process) a turn takes ``parley:lock:conv:{key}`` with a random
token, for a lease of ``settings.redis.lock_lease_s`` (a Lua script: set when the key is free,
or when it already holds this token, so a retry whose first reply was lost does not wait on
its own lock; a turn cancelled while taking it deletes it again, best effort). A background
task renews the lease every third of it (compare-and-extend, a Lua script), and the lock is
released with compare-and-delete, so a gateway only ever extends or deletes its own lock. A
dead gateway's lock expires after the lease. Waiting polls with a short backoff (5 ms doubling
to 50 ms) for up to ``settings.redis.lock_wait_s``; then the message is refused with ``409
conflict`` ("the conversation is busy", ``Retry-After``): Redis is up, one conversation is
stuck, other conversations are fine, so it is not a ``503``. Redis unreachable while taking
the lock is ``503 unavailable`` naming Redis (``core.redis.redis_errors``).

**Fencing.** Right before a turn saves, ``Fence.check`` runs the same compare-and-extend: it
fails (``409``, nothing saved) when the lock is no longer this turn's (the lease ran out while
the gateway stalled, and another gateway may have taken it), and on success the lease has just
been renewed to its full length. The residual risk is a save (one database transaction) that
takes longer than a whole lease after that check; with the 30 s default it is not a practical
one. A check that cannot reach Redis is ``503``, and nothing is saved.

**Fan-out.** ``RedisFanout`` is the ``Hub``'s transport: every frame a gateway publishes goes
to its local listeners (the ``Hub``) and, as ``{"origin", "topic", "frame"}`` JSON, to channel
``parley:hub:{topic}``. A subscriber task holds one pub/sub connection subscribed to the topics
that have listeners here (subscribed on the first, unsubscribed after the last) and hands
frames of other origins to the hub. Publishing never raises and never blocks the caller: a
publisher task drains an outbox and logs what Redis refused. When Redis goes away the
subscriber reconnects with backoff (50 ms doubling to 1 s) and subscribes every topic again;
frames published while it was away are lost (the next one arrives). Subscribing,
unsubscribing and closing the connection take turns (one asyncio lock), and the connection is
shared with the subscriber only once its first subscription is confirmed, so a pub/sub
connection is never opened twice nor used after it is closed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from bot_gateway.conversations.sharing import Deliver, Fence
from core.errors import Conflict
from core.logging import log_event
from core.metrics import counters
from core.redis import COMPARE_AND_DELETE, KEY_PREFIX, async_client, describe, redis_errors
from core.settings import RedisSettings

__all__ = ["LOCK_PREFIX", "TOPIC_PREFIX", "RedisFanout", "RedisLocks", "RedisSharing"]

LOCK_PREFIX = f"{KEY_PREFIX}lock:conv:"
TOPIC_PREFIX = f"{KEY_PREFIX}hub:"
LOCK_WHAT = "the conversation lock"
FIRST_POLL_S, LAST_POLL_S = 0.005, 0.05
RECONNECT_S, RECONNECT_MAX_S = 0.05, 1.0
OUTBOX = 10_000  # frames waiting for Redis before new ones are dropped (and logged)

_TAKE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


def _fail_fast(client: Any) -> Any:
    """One quick retry instead of redis-py's ten with backoff: a message waiting on a dead
    Redis should hear ``503`` in milliseconds, and the subscriber keeps its own backoff."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client.set_retry(Retry(NoBackoff(), 1))
    return client


class _Lease:
    """One holding of a conversation lock: renewed in the background while the turn runs."""

    def __init__(self, locks: RedisLocks, name: str, token: bytes) -> None:
        self.locks, self.name, self.token = locks, name, token
        self.lost = False
        self.renewer: asyncio.Task[None] | None = None

    async def extend(self) -> bool:
        ms = int(self.locks.lease_s * 1000)
        return bool(await self.locks.extend_script(keys=[self.name], args=[self.token, ms]))

    async def renew(self) -> None:
        while not self.lost:
            await asyncio.sleep(self.locks.lease_s / 3)
            try:
                if not await self.extend():
                    self.lost = True
                    log_event("conversation.lock_lost", lock=self.name)
                    counters.incr("conversation.lock_lost")
            except Exception as e:  # noqa: BLE001 - Redis down: try again; check() decides
                log_event("conversation.lock_renew_failed", lock=self.name, error=repr(e))

    async def check(self) -> None:
        if not self.lost:
            with redis_errors(self.locks.url, LOCK_WHAT):
                self.lost = not await self.extend()
        if self.lost:
            raise Conflict(
                "this message took longer than the conversation lock's lease "
                f"({self.locks.lease_s:g} s) and another message of the conversation may have "
                "run meanwhile, so nothing was saved; send it again (operators: raise "
                "PARLEY_REDIS__LOCK_LEASE_S if turns are this slow)",
                retry_after=1,
            )


class RedisLocks:
    """Conversation locks with a lease (see the module docstring)."""

    def __init__(self, client: Any, settings: RedisSettings) -> None:
        self.client = client
        self.url = settings.url
        self.lease_s = settings.lock_lease_s
        self.wait_s = settings.lock_wait_s
        self.take_script = client.register_script(_TAKE)
        self.extend_script = client.register_script(_EXTEND)
        self.release_script = client.register_script(COMPARE_AND_DELETE)
        self._releasing: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[Fence]:
        lease = await self.acquire(LOCK_PREFIX + key)
        lease.renewer = asyncio.create_task(lease.renew())
        try:
            yield lease
        finally:
            lease.renewer.cancel()
            with suppress(asyncio.CancelledError):
                await lease.renewer
            await self.release(lease)

    async def acquire(self, name: str) -> _Lease:
        token = uuid.uuid4().hex.encode()
        ms = int(self.lease_s * 1000)
        deadline = time.monotonic() + self.wait_s
        pause = FIRST_POLL_S
        lease = _Lease(self, name, token)
        try:
            with redis_errors(self.url, LOCK_WHAT):
                while not await self.take_script(keys=[name], args=[token, ms]):
                    if time.monotonic() + pause > deadline:
                        counters.incr("conversation.lock_timeout")
                        raise Conflict(
                            f"the conversation is busy: one of its messages has been running "
                            f"for more than {self.wait_s:g} s on another gateway; try again in "
                            "a few seconds",
                            retry_after=max(1.0, self.lease_s / 3),
                        )
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, LAST_POLL_S)
        except asyncio.CancelledError:
            # the script may have run with its reply in flight: let go of what may be ours
            release = asyncio.create_task(self.release(lease))
            self._releasing.add(release)
            release.add_done_callback(self._releasing.discard)
            with suppress(asyncio.CancelledError):
                await asyncio.shield(release)
            raise
        return lease

    async def release(self, lease: _Lease) -> None:
        """Delete the lock if it is still this lease's; a Redis error is logged (the lock then
        expires after its lease)."""
        try:
            await self.release_script(keys=[lease.name], args=[lease.token])
        except Exception as e:  # noqa: BLE001 - the turn is saved; the lease ends the lock
            log_event("conversation.lock_release_failed", lock=lease.name, error=repr(e))


class RedisFanout:
    """The ``Hub``'s transport across gateways (see the module docstring)."""

    def __init__(self, client: Any, settings: RedisSettings) -> None:
        self.client = client
        self.where = describe(settings.url or "")  # no password: for logs
        self.ready_s = settings.socket_timeout_s
        self.origin = uuid.uuid4().hex  # this gateway (process and app)
        self.connected = False
        self.down = False  # Redis failed the subscriber, and it has not reconnected yet
        self._deliver: Deliver | None = None
        self._wanted: set[str] = set()  # topics with listeners here
        self._sent: set[str] = set()  # topics asked of the current connection
        self._confirmed: set[str] = set()  # topics Redis confirmed
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}
        self._outbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue(maxsize=OUTBOX)
        self._changed = asyncio.Event()
        self._pubsub: Any = None  # the subscriber's connection, once subscribed
        self._lock = asyncio.Lock()  # subscribe, unsubscribe and close take turns
        self._tasks: list[asyncio.Task[None]] = []

    # --- the HubTransport interface --------------------------------------------------------

    def attach(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def send(self, topic: str, frame: dict[str, Any]) -> None:
        try:
            payload = json.dumps({"origin": self.origin, "topic": topic, "frame": frame})
            self._outbox.put_nowait((TOPIC_PREFIX + topic, payload))
        except (TypeError, ValueError, asyncio.QueueFull) as e:
            counters.incr("hub.publish_dropped")
            log_event("hub.publish_dropped", topic=topic, error=repr(e))

    def watch(self, topic: str) -> None:
        self._wanted.add(topic)
        self._changed.set()

    def unwatch(self, topic: str) -> None:
        self._wanted.discard(topic)
        self._changed.set()

    async def ready(self, topic: str) -> None:
        # Wait (at most ready_s) for Redis to confirm the topic, also while the subscriber is
        # reconnecting: a socket opened just as Redis comes back would otherwise miss what other
        # gateways publish before its topic is subscribed. During an outage this delays a new
        # socket's welcome by ready_s; messages still answer (503 for what needs Redis).
        if topic in self._confirmed or topic not in self._wanted:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(topic, []).append(waiter)
        try:
            await asyncio.wait_for(waiter, self.ready_s)
        except TimeoutError:
            log_event("hub.subscribe_slow", topic=topic)
        finally:
            waiters = self._waiting.get(topic)
            if waiters is not None:
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    del self._waiting[topic]

    # --- the tasks -------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._publish(), name="hub-publish"),
            asyncio.create_task(self._listen(), name="hub-listen"),
            asyncio.create_task(self._sync(), name="hub-subscribe"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._pubsub is not None:
            await self._close(self._pubsub)

    async def _publish(self) -> None:
        while True:
            channel, payload = await self._outbox.get()
            try:
                await self.client.publish(channel, payload)
            except Exception as e:  # noqa: BLE001 - local delivery is done; log and go on
                counters.incr("hub.publish_failed")
                log_event("hub.publish_failed", channel=channel, error=repr(e))

    async def _listen(self) -> None:
        pause = RECONNECT_S
        control = f"{TOPIC_PREFIX}@{self.origin}"  # keeps the connection subscribed
        while True:
            pubsub = self.client.pubsub()
            try:
                async with self._lock:  # shared with _sync only once connected and subscribed
                    self._sent, self._confirmed = set(), set()
                    await pubsub.subscribe(control)
                    self._pubsub = pubsub
                self._changed.set()  # every topic again
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self.connected, self.down = True, False
                        pause = RECONNECT_S
                        self._handle(message)
            except asyncio.CancelledError:
                if pubsub is not self._pubsub:  # stopped while connecting (stop closes the other)
                    with suppress(Exception):
                        await pubsub.aclose()
                raise
            except Exception as e:  # noqa: BLE001 - Redis went away: reconnect
                if self.connected:
                    log_event("hub.disconnected", redis=self.where, error=repr(e))
                self.connected, self.down = False, True
                self._release_waiters()
                await self._close(pubsub)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RECONNECT_MAX_S)

    async def _sync(self) -> None:
        """Subscribe and unsubscribe the current connection to what has listeners here."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            async with self._lock:
                pubsub = self._pubsub
                if pubsub is None:  # not connected: _listen sets _changed once it is
                    continue
                add, drop = self._wanted - self._sent, self._sent - self._wanted
                try:
                    if add:
                        self._sent |= add
                        await pubsub.subscribe(*(TOPIC_PREFIX + t for t in add))
                    if drop:
                        self._sent -= drop
                        self._confirmed -= drop
                        await pubsub.unsubscribe(*(TOPIC_PREFIX + t for t in drop))
                except Exception as e:  # noqa: BLE001 - the listener reconnects, subscribes again
                    log_event("hub.subscribe_failed", redis=self.where, error=repr(e))

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = message.get("channel")
        name = channel.decode() if isinstance(channel, bytes) else str(channel)
        topic = name.removeprefix(TOPIC_PREFIX)
        if kind == "subscribe":
            self._confirmed.add(topic)
            for waiter in self._waiting.pop(topic, []):
                if not waiter.done():
                    waiter.set_result(None)
        elif kind == "unsubscribe":
            self._confirmed.discard(topic)
        elif kind == "message" and self._deliver is not None:
            try:
                body = json.loads(message["data"])
                if body["origin"] != self.origin:
                    self._deliver(body["topic"], body["frame"])
            except (ValueError, KeyError, TypeError) as e:
                log_event("hub.bad_frame", channel=name, error=repr(e))

    def _release_waiters(self) -> None:
        for waiters in self._waiting.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self._waiting.clear()

    async def _close(self, pubsub: Any) -> None:
        """Close ``pubsub`` (no longer the shared connection, if it was)."""
        async with self._lock:
            if self._pubsub is pubsub:
                self._pubsub = None
            with suppress(Exception):
                await pubsub.aclose()


class RedisSharing:
    """Locks and fan-out over one asyncio Redis client, owned by the app's event loop."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.client = _fail_fast(async_client(settings))
        self.locks = RedisLocks(self.client, settings)
        self.transport = RedisFanout(self.client, settings)

    async def start(self) -> None:
        self.transport.start()
        log_event("conversations.shared", redis=describe(self.settings.url or ""))

    async def stop(self) -> None:
        await self.transport.stop()
        with suppress(Exception):
            await self.client.aclose()
