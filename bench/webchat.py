"""A web chat gateway for the socket benches (bench/chat.py, bench/soak.py): the bot (inline
intents, reply-only flows) and the texts its conversations send, ``parley serve`` started with
an open-files limit high enough for thousands of sockets, the tallies of a socket's frames,
opening many sockets at a bounded concurrency and holding them idle with pings, and the
process facts (descriptors, CPU seconds) the tables show.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import resource
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.harness import (
    BenchError,
    check,
    parley_server,
)

FD_TARGET = 4096  # soft open-files limit wanted for the server and for this process
FD_SLACK = 200  # descriptors besides the sockets (database, logs, libraries)
READY_TIMEOUT_S = 600.0
POLL_S = 0.5
WELCOME_TIMEOUT_S = 30.0
PING_EVERY_S = 5.0
ERROR_SAMPLES = 5


# What the conversations say, in turn (each starts at its own place in the cycle), and the
# intent each text should be understood as. None of these texts is a training example.
EXPECTED_INTENT = {
    "hi": "greet",
    "where is my order?": "track_order",
    "thanks": "thanks",
    "what are your opening hours?": "hours",
    "bye": "goodbye",
}


TEXTS = tuple(EXPECTED_INTENT)
INTENTS = {
    "greet": [
        "hello",
        "hey there",
        "good morning",
        "hello, is anyone there?",
        "hi, I need some help",
        "hey",
        "good evening",
        "hiya",
    ],
    "track_order": [
        "track my parcel",
        "has my package shipped yet",
        "when will my order arrive",
        "I want to track my order",
        "where's my delivery",
        "what's the status of my order",
        "my parcel hasn't arrived",
        "where is my package",
    ],
    "thanks": [
        "thank you",
        "thanks a lot",
        "cheers",
        "much appreciated",
        "thank you so much",
        "great, thanks",
        "thx",
        "thanks for your help",
    ],
    "goodbye": [
        "goodbye",
        "see you later",
        "that's all, bye",
        "have a nice day",
        "bye bye",
        "talk to you later",
        "I'm done, goodbye",
        "see ya",
    ],
    "hours": [
        "when are you open",
        "are you open on sunday",
        "what time do you close",
        "opening times please",
        "when does customer service open",
        "are you open today",
        "what are your business hours",
        "what are your hours on saturday",
    ],
}


RESPONSES = {
    "greet": "Hi! I'm the Parcelly assistant.",
    "track_order": (
        "You can follow any order at https://shop.example.com/orders, or tell me its number "
        "(it looks like PX-123456)."
    ),
    "thanks": "You're welcome! Anything else?",
    "goodbye": "Goodbye, and thanks for shopping with Parcelly!",
    "hours": "We answer chats 24/7; the phone line is open Monday to Friday, 8:00-18:00.",
}


def bot_definition() -> dict[str, Any]:
    """The benchmark bot: inline intents, reply-only flows (greet answers with two messages),
    no actions, no handoff."""
    responses: dict[str, Any] = {
        f"utter_{intent}": [{"text": text}] for intent, text in RESPONSES.items()
    }
    responses["utter_greet"][0]["quick_replies"] = [
        {"title": "Track my order", "payload": "/track_order"},
        {"title": "Opening hours", "payload": "/hours"},
    ]
    responses["utter_help"] = [{"text": "I can track an order or tell you our opening hours."}]
    responses["utter_fallback"] = [{"text": "Sorry, I didn't get that. Could you rephrase?"}]
    flows: dict[str, Any] = {
        intent: {"intents": [intent], "steps": [{"reply": f"utter_{intent}"}]} for intent in INTENTS
    }
    flows["greet"]["steps"].append({"reply": "utter_help"})
    return {
        "name": "Chat bench bot",
        "description": "Reply-only flows for the web chat benchmark.",
        "nlu": {"intents": INTENTS, "threshold": 0.3},
        "responses": responses,
        "flows": flows,
        "fallback": {"responses": ["utter_fallback"], "handoff": False},
    }


@dataclass
class Tally:
    """What the conversations of one level saw (filled by many coroutines on one loop)."""

    reply_ms: list[float] = field(default_factory=list)
    done_ms: list[float] = field(default_factory=list)
    ping_ms: list[float] = field(default_factory=list)
    turns: int = 0  # all turns, warm-up included
    connect_errors: int = 0
    error_frames: int = 0
    timeouts: int = 0
    dropped: int = 0
    wrong_intent: int = 0
    samples: list[str] = field(default_factory=list)

    def note(self, kind: str, text: str) -> None:
        if len(self.samples) < ERROR_SAMPLES:
            self.samples.append(f"{kind}: {text[:300]}")


@dataclass(frozen=True)
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path


@dataclass(frozen=True)
class Chat:
    """Where the conversations connect."""

    ws_base: str  # ws://host:port/v1/bots/{bot_id}/ws?token=...
    compression: str | None  # "deflate" like browsers, or None

    def url(self, session: str) -> str:
        return f"{self.ws_base}&session={session}"


def fd_limit(needed: int) -> int:
    """Raise this process's soft open-files limit to at least ``FD_TARGET`` (the hard limit
    allowing); say clearly when ``needed`` descriptors cannot be had. Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, FD_TARGET)
    if hard != resource.RLIM_INFINITY and hard < want:
        print(
            f"NOTE: the hard open-files limit is {hard} (ulimit -Hn), under {FD_TARGET}; "
            f"the soft limit is raised to {hard} only"
        )
        want = hard
    if want != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < needed:
        print(
            f"WARNING: {needed} open files are needed here (sockets + {FD_SLACK}) but the limit "
            f"is {want}: expect connection errors. Raise the hard limit (as root: `ulimit -Hn "
            f"{FD_TARGET}`, or nofile in /etc/security/limits.conf) and run again."
        )
    return want


