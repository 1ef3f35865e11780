"""Load and soak benchmark: web chat sockets held open plus a steady rate of predictions.

One real gateway is started (``parley serve --no-demo`` on 127.0.0.1, on a temporary data
directory, rate limits off: the bench measures the gateway, not its limits; see
``bench.intent.parley_server``). A tenant and the chat bench's bot are created
(``bench.chat.create_bot``); the bot's NLU model is what the predictions call.

Then, for ``--minutes`` (default 10) after ``--warmup`` seconds (default 20, not counted in the
percentiles):

* ``--sockets`` web chat websockets (default 1,000) are held open, each sending the protocol's
  ``ping`` every 5 s and waiting for its ``pong`` (``bench.chat.hold_idle``);
* ``--rate`` predictions a second (default 200) go to ``POST /v1/models/{id}/predict`` (one
  text each) on an open-loop schedule: a request is due at ``start + i / rate`` whether or not
  the earlier ones have been answered, and is written on the first free one of
  ``--connections`` keep-alive HTTP/1.1 connections (a small client on asyncio streams:
  httpx's pool spent more CPU than the gateway at this rate on 2 cores, and its queue of
  waiting requests made the client, not the gateway, the bottleneck). Latency: from writing
  the request to reading the whole answer. "wait p99": from when it was due to when it was
  written (a busy gateway, or a starved client, shows here). A request that waited longer
  than ``--timeout`` is dropped, not sent: the "sent / planned" target catches it.

Every minute a row is printed: predictions sent, errors, p50/p95/p99/max latency of the
predictions answered that minute, open sockets, the gateway's RSS and its growth since the end
of the warm-up. Errors: predictions that failed or answered anything but 200 with
predictions; sockets that failed to open, closed, or missed a ``pong`` for ``--timeout`` s.

The targets (issue 12): 0 errors; gateway RSS growth <= 10 %; p99 reported every minute; and,
so that a starved client cannot pass, >= 95 % of the planned predictions sent and every socket
still open at the end. Clients run in this process on one asyncio loop, on the same machine
as the gateway: they compete for its CPUs (the CPU seconds of each side are shown).

Traffic goes only to the server started here, on 127.0.0.1; everything is bounded
(``--sockets`` <= 5,000, ``--rate`` <= 2,000/s, ``--minutes`` <= 120) and stops by itself::

    .venv/bin/python -m bench.soak
    .venv/bin/python -m bench.soak --sockets 200 --rate 50 --minutes 1
    .venv/bin/python -m bench.soak --json /tmp/soak.json --device cuda
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

from bench.harness import (
    BenchError,
    check,
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
from bench.report import fmt, render_table
from bench.webchat import (
    FD_SLACK,
    TEXTS,
    Chat,
    Server,
    Tally,
    cpu_self,
    create_bot,
    event_loop_runner,
    fd_count,
    fd_limit,
    hold_idle,
    open_many,
    run_server,
)

MINUTE_S = 60.0
HOST = "127.0.0.1"
MAX_SOCKETS, MAX_RATE, MAX_MINUTES = 5000, 2000.0, 120.0
ERROR_SAMPLES = 8
RSS_GROWTH_TARGET_PCT = 10.0
SENT_SHARE_TARGET = 0.95


@dataclass
class Predictions:
    """What the prediction sender saw; the per-minute fields are reset by ``Soak.row``."""

    latencies_ms: list[float] = field(default_factory=list)  # this minute's answers
    waits_ms: list[float] = field(default_factory=list)  # this minute's due -> written
    all_ms: list[float] = field(default_factory=list)  # counted minutes' answers
    sent: int = 0
    errors: int = 0
    total_sent: int = 0
    total_errors: int = 0
    total_not_sent: int = 0  # waited past --timeout for a connection: dropped
    reconnects: int = 0  # keep-alive connections the gateway had closed, opened again
    samples: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        self.errors += 1
        self.total_errors += 1
        if len(self.samples) < ERROR_SAMPLES:
            self.samples.append(text[:300])


@dataclass
class Row:
    minute: str
    sent: int
    errors: int  # predictions + sockets
    predict_errors: int
    socket_errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    wait_p99_ms: float
    open_sockets: int
    rss_mb: float
    rss_growth_pct: float
    server_fds: int
    server_cpu_s: float
    client_cpu_s: float
    load_1m: str


class KeepAlive:
    """One keep-alive HTTP/1.1 connection, one request at a time (opened on first use)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reconnects = 0

    async def post(self, raw: bytes) -> tuple[int, bytes]:
        """Send ``raw``; (status, body). A reused connection that the server closed before
        answering (its keep-alive timeout) is opened again and the request sent once more."""
        reused = self.writer is not None
        try:
            return await self._exchange(raw)
        except (ConnectionError, EOFError) as e:
            if not (reused and isinstance(e, _ClosedBeforeAnswer | ConnectionResetError)):
                raise
        self.close()
        self.reconnects += 1
        return await self._exchange(raw)

    async def _exchange(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise _ClosedBeforeAnswer("the server closed the connection before answering")
        status = int(status_line.split()[1])
        length, chunked, close = None, False, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value
            elif name == "connection":
                close = value == "close"
        if chunked:
            body = b""
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                body += await self.reader.readexactly(size + 2)
                body = body[:-2]
            await self.reader.readline()
        elif length is not None:
            body = await self.reader.readexactly(length)
        else:
            raise ValueError(f"HTTP {status} answer without a length")
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class _ClosedBeforeAnswer(EOFError):
    pass


def answered(body: bytes) -> bool:
    """Whether a 200 body holds predictions."""
    try:
        return bool(json.loads(body).get("predictions"))
    except (ValueError, AttributeError):
        return False


def socket_errors(tally: Tally) -> int:
    return tally.connect_errors + tally.timeouts + tally.dropped + tally.error_frames


@dataclass
class Soak:
    """One run: the sockets, the prediction sender, and the rows printed each minute."""

    server: Server
    model_id: str
    args: argparse.Namespace
    tally: Tally = field(default_factory=Tally)
    predictions: Predictions = field(default_factory=Predictions)
    sockets: list[ClientConnection] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    baseline_rss_mb: float = float("nan")
    open_s: float = float("nan")
    log_tail: str = ""
    _socket_errors_seen: int = 0
    _cpu: tuple[float, float] = (0.0, 0.0)

    def row(self, label: str) -> Row:
        """Close the current minute: its row (printed), and fresh per-minute counters."""
        p = self.predictions
        pid = self.server.proc.pid
        rss, _ = rss_mb(pid)
        if label == "warm-up":  # growth is measured from here
            self.baseline_rss_mb = rss
        growth = (rss - self.baseline_rss_mb) / self.baseline_rss_mb * 100
        socket_errs = socket_errors(self.tally) - self._socket_errors_seen
        self._socket_errors_seen += socket_errs
        server_cpu, client_cpu = cpu_seconds(pid), cpu_self()
        row = Row(
            minute=label,
            sent=p.sent,
            errors=p.errors + socket_errs,
            predict_errors=p.errors,
            socket_errors=socket_errs,
            p50_ms=percentile(p.latencies_ms, 50),
            p95_ms=percentile(p.latencies_ms, 95),
            p99_ms=percentile(p.latencies_ms, 99),
            max_ms=max(p.latencies_ms, default=float("nan")),
            wait_p99_ms=percentile(p.waits_ms, 99),
            open_sockets=sum(ws.state is State.OPEN for ws in self.sockets),
            rss_mb=rss,
            rss_growth_pct=growth,
            server_fds=fd_count(pid),
            server_cpu_s=server_cpu - self._cpu[0],
            client_cpu_s=client_cpu - self._cpu[1],
            load_1m=load_average().split(" ")[0],
        )
        self._cpu = (server_cpu, client_cpu)
        if label != "warm-up":
            p.all_ms.extend(p.latencies_ms)
        p.latencies_ms, p.waits_ms, p.sent, p.errors = [], [], 0, 0
        print(
            f"  {label:>7}: sent {row.sent}, errors {row.errors} "
            f"({row.predict_errors} predict, {row.socket_errors} socket); predict ms p50 "
            f"{fmt(row.p50_ms, '.1f')} p95 {fmt(row.p95_ms, '.1f')} p99 {fmt(row.p99_ms, '.1f')} "
            f"max {fmt(row.max_ms, '.0f')}, wait p99 {fmt(row.wait_p99_ms, '.0f')}; "
            f"{row.open_sockets} sockets open; RSS {rss:.0f} MB ({growth:+.1f} %)",
            flush=True,
        )
        if self.server.proc.poll() is not None:
            raise BenchError(
                f"the gateway exited with code {self.server.proc.returncode}; log tail:\n"
                f"{tail(self.server.log_path)}"
            )
        self.rows.append(row)
        return row

    def requests(self, port: int) -> list[bytes]:
        """The raw prediction requests, one a text of the chat bench."""
        out = []
        for text in TEXTS:
            body = json.dumps({"text": text}).encode()
            head = (
                f"POST /v1/models/{self.model_id}/predict HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                f"Authorization: Bearer {self.args.api_key}\r\nContent-Type: application/json"
                f"\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            out.append(head.encode() + body)
        return out

    async def schedule(
        self, queue: asyncio.Queue[tuple[float, bytes] | None], requests: list[bytes],
        start: float, end: float, connections: int,
    ) -> None:  # fmt: skip
        """Open loop: request i is due at ``start + i / rate`` until ``end``; then one ``None``
        a connection, so they stop once the queue is drained."""
        interval = 1.0 / self.args.rate
        i = 0
        while (due := start + i * interval) < end:
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            queue.put_nowait((due, requests[i % len(requests)]))
            i += 1
        for _ in range(connections):
            queue.put_nowait(None)

    async def connection(self, queue: asyncio.Queue[tuple[float, bytes] | None], port: int) -> None:
        """One keep-alive connection taking due requests from ``queue`` until a ``None``."""
        p, timeout = self.predictions, self.args.timeout
        conn = KeepAlive(HOST, port)
        try:
            while (item := await queue.get()) is not None:
                due, raw = item
                waited = time.monotonic() - due
                if waited > timeout:
                    p.total_not_sent += 1
                    continue
                p.waits_ms.append(waited * 1000)
                p.sent += 1
                p.total_sent += 1
                t0 = time.perf_counter()
                try:
                    async with asyncio.timeout(timeout):
                        status, body = await conn.post(raw)
                except TimeoutError:
                    conn.close()
                    p.error(f"no answer within {timeout:g} s")
                    continue
                except (OSError, EOFError, ValueError) as e:
                    conn.close()
                    p.error(f"{type(e).__name__}: {e}")
                    continue
                ms = (time.perf_counter() - t0) * 1000
                if status != 200:
                    p.error(f"HTTP {status}: {body[:200]!r}")
                elif not answered(body):
                    p.error(f"200 without predictions: {body[:200]!r}")
                else:
                    p.latencies_ms.append(ms)
        finally:
            p.reconnects += conn.reconnects
            conn.close()

    async def run(self, chat: Chat) -> None:
        args = self.args
        t0 = time.perf_counter()
        print(f"opening {args.sockets} web chat sockets", flush=True)
        self.sockets = await open_many(
            chat, "soak", args.sockets, args.connect_concurrency, self.tally
        )
        self.open_s = time.perf_counter() - t0
        print(
            f"  {len(self.sockets)}/{args.sockets} open in {self.open_s:.1f} s "
            f"({self.tally.connect_errors} failed)",
            flush=True,
        )
        start = time.monotonic()
        counted_from = start + args.warmup
        end = counted_from + args.minutes * MINUTE_S
        port = int(self.server.url.rsplit(":", 1)[1])
        self._cpu = (cpu_seconds(self.server.proc.pid), cpu_self())
        rng = random.Random(args.seed)
        holders = [
            asyncio.create_task(
                hold_idle(ws, end, args.timeout, self.tally, random.Random(rng.random()))
            )
            for ws in self.sockets
        ]
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        senders = [
            asyncio.create_task(self.connection(queue, port)) for _ in range(args.connections)
        ]
        scheduler = asyncio.create_task(
            self.schedule(queue, self.requests(port), start, end, args.connections)
        )
        tasks = [scheduler, *senders, *holders]
        try:
            print(f"warm-up {args.warmup:g} s, then {args.minutes:g} minute(s) counted", flush=True)
            await asyncio.sleep(max(0.0, counted_from - time.monotonic()))
            self.row("warm-up")
            minute = 1
            while (boundary := counted_from + minute * MINUTE_S) < end - 1.0:
                await asyncio.sleep(max(0.0, boundary - time.monotonic()))
                self.row(f"min {minute}")
                minute += 1
            # the last requests are answered (or time out) into the last row
            await asyncio.gather(*tasks)
            self.row(f"min {minute}")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)


# --- report ---------------------------------------------------------------------------------


def rows_table(rows: list[Row]) -> str:
    header = [
        "minute",
        "sent",
        "errors (p/s)",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "wait p99",
        "open sockets",
        "RSS MB",
        "RSS growth",
        "srv fds",
        "srv cpu s",
        "client cpu s",
        "load 1m",
    ]
    body = [
        [
            r.minute,
            str(r.sent),
            f"{r.errors} ({r.predict_errors}/{r.socket_errors})",
            fmt(r.p50_ms, ".1f"),
            fmt(r.p95_ms, ".1f"),
            fmt(r.p99_ms, ".1f"),
            fmt(r.max_ms, ".0f"),
            fmt(r.wait_p99_ms, ".0f"),
            str(r.open_sockets),
            fmt(r.rss_mb, ".0f"),
            f"{r.rss_growth_pct:+.1f} %",
            str(r.server_fds),
            fmt(r.server_cpu_s, ".1f"),
            fmt(r.client_cpu_s, ".1f"),
            r.load_1m,
        ]
        for r in rows
    ]
    return render_table(header, body)


def evaluate_targets(soak: Soak) -> list[dict[str, Any]]:
    args, p = soak.args, soak.predictions
    counted = [r for r in soak.rows if r.minute != "warm-up"]
    errors = p.total_errors + socket_errors(soak.tally)
    growth = counted[-1].rss_growth_pct if counted else float("nan")
    planned = round(args.rate * (args.warmup + args.minutes * MINUTE_S))
    share = p.total_sent / planned if planned else float("nan")
    open_end = counted[-1].open_sockets if counted else 0
    reported = sum(r.p99_ms == r.p99_ms for r in counted)
    checks: list[dict[str, Any]] = []

    def add(title: str, value: float, shown: str, goal: str, ok: bool) -> None:
        checks.append({"check": title, "value": value, "shown": shown, "target": goal, "pass": ok})

    add(
        "errors (predictions + sockets)",
        float(errors),
        f"{errors} ({p.total_errors} + {socket_errors(soak.tally)})",
        "0",
        errors == 0,
    )
    add(
        "gateway RSS growth after warm-up",
        growth,
        f"{growth:+.1f} % ({soak.baseline_rss_mb:.0f} -> {counted[-1].rss_mb:.0f} MB)"
        if counted
        else "not run",
        f"<= {RSS_GROWTH_TARGET_PCT:g} %",
        growth == growth and growth <= RSS_GROWTH_TARGET_PCT,
    )
    add(
        "p99 reported every minute",
        float(reported),
        f"{reported}/{len(counted)} minutes (overall {fmt(percentile(p.all_ms, 99), '.1f')} ms)",
        "every minute",
        bool(counted) and reported == len(counted),
    )
    add(
        "predictions sent / planned",
        share,
        f"{p.total_sent}/{planned} ({share:.1%})",
        f">= {SENT_SHARE_TARGET:.0%}",
        share == share and share >= SENT_SHARE_TARGET,
    )
    add(
        "sockets open at the end",
        float(open_end),
        f"{open_end}/{args.sockets}",
        f"{args.sockets}",
        open_end == args.sockets,
    )
    return checks


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sockets", type=int, default=1000, help="web chat sockets held open")
    p.add_argument("--rate", type=float, default=200.0, help="predictions a second")
    p.add_argument("--minutes", type=float, default=10.0, help="counted minutes")
    p.add_argument("--warmup", type=float, default=20.0, help="seconds before counting")
    p.add_argument("--timeout", type=float, default=10.0, help="a slower answer is an error")
    p.add_argument("--connect-concurrency", type=int, default=50, help="handshakes at a time")
    p.add_argument("--connections", type=int, default=32, help="HTTP connections for predict")
    p.add_argument("--port", type=int, default=0, help="port for the server (default: free)")
    common_flags(p, "5 sockets, 5 predictions a second, 2 s warm-up and 6 s counted")
    args = p.parse_args(argv)
    if args.quick:
        args.sockets, args.rate, args.minutes, args.warmup, args.connections = 5, 5.0, 0.1, 2.0, 2
    if not 0 <= args.sockets <= MAX_SOCKETS:
        p.error(f"--sockets must be 0..{MAX_SOCKETS}")
    if not 0 < args.rate <= MAX_RATE:
        p.error(f"--rate must be > 0 and <= {MAX_RATE:g}")
    if not 0 < args.minutes <= MAX_MINUTES:
        p.error(f"--minutes must be > 0 and <= {MAX_MINUTES:g}")
    if args.warmup < 0 or args.timeout <= 0 or min(args.connect_concurrency, args.connections) < 1:
        p.error(
            "--warmup must be >= 0, --timeout > 0, --connect-concurrency and --connections >= 1"
        )
    return args


def run(args: argparse.Namespace, workdir: Path, nofile: int) -> Soak:
    token = secrets.token_urlsafe(24)
    port = args.port or free_port()
    with run_server(workdir, port, args.device, token, nofile) as server:
        args.api_key = create_tenant(server.url, token)
        bot_id, ready_s = create_bot(server.url, args.api_key)
        headers = {"Authorization": f"Bearer {args.api_key}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60.0) as client:
            model_id = check(client.get(f"/v1/bots/{bot_id}"), 200)["nlu_model_id"]
            if not model_id:
                raise BenchError(f"bot {bot_id} is ready but names no NLU model")
            t0 = time.perf_counter()
            check(client.post(f"/v1/models/{model_id}/predict", json={"text": TEXTS[0]}), 200)
            print(
                f"bot {bot_id} ready in {ready_s:.1f} s; its model {model_id} answered a first "
                f"(cold) prediction in {(time.perf_counter() - t0) * 1000:.0f} ms",
                flush=True,
            )
        chat = Chat(
            ws_base=f"ws://127.0.0.1:{port}/v1/bots/{bot_id}/ws?token={args.api_key}",
            compression="deflate",  # like browsers
        )
        soak = Soak(server=server, model_id=model_id, args=args)
        with event_loop_runner() as runner:
            runner.run(soak.run(chat))
        soak.log_tail = tail(server.log_path, 20)
    return soak


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    facts = machine_facts()
    print_header(
        "Parley load and soak benchmark (web chat sockets + predictions, one gateway process)",
        [str(Path(sys.argv[0])), *argv],
        facts,
        server="parley serve --no-demo, PARLEY_QUEUE__THREADS=1, rate limits off, device "
        f"{args.device}; clients run here too",
    )
    nofile = fd_limit(args.sockets + args.connections + FD_SLACK)
    print(f"open-files soft limit here: {nofile}")
    soak, total, code = guarded(lambda tmp: run(args, tmp, nofile), "parley-bench-soak-")
    if soak is None:
        return code
    checks = evaluate_targets(soak)
    print(
        f"\nPer minute ({args.sockets} sockets pinging every 5 s, {args.rate:g} predictions/s; "
        "latency of the predictions answered in that minute; RSS growth since the warm-up)"
    )
    print(rows_table(soak.rows))
    print("errors (p/s): predictions / sockets (failed opens, closes, missed pongs)")
    for sample in soak.predictions.samples:
        print(f"  predict: {sample}")
    for sample in soak.tally.samples:
        print(f"  socket: {sample}")
    if soak.predictions.total_not_sent:
        not_sent = soak.predictions.total_not_sent
        print(
            f"  {not_sent} predictions not sent: no connection was free within {args.timeout:g} s"
        )
    print(
        f"keep-alive connections the gateway closed and the client opened again: "
        f"{soak.predictions.reconnects}"
    )
    if any(r.errors for r in soak.rows):
        print("server log, last lines:")
        print(soak.log_tail or "(empty)")
    report_targets(
        checks,
        total,
        facts,
        args,
        sockets_open_s=soak.open_s,
        baseline_rss_mb=soak.baseline_rss_mb,
        minutes=[asdict(r) for r in soak.rows],
        predictions_sent=soak.predictions.total_sent,
        predictions_not_sent=soak.predictions.total_not_sent,
        overall_p99_ms=percentile(soak.predictions.all_ms, 99),
    )
    return 0 if all(c["pass"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
