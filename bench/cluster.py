"""Cluster benchmark (issue 14): what Celery, Redis and a second gateway cost or buy, on the
loopback topology of ``bench.topology`` (redis-server, PostgreSQL, moto's S3 server standing in
for MinIO, gateways ``parley serve --workers 0`` and workers ``parley worker``).

* queue dispatch latency (a model row's ``created_at`` → ``started_at``) p50 / p99 with the
  Celery queue (two workers) and with the local queue (one gateway with its own worker
  process, same PostgreSQL): ``--jobs`` small intent jobs, each queued once the previous one
  ended, so the latency is the queue's, not waiting behind other jobs;
* web chat round trip (a socket's message → the bot's first reply) p50 / p99 with
  ``--conversations`` conversations at once (``--turns`` each), all on one gateway, then spread
  over two (every second socket on gateway B);
* predictions/s with ``--clients`` concurrent clients (``--requests`` each) through one
  gateway, then alternating over two.

Targets: Celery dispatch p50 <= 500 ms; no errors anywhere; two gateways not slower than one by
more than 10 % at ``--clients`` clients. Every process shares this machine's cores (2 on ours)
with the load generator, so a second gateway cannot add CPU here: the numbers are reported as
they are. Run it as::

    .venv/bin/python -m bench.cluster
    .venv/bin/python -m bench.cluster --quick --json /tmp/cluster.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from bench.harness import (
    ROOT,
    BenchError,
    check,
    common_flags,
    guarded,
    machine_facts,
    percentile,
    print_header,
    quick_intent_data,
    read_split,
    report_targets,
    upload_dataset,
    write_csv,
)
from bench.harness import train as train_model
from bench.report import fmt, render_table
from bench.topology import Cluster, Gateway, Tenant
from bench.webchat import EXPECTED_INTENT, bot_definition

DEFAULT_CACHE = ROOT / ".pytest_cache" / "parley-cache"  # the tests' encoder graph, if built
TRAIN_TIMEOUT_S = 300.0
JOB_PARAMS = {"epochs": 5}  # dispatch, not training, is measured
DISPATCH_P50_MS = 500.0
TWO_GATEWAYS_MIN_RATIO = 0.9
ERROR_SAMPLES = 5


@dataclass
class Latency:
    """One measured series: milliseconds, counts and errors."""

    name: str
    ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.samples) < ERROR_SAMPLES:
            self.samples.append(what[:300])

    @property
    def p50(self) -> float:
        return percentile(self.ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.ms, 99)

    @property
    def rate(self) -> float:
        return len(self.ms) / self.seconds if self.seconds else float("nan")


# --- measurements ------------------------------------------------------------------------------


def stamp(value: str) -> datetime:
    return datetime.fromisoformat(value)


def dispatch(client: httpx.Client, dataset_id: str, jobs: int, name: str) -> Latency:
    """``jobs`` jobs one after another; queued → running of each (the server's own clocks)."""
    result = Latency(name)
    for i in range(jobs):
        try:
            model, _ = train_model(
                client, dataset_id, f"{name} {i + 1}/{jobs}", JOB_PARAMS, timeout_s=TRAIN_TIMEOUT_S
            )
        except BenchError as e:
            result.error(str(e))
            continue
        waited = stamp(model["started_at"]) - stamp(model["created_at"])
        result.ms.append(waited.total_seconds() * 1000)
    return result


async def chat(
    gateways: Sequence[Gateway], bot: dict[str, Any], args: argparse.Namespace
) -> Latency:
    """``args.conversations`` sockets at once, socket i on gateway i mod len(gateways); each
    sends ``args.turns`` messages, one after the other's reply."""
    result = Latency(f"chat, {len(gateways)} gateway{'s' * (len(gateways) > 1)}")
    texts = list(EXPECTED_INTENT)

    async def conversation(i: int) -> None:
        gateway = gateways[i % len(gateways)]
        url = (
            f"{gateway.ws_url}/v1/bots/{bot['id']}/ws?key={bot['widget_key']}"
            f"&session=bench-{secrets.token_hex(6)}"
        )
        try:
            async with asyncio.timeout(args.timeout * (args.turns + 2)):
                async with connect(url, open_timeout=args.timeout) as ws:
                    while json.loads(await ws.recv())["type"] != "welcome":
                        pass
                    for turn in range(args.turns):
                        text = texts[(i + turn) % len(texts)]
                        frame = {"type": "message", "text": text, "client_id": f"c{turn}"}
                        t0 = time.perf_counter()
                        await ws.send(json.dumps(frame))
                        while True:
                            got = json.loads(await ws.recv())
                            if got["type"] == "error":
                                raise BenchError(f"error frame: {got}")
                            if got["type"] == "message":
                                break
                        result.ms.append((time.perf_counter() - t0) * 1000)
                        while json.loads(await ws.recv()) != {"type": "typing", "on": False}:
                            pass  # the turn's other frames, up to typing off
        except Exception as e:  # an error frame, a timeout, a closed socket: counted, not fatal
            result.error(f"conversation {i} on {gateway.name}: {type(e).__name__}: {e}")

    t0 = time.perf_counter()
    await asyncio.gather(*(conversation(i) for i in range(args.conversations)))
    result.seconds = time.perf_counter() - t0
    return result


async def predictions(
    gateways: Sequence[Gateway], tenant: Tenant, model_id: str, args: argparse.Namespace
) -> Latency:
    """``args.clients`` clients, client i on gateway i mod len(gateways), ``args.requests``
    single-text predictions each, back to back."""
    result = Latency(f"predict, {len(gateways)} gateway{'s' * (len(gateways) > 1)}")
    texts = list(EXPECTED_INTENT)
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)

    async def client(i: int, http: httpx.AsyncClient) -> None:
        url = f"{gateways[i % len(gateways)].url}/v1/models/{model_id}/predict"
        for n in range(args.requests):
            t0 = time.perf_counter()
            try:
                r = await http.post(url, json={"text": texts[(i + n) % len(texts)]})
            except httpx.HTTPError as e:
                result.error(f"client {i}: {type(e).__name__}: {e}")
                continue
            if r.status_code != 200:
                result.error(f"client {i}: HTTP {r.status_code}: {r.text}")
                continue
            result.ms.append((time.perf_counter() - t0) * 1000)

    async with httpx.AsyncClient(
        headers=tenant.headers, timeout=args.timeout, limits=limits
    ) as http:
        await asyncio.gather(*(client(i, http) for i in range(min(args.clients, 4))))  # warm
        result.ms.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(args.clients)))
        result.seconds = time.perf_counter() - t0
    return result