def _raise_nofile(soft: int) -> None:
    """``preexec_fn`` of the server: its own soft open-files limit (inherited limits aside)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def process_nofile(pid: int) -> str:
    """The soft open-files limit of a running process, from ``/proc``."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return line.split()[3]
    return "?"


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def run_server(
    workdir: Path, port: int, device: str, operator_token: str, nofile: int
) -> Iterator[Server]:
    """Start ``parley serve --no-demo`` on a fresh data dir; yield it; stop it."""
    log_path = workdir / "server.log"
    env = {
        "PARLEY_OPERATOR_TOKEN": operator_token,
        "PARLEY_QUEUE__THREADS": "1",
        "PARLEY_SERVING__DEVICE": device,
    }
    raise_nofile = functools.partial(_raise_nofile, nofile)
    with parley_server(workdir / "data", port, log_path, env, preexec_fn=raise_nofile) as (
        url,
        proc,
        startup,
    ):
        print(
            f"server up on {url} in {startup:.1f} s, pid {proc.pid}, "
            f"open-files limit {process_nofile(proc.pid)} (log: {log_path})",
            flush=True,
        )
        yield Server(url, proc, log_path)


def create_bot(url: str, api_key: str) -> tuple[str, float]:
    """Create the benchmark bot and wait until its NLU is trained: (bot id, seconds)."""
    t0 = time.perf_counter()
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=url, timeout=60.0, headers=headers) as client:
        bot = check(client.post("/v1/bots", json=bot_definition()), 201)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while bot["status"] == "training":
            if time.monotonic() > deadline:
                raise BenchError(f"bot {bot['id']} still training after {READY_TIMEOUT_S:.0f} s")
            time.sleep(POLL_S)
            bot = check(client.get(f"/v1/bots/{bot['id']}"), 200)
    if bot["status"] != "ready":
        raise BenchError(f"bot {bot['id']} is {bot['status']}: {bot.get('status_message')}")
    return str(bot["id"]), time.perf_counter() - t0


def session_id(tag: str, index: int) -> str:
    return f"{tag}-{index:05d}-{secrets.token_hex(6)}"


def frame_of(raw: str | bytes) -> dict[str, Any]:
    frame = json.loads(raw)
    if not isinstance(frame, dict):
        raise BenchError(f"the server sent a frame that is not a JSON object: {raw!r:.200}")
    return frame


async def hold_idle(
    ws: ClientConnection, end: float, timeout_s: float, tally: Tally, rng: random.Random
) -> None:
    """An idle visitor: an application ``ping`` every ``PING_EVERY_S`` until ``end``."""
    await asyncio.sleep(rng.uniform(0, PING_EVERY_S))
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            await ws.send('{"type": "ping"}')
            async with asyncio.timeout(timeout_s):
                while frame_of(await ws.recv()).get("type") != "pong":
                    pass
        except TimeoutError:
            tally.timeouts += 1
            tally.note("timeout", f"no pong within {timeout_s:.0f} s")
            continue
        except ConnectionClosed as e:
            tally.dropped += 1
            tally.note("dropped", f"socket closed: {e}")
            return
        tally.ping_ms.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(max(0.0, t0 + PING_EVERY_S - time.perf_counter()))


async def open_one(chat: Chat, session: str, tally: Tally) -> ClientConnection | None:
    """Connect and wait for ``welcome``; ``None`` (and a counted error) if that failed."""
    try:
        ws = await connect(
            chat.url(session),
            compression=chat.compression,
            open_timeout=WELCOME_TIMEOUT_S,
            ping_interval=None,  # the protocol's own ping is what clients send
            proxy=None,
            max_queue=64,
        )
    except Exception as e:  # noqa: BLE001 - refused, reset, timed out, bad handshake
        tally.connect_errors += 1
        tally.note("connect", f"{type(e).__name__}: {e}")
        return None
    try:
        async with asyncio.timeout(WELCOME_TIMEOUT_S):
            frame = frame_of(await ws.recv())
    except (TimeoutError, ConnectionClosed) as e:
        tally.connect_errors += 1
        tally.note("connect", f"no welcome: {type(e).__name__}: {e}")
        await ws.close()
        return None
    if frame.get("type") != "welcome" or frame.get("session_id") != session:
        tally.connect_errors += 1
        tally.note("connect", f"first frame is not our welcome: {json.dumps(frame)[:200]}")
        await ws.close()
        return None
    return ws


async def open_many(
    chat: Chat, tag: str, n: int, concurrency: int, tally: Tally
) -> list[ClientConnection]:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> ClientConnection | None:
        async with gate:
            return await open_one(chat, session_id(tag, i), tally)

    opened = await asyncio.gather(*(one(i) for i in range(n)))
    return [ws for ws in opened if ws is not None]


def event_loop_runner() -> asyncio.Runner:
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)
