"""Web chat benchmark: websocket round trips (message in -> bot reply out) on one gateway.

One real gateway is started: ``parley serve --no-demo`` as a subprocess on a temporary data
directory (``PARLEY_QUEUE__THREADS=1``, ``PARLEY_LOG_LEVEL=WARNING``, its open-files limit
raised to at least 4,096). Through its REST API a tenant is created with the operator token
and a bot with inline intents (greet, track_order, thanks, goodbye, hours; 8 examples each)
whose flows only reply with responses: no HTTP actions, so the numbers hold the gateway's own
work (authentication, conversation lock, tracker, NLU, dialog engine, SQLite writes) and not
an action server's. The bench waits until the bot's NLU model is trained.

Then, for each level N (default 1, 100 and 1,000 conversations), N websockets are opened to
``/v1/bots/{bot_id}/ws?token=...&session=...`` (one conversation each, distinct session ids;
at most ``--connect-concurrency`` handshakes at a time; each waits for ``welcome``). Every
conversation then sends messages in a loop: one message (cycling through "hi", "where is my
order?", "thanks", "what are your opening hours?", "bye"), wait for the whole answer (``ack``,
``typing on``, one or more bot ``message`` frames, ``typing off``), think for a random time
(uniform ``--think``, default 1-3 s), again. Messages sent during ``--warmup`` seconds are not
counted; then messages are counted for ``--duration`` seconds. Round trip: from just before
the client sends its frame to the first bot ``message`` frame ("reply"), and to ``typing off``
("done"). Level 1 also runs without think time (a closed loop: the pure latency).

Errors: handshakes that failed or did not end in ``welcome``; ``error`` frames (and turns that
ended without a bot message); replies slower than ``--timeout`` (10 s; their latencies stay
in the percentiles); sockets that closed during the level. Replies from the wrong intent
(the bot answering, say, "thanks" with the greeting) are counted apart, as a sanity check.

Last, ``--idle`` sockets (1,000) are opened and held for ``--hold`` seconds (10), each sending
an application ``ping`` every 5 s (phases spread at random) and waiting for its ``pong``.

The clients run in this process, on one asyncio loop (uvloop when installed), on the same
machine as the server: they compete for its CPUs, and the tables show the CPU seconds each
side used. The targets (on 2 cores): p50 <= 30 ms and p99 <= 150 ms (reply) at 100
conversations; 1,000 websockets held with no errors. Run it as::

    .venv/bin/python -m bench.chat
    .venv/bin/python -m bench.chat --levels 1,100 --duration 10 --idle 0
    .venv/bin/python -m bench.chat --json /tmp/chat.json --device cuda
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from bench.harness import (
    BenchError,
    common_flags,
    cpu_seconds,
    create_tenant,
    free_port,
    guarded,
    load_average,
    machine_facts,
    percentile,
    print_header,
    report_targets,
    rss_mb,
    tail,
)
from bench.report import fmt, render_table, targets_table
from bench.webchat import (
    EXPECTED_INTENT,
    FD_SLACK,
    PING_EVERY_S,
    RESPONSES,
    TEXTS,
    Chat,
    Server,
    Tally,
    cpu_self,
    create_bot,
    event_loop_runner,
    fd_count,
    fd_limit,
    frame_of,
    hold_idle,
    open_many,
    open_one,
    run_server,
    session_id,
)

GIVE_UP_S = 60.0  # a reply this late: the conversation is abandoned (its socket closed)
ERROR_GRACE_S = 1.0  # a failed turn sends its error frame right after ``typing off``

# Targets (checked in ``evaluate_targets``).
TARGET_CONVERSATIONS = 100
P50_TARGET_MS = 30.0
P99_TARGET_MS = 150.0
TARGET_SOCKETS = 1000

# --- the bot -------------------------------------------------------------------------------


# --- results --------------------------------------------------------------------------------


@dataclass
class LevelResult:
    scenario: str
    conversations: int
    think: str
    open_s: float = float("nan")
    wall_s: float = float("nan")
    messages: int = 0
    turns: int = 0  # warm-up and late ones included
    msg_per_s: float = float("nan")
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    done_p50_ms: float = float("nan")
    done_p99_ms: float = float("nan")
    ping_p50_ms: float = float("nan")
    ping_p99_ms: float = float("nan")
    pings: int = 0
    connect_errors: int = 0
    error_frames: int = 0
    timeouts: int = 0
    dropped: int = 0
    errors: int = 0
    wrong_intent: int = 0
    open_at_end: int = 0
    server_fds: int = -1
    server_rss_mb: float = float("nan")
    server_cpu_s: float = float("nan")
    client_cpu_s: float = float("nan")
    load_1m: str = "-"
    error_samples: list[str] = field(default_factory=list)

    def fill(self, tally: Tally) -> None:
        self.messages = len(tally.reply_ms)
        self.turns = tally.turns
        self.p50_ms = percentile(tally.reply_ms, 50)
        self.p90_ms = percentile(tally.reply_ms, 90)
        self.p99_ms = percentile(tally.reply_ms, 99)
        self.max_ms = max(tally.reply_ms, default=float("nan"))
        self.done_p50_ms = percentile(tally.done_ms, 50)
        self.done_p99_ms = percentile(tally.done_ms, 99)
        self.pings = len(tally.ping_ms)
        self.ping_p50_ms = percentile(tally.ping_ms, 50)
        self.ping_p99_ms = percentile(tally.ping_ms, 99)
        self.connect_errors = tally.connect_errors
        self.error_frames = tally.error_frames
        self.timeouts = tally.timeouts
        self.dropped = tally.dropped
        self.errors = tally.connect_errors + tally.error_frames + tally.timeouts + tally.dropped
        self.wrong_intent = tally.wrong_intent
        self.error_samples = list(tally.samples)


# --- open-files limits ----------------------------------------------------------------------


# --- server and setup -----------------------------------------------------------------------


# --- one conversation -----------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    reply_ms: float | None  # send -> first bot message
    done_ms: float | None  # send -> typing off
    reply: str | None  # the first bot message's text
    error: str | None  # an error frame, a turn without a reply, or a protocol slip


async def turn(ws: ClientConnection, text: str, client_id: str) -> Turn:
    """Send one message and read its whole answer, through ``typing off``. Raises
    ``TimeoutError`` after ``GIVE_UP_S`` and ``ConnectionClosed`` if the socket closes."""
    t0 = time.perf_counter()
    await ws.send(json.dumps({"type": "message", "text": text, "client_id": client_id}))
    reply_at: float | None = None
    reply: str | None = None
    error: str | None = None
    acked = False
    async with asyncio.timeout(GIVE_UP_S):
        while True:
            frame = frame_of(await ws.recv())
            kind = frame.get("type")
            if kind == "message" and frame.get("from") == "bot":
                if reply_at is None:
                    reply_at = time.perf_counter()
                    reply = (frame.get("message") or {}).get("text")
            elif kind == "typing" and frame.get("on") is False:
                done_at = time.perf_counter()
                break
            elif kind == "ack":
                if frame.get("client_id") != client_id:
                    error = f"ack for {frame.get('client_id')!r}, expected {client_id!r}"
                acked = True
            elif kind == "error":
                error = f"{frame.get('error')}: {frame.get('message')}"
    if reply_at is None and error is None:
        error = "the turn ended (typing off) without a bot message or an error frame"
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ERROR_GRACE_S):
                while True:
                    frame = frame_of(await ws.recv())
                    if frame.get("type") == "error":
                        error = f"{frame.get('error')}: {frame.get('message')}"
                        break
    elif not acked and error is None:
        error = f"no ack for client_id {client_id!r}"
    return Turn(
        reply_ms=None if reply_at is None else (reply_at - t0) * 1000,
        done_ms=(done_at - t0) * 1000,
        reply=reply,
        error=error,
    )


@dataclass(frozen=True)
class Window:
    """When messages count: sent in [start, end) on ``time.monotonic()``."""

    start: float
    end: float
    think: tuple[float, float]
    timeout_s: float


async def converse(
    ws: ClientConnection, index: int, window: Window, tally: Tally, rng: random.Random
) -> None:
    """One conversation: message, whole answer, think; until the window ends."""
    lo, hi = window.think
    if hi > 0:  # spread the first messages over one think time, as real visitors arrive
        await asyncio.sleep(rng.uniform(0, hi))
    n = 0
    while time.monotonic() < window.end:
        text = TEXTS[(index + n) % len(TEXTS)]
        counted = time.monotonic() >= window.start
        n += 1
        try:
            result = await turn(ws, text, f"c{index}-{n}")
        except TimeoutError:
            tally.dropped += 1
            tally.note("dropped", f"no typing off {GIVE_UP_S:.0f} s after {text!r}; closed it")
            await ws.close()
            return
        except ConnectionClosed as e:
            tally.dropped += 1
            tally.note("dropped", f"socket closed: {e}")
            return
        tally.turns += 1
        if result.error is not None:
            tally.error_frames += 1
            tally.note("error", result.error)
        if result.done_ms is not None and result.done_ms > window.timeout_s * 1000:
            tally.timeouts += 1
            tally.note("timeout", f"{text!r} answered in {result.done_ms:.0f} ms")
        if result.reply is not None and result.reply != RESPONSES[EXPECTED_INTENT[text]]:
            tally.wrong_intent += 1
        if counted and result.reply_ms is not None:
            tally.reply_ms.append(result.reply_ms)
            if result.done_ms is not None:
                tally.done_ms.append(result.done_ms)
        if hi > 0:
            await asyncio.sleep(rng.uniform(lo, hi))


# --- one level ------------------------------------------------------------------------------


async def run_level(
    chat: Chat,
    server: Server,
    result: LevelResult,
    args: argparse.Namespace,
    body: Callable[[list[ClientConnection], Tally], Awaitable[None]],
) -> None:
    """Open ``result.conversations`` sockets, run ``body`` on them, read the server's side,
    close them; fill ``result``."""
    tally = Tally()
    cpu_client, cpu_server = cpu_self(), cpu_seconds(server.proc.pid)
    t0 = time.perf_counter()
    tag = "".join(c for c in result.scenario if c.isalnum())[:12] or "bench"
    sockets = await open_many(chat, tag, result.conversations, args.connect_concurrency, tally)
    result.open_s = time.perf_counter() - t0
    try:
        await body(sockets, tally)
        result.open_at_end = sum(ws.state is State.OPEN for ws in sockets)
        result.server_fds = fd_count(server.proc.pid)
        result.server_rss_mb, _ = rss_mb(server.proc.pid)
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    result.wall_s = time.perf_counter() - t0
    result.client_cpu_s = cpu_self() - cpu_client
    result.server_cpu_s = cpu_seconds(server.proc.pid) - cpu_server
    result.load_1m = load_average().split(" ")[0]
    result.fill(tally)


async def chat_level(
    chat: Chat,
    server: Server,
    n: int,
    think: tuple[float, float],
    args: argparse.Namespace,
) -> LevelResult:
    label = "no think time" if think[1] <= 0 else f"think {think[0]:g}-{think[1]:g} s"
    scenario = f"{n}, no think time" if think[1] <= 0 else str(n)
    result = LevelResult(scenario=scenario, conversations=n, think=label)
    print(f"\n== {n} conversations, {label}", flush=True)

    async def body(sockets: list[ClientConnection], tally: Tally) -> None:
        print(
            f"  {len(sockets)}/{n} sockets open in {result.open_s:.1f} s "
            f"({tally.connect_errors} failed); warm-up {args.warmup:g} s, "
            f"then {args.duration:g} s counted",
            flush=True,
        )
        start = time.monotonic() + args.warmup
        window = Window(start, start + args.duration, think, args.timeout)
        seed = args.seed * 1_000_003 + n * 7 + int(think[1] > 0)
        await asyncio.gather(
            *(
                converse(ws, i, window, tally, random.Random(seed * 10_007 + i))
                for i, ws in enumerate(sockets)
            )
        )

    await run_level(chat, server, result, args, body)
    result.msg_per_s = result.messages / args.duration
    print(
        f"  {result.messages} messages ({result.msg_per_s:.1f}/s): reply p50 "
        f"{fmt(result.p50_ms, '.1f')} ms, p99 {fmt(result.p99_ms, '.1f')} ms; "
        f"{result.errors} errors; {result.open_at_end} sockets open at the end",
        flush=True,
    )
    return result


async def idle_level(chat: Chat, server: Server, n: int, args: argparse.Namespace) -> LevelResult:
    result = LevelResult(scenario=f"{n} idle sockets", conversations=n, think="-")
    print(f"\n== {n} idle sockets, held {args.hold:g} s, ping every {PING_EVERY_S:g} s", flush=True)

    async def body(sockets: list[ClientConnection], tally: Tally) -> None:
        print(
            f"  {len(sockets)}/{n} sockets open in {result.open_s:.1f} s "
            f"({tally.connect_errors} failed)",
            flush=True,
        )
        end = time.monotonic() + args.hold
        await asyncio.gather(
            *(
                hold_idle(ws, end, args.timeout, tally, random.Random(args.seed * 31 + i))
                for i, ws in enumerate(sockets)
            )
        )

    await run_level(chat, server, result, args, body)
    print(
        f"  {result.pings} pings: pong p50 {fmt(result.ping_p50_ms, '.1f')} ms, p99 "
        f"{fmt(result.ping_p99_ms, '.1f')} ms; {result.errors} errors; {result.open_at_end} "
        f"open at the end; server RSS {fmt(result.server_rss_mb, '.0f')} MB, "
        f"{result.server_fds} fds",
        flush=True,
    )
    return result


async def prime(chat: Chat) -> list[str]:
    """One conversation says each text once: the server's first turn is cold (model load),
    and a bot that misunderstands the texts would make the numbers meaningless."""
    tally = Tally()
    ws = await open_one(chat, session_id("prime", 0), tally)
    if ws is None:
        raise BenchError(f"could not open a websocket: {'; '.join(tally.samples)}")
    lines = []
    try:
        for i, text in enumerate(TEXTS):
            result = await turn(ws, text, f"prime-{i}")
            if result.error is not None:
                raise BenchError(f"the bot failed on {text!r}: {result.error}")
            ok = result.reply == RESPONSES[EXPECTED_INTENT[text]]
            lines.append(
                f"  {text!r}: {'ok' if ok else 'UNEXPECTED REPLY ' + repr(result.reply)} "
                f"(reply {fmt(result.reply_ms or float('nan'), '.0f')} ms)"
            )
    finally:
        await ws.close()
    return lines


# --- report ---------------------------------------------------------------------------------


def levels_table(levels: Sequence[LevelResult]) -> str:
    rows = []
    for r in levels:
        idle = r.think == "-"
        rows.append(
            [
                r.scenario,
                str(r.conversations),
                fmt(r.open_s, ".1f"),
                str(r.pings) if idle else str(r.messages),
                "-" if idle else fmt(r.msg_per_s, ".1f"),
                *(
                    fmt(v, ".1f")
                    for v in (
                        (r.ping_p50_ms, float("nan"), r.ping_p99_ms, float("nan"))
                        if idle
                        else (r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms)
                    )
                ),
                "-" if idle else fmt(r.done_p50_ms, ".1f"),
                "-" if idle else fmt(r.done_p99_ms, ".1f"),
                f"{r.errors} ({r.connect_errors}/{r.error_frames}/{r.timeouts}/{r.dropped})",
                "-" if idle else str(r.wrong_intent),
                f"{r.open_at_end}/{r.conversations}",
                str(r.server_fds),
                fmt(r.server_rss_mb, ".0f"),
                fmt(r.server_cpu_s, ".1f"),
                fmt(r.client_cpu_s, ".1f"),
                fmt(r.wall_s, ".0f"),
                r.load_1m,
            ]
        )
    header = [
        "conversations",
        "sockets",
        "open s",
        "messages",
        "msg/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "done p50",
        "done p99",
        "errors (c/e/t/d)",
        "wrong",
        "open at end",
        "srv fds",
        "srv RSS MB",
        "srv cpu s",
        "client cpu s",
        "wall s",
        "load 1m",
    ]
    return render_table(header, rows, "l" + "r" * (len(header) - 1))


def evaluate_targets(levels: Sequence[LevelResult]) -> list[dict[str, Any]]:
    nan = float("nan")
    at = next(
        (r for r in levels if r.conversations == TARGET_CONVERSATIONS and r.think != "-"), None
    )
    idle = next((r for r in levels if r.think == "-"), None)
    busy = next(
        (r for r in levels if r.conversations == TARGET_SOCKETS and r.think.startswith("think")),
        None,
    )
    checks: list[dict[str, Any]] = []

    def add(title: str, value: float, shown: str, goal: str, ok: bool) -> None:
        checks.append({"check": title, "value": value, "shown": shown, "target": goal, "pass": ok})

    n = TARGET_CONVERSATIONS
    p50 = at.p50_ms if at else nan
    p99 = at.p99_ms if at else nan
    add(f"reply p50 ms at {n} conversations", p50, fmt(p50, ".1f"), f"<= {P50_TARGET_MS:g}",
        p50 == p50 and p50 <= P50_TARGET_MS)  # fmt: skip
    add(f"reply p99 ms at {n} conversations", p99, fmt(p99, ".1f"), f"<= {P99_TARGET_MS:g}",
        p99 == p99 and p99 <= P99_TARGET_MS)  # fmt: skip
    for row, what in ((idle, "idle sockets held"), (busy, "conversations' sockets held")):
        if row is None:
            add(f"{TARGET_SOCKETS} {what}, errors", nan, "not run", "0", False)
            continue
        errors = row.errors if row is idle else row.connect_errors + row.dropped
        ok = row.conversations >= TARGET_SOCKETS and errors == 0
        ok = ok and row.open_at_end == row.conversations
        kinds = "errors" if row is idle else "connect errors + drops"
        add(
            f"{row.conversations} {what}, {kinds}",
            float(errors),
            f"{errors} ({row.open_at_end} open)",
            f"0 ({TARGET_SOCKETS} open)",
            ok,
        )
    return checks


# --- main -----------------------------------------------------------------------------------


def parse_levels(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--levels {text!r}: give numbers like 1,100,1000"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("--levels needs positive numbers, like 1,100,1000")
    return values


def parse_think(text: str) -> tuple[float, float]:
    try:
        lo, _, hi = text.partition("-")
        bounds = (float(lo), float(hi or lo))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--think {text!r}: give LO-HI seconds, like 1-3"
        ) from None
    if bounds[0] < 0 or bounds[1] < bounds[0]:
        raise argparse.ArgumentTypeError("--think LO-HI needs 0 <= LO <= HI, like 1-3 (0: none)")
    return bounds


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--levels", type=parse_levels, default=[1, 100, 1000], help="conversations")
    p.add_argument("--think", type=parse_think, default=(1.0, 3.0), help="think time LO-HI s")
    p.add_argument("--duration", type=float, default=20.0, help="counted seconds per level")
    p.add_argument("--warmup", type=float, default=5.0, help="uncounted seconds per level")
    p.add_argument("--timeout", type=float, default=10.0, help="a slower reply is an error")
    p.add_argument("--idle", type=int, default=1000, help="idle sockets to hold (0: skip)")
    p.add_argument("--hold", type=float, default=10.0, help="seconds the idle sockets are held")
    p.add_argument("--connect-concurrency", type=int, default=50, help="handshakes at a time")
    p.add_argument(
        "--no-compression",
        action="store_true",
        help="no permessage-deflate (browsers offer it, so by default the client does too)",
    )
    p.add_argument("--port", type=int, default=0, help="port for the server (default: free)")
    common_flags(p, "1 and 3 conversations for 3 s each, 5 idle sockets held 1 s")
    args = p.parse_args(argv)
    if args.quick:
        args.levels, args.think, args.duration, args.warmup = [1, 3], (0.1, 0.3), 3.0, 1.0
        args.idle, args.hold = 5, 1.0
    if args.duration <= 0 or args.warmup < 0 or args.timeout <= 0 or args.hold <= 0:
        p.error("--duration, --timeout and --hold must be > 0, --warmup >= 0")
    if args.idle < 0 or args.connect_concurrency < 1:
        p.error("--idle must be >= 0 and --connect-concurrency >= 1")
    return args


def run(args: argparse.Namespace, workdir: Path, nofile: int) -> dict[str, Any]:
    token = secrets.token_urlsafe(24)
    port = args.port or free_port()
    with run_server(workdir, port, args.device, token, nofile) as server:
        api_key = create_tenant(server.url, token)
        bot_id, ready_s = create_bot(server.url, api_key)
        print(f"bot {bot_id} ready in {ready_s:.1f} s (create + NLU training)", flush=True)
        chat = Chat(
            ws_base=f"ws://127.0.0.1:{port}/v1/bots/{bot_id}/ws?token={api_key}",
            compression=None if args.no_compression else "deflate",
        )
        levels: list[LevelResult] = []
        with event_loop_runner() as runner:
            print("priming (one conversation, each text once; the first turn is cold):")
            for line in runner.run(prime(chat)):
                print(line, flush=True)
            for n in args.levels:
                if n == 1 and args.think[1] > 0:
                    levels.append(runner.run(chat_level(chat, server, 1, (0.0, 0.0), args)))
                levels.append(runner.run(chat_level(chat, server, n, args.think, args)))
                if server.proc.poll() is not None:
                    raise BenchError(
                        f"server exited with code {server.proc.returncode}; log tail:\n"
                        f"{tail(server.log_path)}"
                    )
            if args.idle:
                levels.append(runner.run(idle_level(chat, server, args.idle, args)))
        log_tail = tail(server.log_path, 20)
    return {
        "bot_ready_s": ready_s,
        "levels": levels,
        "server_log_tail": log_tail,
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    facts = machine_facts()
    print_header(
        "Parley web chat benchmark (websocket round trips, one gateway process)",
        [str(Path(sys.argv[0])), *argv],
        facts,
        server=f"parley serve --no-demo, PARLEY_QUEUE__THREADS=1, device {args.device}; "
        f"bot with inline intents and reply-only flows (no actions); clients run here too, "
        f"{'no compression' if args.no_compression else 'permessage-deflate like browsers'}",
    )
    needed = max([*args.levels, args.idle]) + FD_SLACK
    nofile = fd_limit(needed)
    print(f"open-files soft limit here: {nofile}")
    outcome, total, code = guarded(lambda tmp: run(args, tmp, nofile), "parley-bench-chat-")
    if outcome is None:
        return code
    levels: list[LevelResult] = outcome["levels"]
    checks = evaluate_targets(levels)
    print(
        "\nRound trips (ms: send -> first bot message; done = send -> typing off; "
        f"messages counted for {args.duration:g} s after {args.warmup:g} s of warm-up; "
        "idle row: pings and ping -> pong ms)"
    )
    print(levels_table(levels))
    print(
        "errors (c/e/t/d): failed connects / error frames / replies over "
        f"{args.timeout:g} s / sockets dropped; wrong: replies of another intent (not errors)"
    )
    for r in levels:
        for sample in r.error_samples:
            print(f"  {r.scenario}: {sample}")
    if any(r.errors for r in levels):
        print("server log, last lines:")
        print(outcome["server_log_tail"] or "(empty)")
    return report_targets(
        checks,
        total,
        facts,
        args,
        title="Targets (2 cores)",
        table=targets_table(checks, marks=("✅", "❌"), verdict="met"),
        notes=[f"client CPU in this process: {cpu_self():.1f} s in all"],
        bot_ready_s=outcome["bot_ready_s"],
        levels=[asdict(r) for r in levels],
    )


if __name__ == "__main__":
    sys.exit(main())