# --- the run -----------------------------------------------------------------------------------


def dataset_csv(folder: Path) -> Path:
    texts, labels = read_split(quick_intent_data(folder / "intents"), "train_5")
    path = folder / "intents.csv"
    write_csv(path, texts, labels)
    return path


def wait_ready(client: httpx.Client, bot_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while True:
        bot: dict[str, Any] = check(client.get(f"/v1/bots/{bot_id}"), 200)
        if bot["status"] != "training":
            break
        if time.monotonic() > deadline:
            raise BenchError(f"bot {bot_id} still training after {TRAIN_TIMEOUT_S:.0f} s")
        time.sleep(0.5)
    if bot["status"] != "ready":
        raise BenchError(f"bot {bot_id} is {bot['status']}: {bot.get('status_message')}")
    return bot


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    csv_path = dataset_csv(tmp)
    out: dict[str, Any] = {}
    print("\nstarting the Celery cluster: 2 gateways, 2 workers ...", flush=True)
    t0 = time.perf_counter()
    with Cluster(tmp / "celery", gateways=2, workers=2, shared_cache=args.cache_dir) as c:
        print(f"cluster up in {time.perf_counter() - t0:.1f} s", flush=True)
        tenant = c.create_tenant()
        with httpx.Client(base_url=c.gateways[0].url, headers=tenant.headers, timeout=60) as a:
            dataset = upload_dataset(a, "intents", csv_path)
            model, _ = train_model(a, dataset["id"], "warm-up", timeout_s=TRAIN_TIMEOUT_S)
            print(f"dispatch, celery: {args.jobs} jobs ...", flush=True)
            out["dispatch_celery"] = dispatch(a, dataset["id"], args.jobs, "dispatch, celery")
            bot = check(a.post("/v1/bots", json=bot_definition()), 201)
            bot = wait_ready(a, bot["id"])
        for n in (1, 2):
            print(f"chat, {n} gateway(s): {args.conversations} conversations ...", flush=True)
            out[f"chat_{n}"] = asyncio.run(chat(c.gateways[:n], bot, args))
        for n in (1, 2):
            print(f"predictions, {n} gateway(s): {args.clients} clients ...", flush=True)
            out[f"predict_{n}"] = asyncio.run(
                predictions(c.gateways[:n], tenant, model["id"], args)
            )
    print("\nstarting the local-queue server: 1 gateway with its own worker ...", flush=True)
    with Cluster(
        tmp / "local", gateways=1, workers=0, queue="local", shared_cache=args.cache_dir
    ) as c:
        tenant = c.create_tenant()
        with httpx.Client(base_url=c.gateways[0].url, headers=tenant.headers, timeout=60) as a:
            dataset = upload_dataset(a, "intents", csv_path)
            train_model(a, dataset["id"], "warm-up", timeout_s=TRAIN_TIMEOUT_S)
            print(f"dispatch, local: {args.jobs} jobs ...", flush=True)
            out["dispatch_local"] = dispatch(a, dataset["id"], args.jobs, "dispatch, local")
    return out


# --- report ------------------------------------------------------------------------------------

SERIES = ("dispatch_celery", "dispatch_local", "chat_1", "chat_2", "predict_1", "predict_2")


def results_table(out: dict[str, Any]) -> str:
    rows = []
    for key in SERIES:
        r: Latency = out[key]
        rate = fmt(r.rate, ".1f") if key.startswith("predict") else "-"
        rows.append(
            [r.name, str(len(r.ms)), fmt(r.p50, ".0f"), fmt(r.p99, ".0f"), rate, str(r.errors)]
        )
    return render_table(["series", "n", "p50 ms", "p99 ms", "per s", "errors"], rows)


def evaluate_targets(out: dict[str, Any]) -> list[dict[str, Any]]:
    celery: Latency = out["dispatch_celery"]
    one: Latency = out["predict_1"]
    two: Latency = out["predict_2"]
    errors = sum(out[k].errors for k in SERIES)
    ratio = two.rate / one.rate if one.rate else float("nan")
    return [
        {
            "check": "celery dispatch p50",
            "shown": f"{fmt(celery.p50, '.0f')} ms",
            "target": f"<= {DISPATCH_P50_MS:.0f} ms",
            "pass": celery.p50 <= DISPATCH_P50_MS,
        },
        {"check": "errors", "shown": str(errors), "target": "0", "pass": errors == 0},
        {
            "check": "predictions/s, 2 vs 1 gateway",
            "shown": f"{fmt(ratio, '.2f')}x",
            "target": f">= {TWO_GATEWAYS_MIN_RATIO:.2f}x",
            "pass": ratio >= TWO_GATEWAYS_MIN_RATIO,
        },
    ]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=20, help="jobs per queue for dispatch latency")
    p.add_argument("--conversations", type=int, default=100, help="web chat sockets at once")
    p.add_argument("--turns", type=int, default=5, help="messages per conversation")
    p.add_argument("--clients", type=int, default=64, help="concurrent prediction clients")
    p.add_argument("--requests", type=int, default=50, help="predictions per client")
    p.add_argument("--timeout", type=float, default=30.0, help="a slower answer is an error")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help="shared cache holding the encoder's ONNX graph (built there when missing)",
    )
    common_flags(
        p, "3 jobs a queue, 10 conversations of 2 turns, 8 clients x 10", device=False, seed=None
    )
    args = p.parse_args(argv)
    if args.quick:
        args.jobs, args.conversations, args.turns, args.clients, args.requests = 3, 10, 2, 8, 10
    if min(args.jobs, args.conversations, args.turns, args.clients, args.requests) < 1:
        p.error("--jobs, --conversations, --turns, --clients and --requests must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    facts = machine_facts()
    print_header(
        "Parley cluster benchmark (Celery vs local queue, one vs two gateways)",
        [str(Path(sys.argv[0])), *argv],
        facts,
        server="bench.topology on loopback: redis-server, PostgreSQL, moto S3 (MinIO stand-in), "
        "parley serve --workers 0 x2, parley worker --concurrency 1 x2; clients run here too",
    )
    out, total, code = guarded(lambda tmp: run(args, tmp), "parley-bench-cluster-")
    if out is None:
        return code
    print("\nResults (dispatch: created_at -> started_at; chat: send -> first bot message)")
    print(results_table(out))
    for key in SERIES:
        for sample in out[key].samples:
            print(f"  {out[key].name}: {sample}")
    checks = evaluate_targets(out)
    return report_targets(
        checks,
        total,
        facts,
        args,
        title=f"Targets ({facts['cpus_usable']} cores shared by every process and the clients)",
        series={k: {**asdict(out[k]), "p50": out[k].p50, "p99": out[k].p99} for k in SERIES},
    )


if __name__ == "__main__":
    sys.exit(main())
