"""Multi-tenant serving benchmark: thousands of tenants' intent models in one Parley server.

Setup (in this process, with Parley's own Python API, on a temporary data directory): every
HWU64 ``train/`` text (8,954 texts, 64 intents) is encoded once with the real encoder; then for
each of ``--tenants`` tenants (default 1,000) a tenant and API key are created, a random 10-40
of the intents with about 8 examples each are drawn (seeded), a real ``embedding-head`` model
is trained on the cached features (15 epochs), stored like the train worker stores it, and
recorded as a succeeded model.

Then ``parley serve --no-demo`` is started as a subprocess on that data directory, once with
micro-batching on (``PARLEY_SERVING__MAX_BATCH=64``) and once off (``=1``), with
``PARLEY_QUEUE__WORKERS=0`` (no train worker processes). For each server:

* (batching on only) cold load: for the first 200 tenants in turn, one ``predict`` call (the
  first for that model: it loads the head from storage), then a second one (warm). The cold
  cost of a model is its first-call latency minus the median warm latency;
* every model is loaded (one sequential ``predict`` per tenant), and the server's resident
  memory (``VmRSS`` of the ``parley serve`` process) is read before any model and after all;
* load: 1, 16 and 64 concurrent clients (keep-alive connections driven by one asyncio loop
  with pre-built raw HTTP/1.1 requests, like ``wrk``, so the load generator takes little of
  the CPU the server needs) send single-text ``predict`` requests for random tenants (a
  random tenant's model and one of its texts), a fixed count per client, bounded by
  ``--max-seconds``; p50 / p99 latency and requests/s.

The Rasa-shaped scenario (``--scenario rasa``, part of ``both``): a first server imports
``bench/data/rasa_init_nlu.yml`` as a dataset and trains an intent model on it through the API
and its train worker (alias ``production``). A fresh server (with its train worker,
``PARLEY_QUEUE__RECYCLE_IDLE_S=--recycle-idle-s``) is then measured: spawn to the first 200 from
``POST /model/parse``; idle memory (RSS and PSS summed over the process tree: gateway(s) and
train worker); the memory after ``--extra-models`` more tenants' models are loaded, measured
right after idle, before any load (the first few models warm the predict route and are not
counted); one client, then 64 closed-loop clients sending ``/model/parse``. Every request's
text is distinct, so that the micro-batcher, which encodes identical texts of a batch once,
does no less work than for a bot's real traffic: an example of the nlu.yml file or one of
``RASA_MESSAGES`` (messages it was not trained on), drawn at random (seeded), followed by
a space and a request number unique in the run ("good morning 1733"). Then this server's
worker trains the model once more and the idle memory is read again right after (the worker
now holds PyTorch) and after the worker has exited, idle, and been replaced by a fresh one
without PyTorch. ``--processes N`` > 1 needs a shared counter store: the bench starts a
throwaway ``redis-server`` unless ``PARLEY_REDIS__URL`` is set.

The results are printed as plain-text tables, followed by the targets with PASS/FAIL: 1,000
models in <= 1.5 GB server RSS; cold-load p50 <= 50 ms; micro-batching >= 3x the unbatched
throughput at 64 clients; p99 <= 100 ms at 64 clients (batching on). The load clients run on
the same machine as the server and compete with it for the CPUs; the table shows the CPU
seconds each side used. Run it as::

    .venv/bin/python -m bench.serving --tenants 50
    .venv/bin/python -m bench.serving --json /tmp/serving.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.harness import (
    SHARED_DATA,
    BenchError,
    check,
    common_flags,
    cpu_seconds,
    create_tenant,
    free_port,
    guarded,
    load_average,
    machine_facts,
    parley_server,
    percentile,
    print_header,
    quick_intent_data,
    read_split,
    report_targets,
    rss_mb,
    tail,
    train,
    upload_dataset,
)
from bench.report import fmt, render_table

DEFAULT_DATA = SHARED_DATA / "hwu64"
MIN_INTENTS, MAX_INTENTS = 10, 40
EXAMPLES_PER_INTENT = 8
PREDICT_TEXTS = 5  # texts kept per tenant for its predictions
EPOCHS = 15
COLD_MODELS = 200
PER_CLIENT = {1: 300, 16: 40, 64: 15}  # requests per client, by client count
MB = 1_000_000
ERROR_SAMPLES = 5
CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")

# Targets (checked in ``evaluate_targets``).
RSS_TARGET_MB = 1500.0
COLD_TARGET_MS = 50.0
SPEEDUP_TARGET = 3.0
P99_TARGET_MS = 100.0
TARGET_MODELS = 1000
TARGET_CLIENTS = 64


@dataclass
class TenantModel:
    tenant_id: str
    api_key: str
    model_id: str
    labels: int
    examples: int
    texts: list[str]


@dataclass
class LoadResult:
    batching: str
    max_batch: int
    clients: int
    per_client: int
    requests: int = 0
    errors: int = 0
    wall_s: float = float("nan")
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    mean_ms: float = float("nan")
    max_ms: float = float("nan")
    rps: float = float("nan")
    server_cpu_s: float = float("nan")
    bench_cpu_s: float = float("nan")
    load_1m: str = "-"
    stopped_early: bool = False
    error_samples: list[str] = field(default_factory=list)


@dataclass
class ServerResult:
    batching: str
    max_batch: int
    startup_s: float = float("nan")
    rss_start_mb: float = float("nan")
    rss_loaded_mb: float = float("nan")
    rss_end_mb: float = float("nan")
    rss_peak_mb: float = float("nan")
    children: int = 0
    models_loaded: int = -1
    load_all_s: float = float("nan")
    load_all_errors: int = 0
    cold: dict[str, Any] = field(default_factory=dict)
    load: list[LoadResult] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)


# --- setup: tenants and models through Parley's Python API --------------------------------


def setup_tenants(
    args: argparse.Namespace, data_dir: Path, scratch: Path
) -> tuple[list[TenantModel], dict[str, Any]]:
    """Create ``args.tenants`` tenants, each with a real trained head; return them and timings."""
    os.environ["PARLEY_DATA_DIR"] = str(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    from core.backends import BackendContext
    from core.db import dispose_engines, get_engine, session_scope, upgrade
    from core.ids import new_id
    from core.settings import get_settings
    from core.storage import sha256_dir, store_for
    from core.tables import Model
    from core.tenants import create_tenant
    from nlu.intent.embedding_head import EmbeddingHeadBackend, EmbeddingHeadConfig

    get_settings.cache_clear()
    settings = get_settings()
    timings: dict[str, Any] = {}
    texts, labels = read_split(args.data, "train")
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    intents = sorted(by_label)
    if len(intents) < MIN_INTENTS:
        raise BenchError(f"{args.data}/train has {len(intents)} intents; need {MIN_INTENTS}+")
    print(f"data: {len(texts)} texts, {len(intents)} intents ({args.data / 'train'})")

    t0 = time.perf_counter()
    upgrade(settings.database_url)
    engine = get_engine(settings.database_url)
    store = store_for(settings)
    timings["migrate_s"] = time.perf_counter() - t0

    backend = EmbeddingHeadBackend(
        BackendContext(cache_dir=settings.cache_dir, device=args.device, threads=args.threads)
    )
    feat_config = EmbeddingHeadConfig(encoder_precision=args.precision)
    t0 = time.perf_counter()
    features = backend.featurize(texts, config=feat_config)
    timings["featurize_s"] = time.perf_counter() - t0
    timings["precision"] = backend.precision(feat_config)
    print(
        f"featurized {len(texts)} texts in {timings['featurize_s']:.1f} s "
        f"({timings['precision']} encoder, {args.device}, {args.threads} threads; includes the "
        "encoder's one-off ONNX export into the temp cache)"
    )

    config = EmbeddingHeadConfig(epochs=EPOCHS, encoder_precision=args.precision)
    # A head is a few hundred examples: one thread trains it fastest, and several threads
    # collapse (10x slower) when other work shares the CPUs.
    import torch

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    tenants: list[TenantModel] = []
    train_s = save_s = db_s = 0.0
    t_all = time.perf_counter()
    chunk = 50
    for begin in range(0, args.tenants, chunk):
        with session_scope(engine) as session:
            for i in range(begin, min(begin + chunk, args.tenants)):
                chosen = rng.sample(
                    intents, rng.randint(MIN_INTENTS, min(MAX_INTENTS, len(intents)))
                )
                train_idx: list[int] = []
                rest_idx: list[int] = []
                for intent in chosen:
                    pool = by_label[intent]
                    picked = rng.sample(pool, min(EXAMPLES_PER_INTENT, len(pool)))
                    train_idx.extend(picked)
                    rest_idx.extend(sorted(set(pool) - set(picked)))
                t1 = time.perf_counter()
                model = backend.train(
                    features[train_idx],
                    [labels[j] for j in train_idx],
                    config,
                    seed=i,
                    validation=None,
                    on_epoch=None,
                    progress=lambda _f: None,
                )
                t2 = time.perf_counter()
                train_s += t2 - t1
                tenant, key = create_tenant(session, f"bench-{i:05d}")
                model_id = new_id("model")
                tmp = Path(tempfile.mkdtemp(dir=scratch))
                model.save(tmp)
                artifact = f"tenants/{tenant.id}/models/{model_id}"
                store.put_dir(artifact, tmp)
                shutil.rmtree(tmp, ignore_errors=True)
                digest = sha256_dir(store.local_dir(artifact))
                t3 = time.perf_counter()
                save_s += t3 - t2
                session.add(
                    Model(
                        id=model_id,
                        tenant_id=tenant.id,
                        dataset_id="ds_bench",
                        name=f"bench-{i:05d}",
                        backend="embedding-head",
                        backend_version="1",
                        task="intent",
                        params={},
                        status="succeeded",
                        progress=1.0,
                        labels=model.labels,
                        artifact_key=artifact,
                        artifact_sha256=digest,
                        metrics=None,
                    )
                )
                held_out = rest_idx or train_idx
                sample = rng.sample(held_out, min(PREDICT_TEXTS, len(held_out)))
                tenants.append(
                    TenantModel(
                        tenant_id=tenant.id,
                        api_key=key.secret,
                        model_id=model_id,
                        labels=len(model.labels),
                        examples=len(train_idx),
                        texts=[texts[j] for j in sample],
                    )
                )
            t_commit = time.perf_counter()
        db_s += time.perf_counter() - t_commit  # the commit, as the session closes
        done = len(tenants)
        if done % 200 == 0 or done == args.tenants:
            print(
                f"  {done:5d}/{args.tenants} tenants and models "
                f"({time.perf_counter() - t_all:.1f} s)",
                flush=True,
            )
    dispose_engines()
    torch.set_num_threads(torch_threads)
    timings["heads_total_s"] = time.perf_counter() - t_all
    timings["heads_train_s"] = train_s
    timings["heads_save_s"] = save_s
    timings["commit_s"] = db_s
    timings["labels_mean"] = statistics.fmean(t.labels for t in tenants)
    timings["examples_mean"] = statistics.fmean(t.examples for t in tenants)
    print(
        f"{len(tenants)} tenants: {timings['heads_total_s']:.1f} s "
        f"(training {train_s:.1f} s on 1 torch thread, saving {save_s:.1f} s); "
        f"{timings['labels_mean']:.1f} intents and {timings['examples_mean']:.0f} examples a "
        "model on average"
    )
    return tenants, timings


# --- server -------------------------------------------------------------------------------


def child_pids(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(x) for x in (task / "children").read_text().split()]
    return out


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (gateway processes, train workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += child_pids(p)
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its descendants so far."""
    return sum(c for c in map(cpu_seconds, tree_pids(pid)) if c == c)


def tree_memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) summed over ``pid`` and its descendants, MB (PSS shares a page among the
    processes that map it, so shared libraries count once)."""
    rss = pss = 0.0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                name, _, rest = line.partition(":")
                if name in ("Rss", "Pss"):
                    kb = int(rest.split()[0]) * 1024 / MB
                    rss, pss = (rss + kb, pss) if name == "Rss" else (rss, pss + kb)
    return rss, pss


@contextlib.contextmanager
def run_server(
    data_dir: Path, port: int, max_batch: int, device: str, log_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes], float]]:
    """Start ``parley serve`` on ``data_dir``; yield (base URL, process, startup s); stop it."""
    env = {
        "PARLEY_QUEUE__WORKERS": "0",
        "PARLEY_SERVING__MAX_BATCH": str(max_batch),
        "PARLEY_SERVING__DEVICE": device,
    }
    with parley_server(data_dir, port, log_path, env) as (url, proc, startup):
        print(
            f"server (max_batch={max_batch}) up on {url} in {startup:.1f} s, pid {proc.pid} "
            f"(log: {log_path})",
            flush=True,
        )
        yield url, proc, startup


# --- requests -----------------------------------------------------------------------------


def predict(client: httpx.Client, tenant: TenantModel, text: str) -> str | None:
    """One single-text prediction; ``None`` if it succeeded, else what went wrong."""
    try:
        resp = client.post(
            f"/v1/models/{tenant.model_id}/predict",
            json={"text": text},
            headers={"Authorization": f"Bearer {tenant.api_key}"},
        )
    except httpx.HTTPError as e:
        return f"{type(e).__name__}: {e}"
    if resp.status_code != 200:
        return f"HTTP {resp.status_code}: {resp.text[:300]}"
    try:
        body = resp.json()
    except ValueError:
        return f"not JSON: {resp.text[:300]}"
    if not body.get("predictions"):
        return f"no predictions: {str(body)[:300]}"
    return None


def timed(client: httpx.Client, tenant: TenantModel, text: str) -> tuple[float, str | None]:
    t0 = time.perf_counter()
    error = predict(client, tenant, text)
    return (time.perf_counter() - t0) * 1000, error


def note_error(samples: list[str], error: str) -> None:
    if len(samples) < ERROR_SAMPLES:
        samples.append(error)


def measure_cold(
    client: httpx.Client, tenants: Sequence[TenantModel], result: ServerResult
) -> None:
    """First (cold) and second (warm) call for each of ``tenants``, in turn."""
    first: list[float] = []
    warm: list[float] = []
    pairs: list[tuple[float, float]] = []
    errors = 0
    for t in tenants:
        ms_first, err_first = timed(client, t, t.texts[0])
        ms_warm, err_warm = timed(client, t, t.texts[1 % len(t.texts)])
        for err in (err_first, err_warm):
            if err is not None:
                errors += 1
                note_error(result.error_samples, f"cold-load: {err}")
        if err_first is None:
            first.append(ms_first)
        if err_warm is None:
            warm.append(ms_warm)
        if err_first is None and err_warm is None:
            pairs.append((ms_first, ms_warm))
    warm_median = statistics.median(warm) if warm else float("nan")
    cost = [f - warm_median for f, _ in pairs]
    result.cold = {
        "models": len(tenants),
        "errors": errors,
        "first_p50_ms": percentile(first, 50),
        "first_p90_ms": percentile(first, 90),
        "first_p99_ms": percentile(first, 99),
        "first_max_ms": max(first, default=float("nan")),
        "warm_p50_ms": warm_median,
        "warm_p99_ms": percentile(warm, 99),
        "cost_p50_ms": percentile(cost, 50),
        "cost_p90_ms": percentile(cost, 90),
        "cost_p99_ms": percentile(cost, 99),
    }
    c = result.cold
    print(
        f"  cold load ({len(tenants)} models): first call p50 {c['first_p50_ms']:.1f} ms, "
        f"p99 {c['first_p99_ms']:.1f} ms; warm p50 {warm_median:.1f} ms; cold cost p50 "
        f"{c['cost_p50_ms']:.1f} ms, p99 {c['cost_p99_ms']:.1f} ms ({errors} errors)",
        flush=True,
    )


def load_all(client: httpx.Client, tenants: Sequence[TenantModel], result: ServerResult) -> None:
    """One sequential prediction per tenant, so that every model is loaded."""
    t0 = time.perf_counter()
    for t in tenants:
        error = predict(client, t, t.texts[0])
        if error is not None:
            result.load_all_errors += 1
            note_error(result.error_samples, f"load-all: {error}")
    result.load_all_s = time.perf_counter() - t0


def predict_request(host: str, tenant: TenantModel, text: str) -> bytes:
    """The raw HTTP/1.1 bytes of one single-text ``predict`` call (keep-alive)."""
    body = json.dumps({"text": text}).encode()
    head = (
        f"POST /v1/models/{tenant.model_id}/predict HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"Authorization: Bearer {tenant.api_key}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def raw_exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: bytes,
    expect: bytes = b'"predictions"',
) -> str | None:
    """Send one request on a kept-alive connection and read its whole answer; ``None`` if it
    was a 200 whose body holds ``expect``, else what went wrong."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    match = CONTENT_LENGTH.search(head)
    if match is None:
        return f"HTTP {status} without Content-Length: {head[:200]!r}"
    body = await reader.readexactly(int(match.group(1)))
    if status != 200:
        return f"HTTP {status}: {body[:300].decode(errors='replace')}"
    if expect not in body:
        return f"no {expect.decode()}: {body[:300].decode(errors='replace')}"
    return None


def tenant_plans(
    url: str, tenants: Sequence[TenantModel], clients: int, per_client: int, seed: int
) -> list[list[bytes]]:
    """Each client's ``predict`` requests, for random tenants (seeded)."""
    parsed = httpx.URL(url)
    host = f"{parsed.host}:{parsed.port or 80}"
    plans = []
    for index in range(clients):
        rng = random.Random(seed * 1_000_003 + clients * 1_000 + index)
        plan = []
        for _ in range(per_client):
            tenant = rng.choice(tenants)
            plan.append(predict_request(host, tenant, rng.choice(tenant.texts)))
        plans.append(plan)
    return plans


def run_load(
    url: str,
    plans: Sequence[Sequence[bytes]],
    max_seconds: float,
    result: LoadResult,
    server_pid: int,
    expect: bytes = b'"predictions"',
) -> None:
    """One concurrent keep-alive connection a plan sends the plan's requests, one at a time
    (closed loop), stopping at ``max_seconds``; fill ``result``.

    The clients are one asyncio loop writing pre-built HTTP/1.1 requests on raw sockets (like
    ``wrk``): a few tens of microseconds of client CPU a request, so that on a small machine
    the load generator takes little CPU from the server it measures. Server CPU is that of the
    server's process tree.
    """
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port or 80
    clients = len(plans)
    clock: dict[str, float] = {}

    async def client(
        plan: Sequence[bytes], ready: asyncio.Barrier
    ) -> tuple[list[float], int, list[str], bool]:
        samples: list[float] = []
        errors: list[str] = []
        failed, stopped = 0, False
        reader, writer = await asyncio.open_connection(host, port)
        try:
            await ready.wait()
            for request in plan:
                if time.monotonic() > clock["deadline"]:
                    stopped = True
                    break
                t0 = time.perf_counter()
                try:
                    error = await raw_exchange(reader, writer, request, expect)
                except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                    error = f"{type(e).__name__}: {e}"
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                if error is None:
                    samples.append((time.perf_counter() - t0) * 1000)
                else:
                    failed += 1
                    note_error(errors, error)
        finally:
            writer.close()
        return samples, failed, errors, stopped

    async def main() -> list[tuple[list[float], int, list[str], bool]]:
        ready = asyncio.Barrier(clients + 1)
        tasks = [asyncio.create_task(client(plan, ready)) for plan in plans]
        try:
            await asyncio.wait_for(ready.wait(), timeout=120)
        except (TimeoutError, asyncio.BrokenBarrierError) as e:
            for t in tasks:
                if t.done() and t.exception():
                    raise BenchError(f"load client failed: {t.exception()}") from e
            raise BenchError("load clients did not connect within 120 s") from e
        clock["t0"] = time.perf_counter()
        clock["deadline"] = time.monotonic() + max_seconds
        clock["server_cpu"] = tree_cpu_seconds(server_pid)
        clock["bench_cpu"] = time.process_time()
        return await asyncio.gather(*tasks)

    # the deadline must exist before any client passes the barrier
    clock["deadline"] = time.monotonic() + max_seconds + 120
    outcomes = asyncio.run(main())
    result.wall_s = time.perf_counter() - clock["t0"]
    result.server_cpu_s = tree_cpu_seconds(server_pid) - clock["server_cpu"]
    result.bench_cpu_s = time.process_time() - clock["bench_cpu"]
    samples = [ms for o in outcomes for ms in o[0]]
    result.requests = len(samples)
    result.errors = sum(o[1] for o in outcomes)
    for o in outcomes:
        for err in o[2]:
            note_error(result.error_samples, err)
    result.stopped_early = any(o[3] for o in outcomes)
    result.p50_ms = percentile(samples, 50)
    result.p90_ms = percentile(samples, 90)
    result.p99_ms = percentile(samples, 99)
    result.mean_ms = statistics.fmean(samples) if samples else float("nan")
    result.max_ms = max(samples, default=float("nan"))
    result.load_1m = load_average().split(" ")[0]
    result.rps = result.requests / result.wall_s if result.wall_s > 0 else float("nan")


def serve_config(
    batching: bool,
    tenants: Sequence[TenantModel],
    data_dir: Path,
    workdir: Path,
    args: argparse.Namespace,
) -> ServerResult:
    max_batch = args.max_batch if batching else 1
    label = "on" if batching else "off"
    result = ServerResult(batching=label, max_batch=max_batch)
    print(f"\n== batching {label} (PARLEY_SERVING__MAX_BATCH={max_batch})", flush=True)
    port = args.port or free_port()
    log_path = workdir / f"server-batching-{label}.log"
    try:
        with run_server(data_dir, port, max_batch, args.device, log_path) as (url, proc, up):
            result.startup_s = up
            time.sleep(0.5)  # let start-up allocations settle
            result.rss_start_mb, _ = rss_mb(proc.pid)
            with httpx.Client(base_url=url, timeout=60.0) as client:
                client.get("/v1/health").raise_for_status()  # open the connection
                cold_n = min(args.cold_models, len(tenants)) if batching else 0
                if cold_n:
                    if len(tenants) > cold_n:  # warm the server's own code paths first
                        spare = tenants[-1]
                        predict(client, spare, spare.texts[0])
                        predict(client, spare, spare.texts[0])
                    measure_cold(client, tenants[:cold_n], result)
                load_all(client, tenants, result)
                health = client.get("/v1/health").json()
                result.models_loaded = int(health.get("models_loaded", -1))
            time.sleep(0.5)
            result.rss_loaded_mb, _ = rss_mb(proc.pid)
            result.children = len(child_pids(proc.pid))
            print(
                f"  loaded {result.models_loaded} models in {result.load_all_s:.1f} s "
                f"({result.load_all_errors} errors); RSS {result.rss_start_mb:.0f} MB before, "
                f"{result.rss_loaded_mb:.0f} MB after ({result.children} child processes)",
                flush=True,
            )
            for clients in args.clients:
                per_client = args.per_client or PER_CLIENT.get(clients, max(15, 640 // clients))
                load = LoadResult(
                    batching=label, max_batch=max_batch, clients=clients, per_client=per_client
                )
                plans = tenant_plans(url, tenants, clients, per_client, args.seed)
                run_load(url, plans, args.max_seconds, load, proc.pid)
                result.load.append(load)
                print(
                    f"  {clients:3d} clients x {per_client}: {load.requests} ok, "
                    f"{load.errors} errors in {load.wall_s:.1f} s = {load.rps:.1f} req/s; "
                    f"p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms"
                    f"{' (stopped at --max-seconds)' if load.stopped_early else ''}",
                    flush=True,
                )
                for err in load.error_samples:
                    print(f"    error: {err}")
            result.rss_end_mb, result.rss_peak_mb = rss_mb(proc.pid)
            if proc.poll() is not None:
                raise BenchError(
                    f"server exited with code {proc.returncode} during the run; log tail:\n"
                    f"{tail(log_path)}"
                )
    finally:
        for err in result.error_samples:
            print(f"  error: {err}")
    return result


# --- the Rasa-shaped scenario: one bot's intent model from a Rasa nlu.yml -----------------

RASA_NLU = Path(__file__).resolve().parent / "data" / "rasa_init_nlu.yml"
# Messages the model was not trained on, for /model/parse (in the spirit of `rasa init`'s bot).
RASA_MESSAGES = (
    "hey, good morning to you",
    "hello, anybody there?",
    "ok bye, see you tomorrow",
    "I need to leave now, goodbye",
    "yes, that is right",
    "sure, go ahead",
    "no, I don't want that",
    "absolutely not",
    "I'm feeling fantastic today",
    "things are going really well",
    "I feel miserable",
    "today was a really bad day",
    "wait, am I speaking to a bot?",
    "is a human answering me?",
    "hi!",
    "nope",
)
RASA_RECYCLE_IDLE_S = 15.0  # the measured server's worker releases PyTorch after this idle
RASA_OPERATOR_TOKEN = "bench-operator-token-0123456789abcdef"
RASA_ONE_CLIENT = 300  # sequential /model/parse requests of the one-client measurement
RASA_PER_CLIENT = 40  # requests per client at RASA_CLIENTS clients
RASA_CLIENTS = 64
EXTRA_MODELS = 100
EXTRA_WARM = 10  # models loaded before the extra ones are measured (warm the predict route)
# Targets of issue 15 (Rasa 3.6 on its own `rasa init` bot here: 80 req/s, p50 12.9 ms with
# one client, 1.15 GB for one model, ready 52 s after start).
RASA_RPS_TARGET = 400.0
RASA_P99_TARGET_MS = 300.0
RASA_ONE_P50_TARGET_MS = 5.0
RASA_IDLE_TARGET_MB = 1000.0
RASA_PER_MODEL_TARGET_KB = 50.0
RASA_FIRST_ANSWER_TARGET_S = 10.0


@dataclass
class RasaResult:
    processes: str
    train_s: float = float("nan")
    first_answer_s: float = float("nan")
    healthy_s: float = float("nan")
    idle_rss_mb: float = float("nan")
    idle_pss_mb: float = float("nan")
    idle_processes: int = 0
    retrain_s: float = float("nan")
    trained_rss_mb: float = float("nan")  # idle, right after this server's worker trained
    trained_pss_mb: float = float("nan")
    recycled_s: float = float("nan")  # seconds after the training until the worker recycled
    recycled_rss_mb: float = float("nan")  # idle, after the worker released PyTorch
    recycled_pss_mb: float = float("nan")
    distinct_texts: int = 0  # distinct /model/parse texts among the requests sent
    sent_texts: int = 0
    extra_models: int = 0
    extra_labels: float = 0.0
    extra_errors: int = 0
    warm_rss_mb: float = float("nan")
    loaded_rss_mb: float = float("nan")
    loaded_pss_mb: float = float("nan")
    load: list[LoadResult] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    @property
    def per_model_kb(self) -> float:
        if not self.extra_models:
            return float("nan")
        return (self.loaded_rss_mb - self.warm_rss_mb) * MB / 1000 / self.extra_models


def parse_request(host: str, api_key: str, text: str) -> bytes:
    """The raw HTTP/1.1 bytes of one Rasa ``POST /model/parse`` call (keep-alive)."""
    body = json.dumps({"text": text}).encode()
    head = (
        "POST /model/parse HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"Authorization: Bearer {api_key}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def train_rasa_bot(data_dir: Path, workdir: Path, result: RasaResult) -> tuple[str, str]:
    """On a first server: a tenant, its dataset imported from ``RASA_NLU``, an intent model
    trained by the server's train worker and made ``production``; return the tenant's key and
    the dataset's id."""
    log_path = workdir / "server-rasa-setup.log"
    env = {"PARLEY_OPERATOR_TOKEN": RASA_OPERATOR_TOKEN}
    with parley_server(data_dir, free_port(), log_path, env) as (url, _proc, _up):
        api_key = create_tenant(url, RASA_OPERATOR_TOKEN)
        headers = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=url, timeout=60.0, headers=headers) as client:
            dataset = upload_dataset(client, "rasa-init", RASA_NLU, content_type="application/yaml")
            model, result.train_s = train(client, dataset["id"], "rasa-init")
            check(client.put("/v1/aliases/production", json={"model_id": model["id"]}), 200)
    print(
        f"rasa bot: {dataset['num_labels']} intents, {dataset['num_examples']} examples; "
        f"trained in {result.train_s:.1f} s (through the API and the train worker)",
        flush=True,
    )
    return api_key, str(dataset["id"])


def rasa_texts() -> list[str]:
    """The texts /model/parse requests start with: the nlu.yml examples and ``RASA_MESSAGES``."""
    examples = [
        line.strip()[2:].strip()
        for line in RASA_NLU.read_text().splitlines()
        if line.strip().startswith("- ") and not line.strip().startswith("- intent:")
    ]
    return [*examples, *RASA_MESSAGES]


def rasa_plans(
    host: str,
    api_key: str,
    clients: int,
    per_client: int,
    rng: random.Random,
    numbers: Iterator[int],
) -> tuple[list[list[bytes]], list[str]]:
    """Each client's /model/parse requests, and their texts: a random base text and a request
    number from ``numbers`` (unique in the run), so that no two requests send the same text."""
    bases = rasa_texts()
    texts = [f"{rng.choice(bases)} {next(numbers)}" for _ in range(clients * per_client)]
    plans = [
        [parse_request(host, api_key, t) for t in texts[c * per_client : (c + 1) * per_client]]
        for c in range(clients)
    ]
    return plans, texts


def worker_pids(pid: int) -> set[int]:
    """The train worker processes in ``pid``'s process tree."""
    return {p for p in tree_pids(pid) if b"training.worker" in _cmdline(p)}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@contextlib.contextmanager
def counter_store(processes: int) -> Iterator[dict[str, str]]:
    """The environment of a server of ``processes`` gateway processes: those need a shared
    counter store, so a throwaway redis-server when PARLEY_REDIS__URL is not set."""
    if processes <= 1 or os.environ.get("PARLEY_REDIS__URL"):
        yield {}
        return
    from tests.support.redis_server import RedisServer, redis_server_path

    if redis_server_path() is None:
        raise BenchError(
            f"--processes {processes} needs a shared counter store: set PARLEY_REDIS__URL or "
            "install redis-server"
        )
    with RedisServer() as redis:
        print(f"  counters in a throwaway redis-server ({redis.url})", flush=True)
        yield {"PARLEY_REDIS__URL": redis.url}


def run_rasa(
    args: argparse.Namespace, tenants: Sequence[TenantModel], data_dir: Path, workdir: Path
) -> RasaResult:
    """The Rasa-shaped measurements on a fresh ``parley serve`` (see the module docstring)."""
    result = RasaResult(processes=str(args.processes or "default"))
    print("\n== Rasa-shaped /model/parse (a rasa-init bot trained from nlu.yml)", flush=True)
    api_key, dataset_id = train_rasa_bot(data_dir, workdir, result)
    log_path = workdir / "server-rasa.log"
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        with contextlib.ExitStack() as stack:
            env = stack.enter_context(counter_store(args.processes))
            env["PARLEY_QUEUE__RECYCLE_IDLE_S"] = str(args.recycle_idle_s)
            if args.processes:
                env["PARLEY_SERVING__PROCESSES"] = str(args.processes)
            url, proc, healthy = stack.enter_context(
                parley_server(data_dir, free_port(), log_path, env)
            )
            host = url.removeprefix("http://")
            with httpx.Client(base_url=url, timeout=60.0, headers=headers) as client:
                t0 = time.perf_counter()
                client.post("/model/parse", json={"text": "hello"})
                # spawn → healthy (polled every 0.25 s) + the first parse: slightly pessimistic
                result.healthy_s = healthy
                first = client.post("/model/parse", json={"text": "hi"})
                result.first_answer_s = healthy + time.perf_counter() - t0
                check(first, 200)
                time.sleep(1.0)  # start-up allocations settle
                pids = tree_pids(proc.pid)
                result.idle_processes = len(pids)
                result.idle_rss_mb, result.idle_pss_mb = tree_memory_mb(proc.pid)
                print(
                    f"  first answer {result.first_answer_s:.1f} s after spawn; idle: "
                    f"{len(pids)} processes, RSS {result.idle_rss_mb:.0f} MB, PSS "
                    f"{result.idle_pss_mb:.0f} MB",
                    flush=True,
                )
            load_extra_models(args, tenants, url, proc.pid, result)
            rng, numbers = random.Random(args.seed), itertools.count(1)
            levels = [(1, args.rasa_one_client), (args.rasa_clients, args.rasa_per_client)]
            for clients, per_client in levels:
                plans, texts = rasa_plans(host, api_key, clients, per_client, rng, numbers)
                result.sent_texts += len(texts)
                result.distinct_texts += len(set(texts))
                load = LoadResult(
                    batching="rasa",
                    max_batch=args.max_batch,
                    clients=clients,
                    per_client=per_client,
                )
                run_load(url, plans, args.max_seconds, load, proc.pid, expect=b'"intent"')
                result.load.append(load)
                print(
                    f"  {clients:3d} clients x {per_client}: {load.requests} ok, {load.errors} "
                    f"errors, {load.rps:.1f} req/s; p50 {load.p50_ms:.1f} ms, p99 "
                    f"{load.p99_ms:.1f} ms; server CPU {server_ms(load):.2f} ms a request",
                    flush=True,
                )
                for err in load.error_samples:
                    note_error(result.error_samples, err)
            retrain_and_idle(args, url, headers, dataset_id, proc.pid, result)
            if proc.poll() is not None:
                raise BenchError(f"server exited during the run; log tail:\n{tail(log_path)}")
    finally:
        for err in result.error_samples:
            print(f"  error: {err}")
    return result


def load_extra_models(
    args: argparse.Namespace,
    tenants: Sequence[TenantModel],
    url: str,
    server_pid: int,
    result: RasaResult,
) -> None:
    """Load the warm-up models, then ``--extra-models`` more, right after idle (before any load
    phase has grown and freed the heap, whose slack the models would fill unseen)."""
    n_warm = args.extra_warm
    warm, extra = tenants[:n_warm], tenants[n_warm : n_warm + args.extra_models]
    with httpx.Client(base_url=url, timeout=60.0) as client:
        for i, t in enumerate([*warm, *extra]):
            if i == len(warm):
                time.sleep(1.0)
                result.warm_rss_mb, _ = tree_memory_mb(server_pid)
            error = predict(client, t, t.texts[0])
            if error is not None:
                result.extra_errors += 1
                note_error(result.error_samples, f"extra models: {error}")
    result.extra_models = len(extra)
    result.extra_labels = statistics.fmean(t.labels for t in extra) if extra else 0.0
    time.sleep(1.0)
    result.loaded_rss_mb, result.loaded_pss_mb = tree_memory_mb(server_pid)
    print(
        f"  {len(warm)} + {len(extra)} extra models loaded ({result.extra_errors} errors; "
        f"{result.extra_labels:.1f} intents a model): RSS {result.warm_rss_mb:.0f} MB "
        f"after the first {len(warm)}, {result.loaded_rss_mb:.0f} MB after all, "
        f"{result.per_model_kb:.0f} kB a model",
        flush=True,
    )


def retrain_and_idle(
    args: argparse.Namespace,
    url: str,
    headers: dict[str, str],
    dataset_id: str,
    server_pid: int,
    result: RasaResult,
) -> None:
    """This server's worker trains the bot's model once; the idle memory right after, and
    after the worker has exited to release PyTorch and been replaced."""
    before = worker_pids(server_pid)
    with httpx.Client(base_url=url, timeout=60.0, headers=headers) as client:
        model, result.retrain_s = train(client, dataset_id, "rasa-init again")
    if model["status"] != "succeeded":
        raise BenchError(f"the second training {model['status']}: {model.get('failure_message')}")
    done = time.perf_counter()
    time.sleep(2.0)
    result.trained_rss_mb, result.trained_pss_mb = tree_memory_mb(server_pid)
    print(
        f"  trained again in {result.retrain_s:.1f} s on this server; idle right after: RSS "
        f"{result.trained_rss_mb:.0f} MB, PSS {result.trained_pss_mb:.0f} MB",
        flush=True,
    )
    deadline = done + args.recycle_idle_s + 60
    while time.perf_counter() < deadline:  # the worker exits idle and a fresh one starts
        now = worker_pids(server_pid)
        if now and not now & before:
            result.recycled_s = time.perf_counter() - done
            break
        time.sleep(0.5)
    else:
        print(f"  the worker did not recycle within {args.recycle_idle_s + 60:.0f} s", flush=True)
        return
    time.sleep(3.0)  # the fresh worker has started
    result.recycled_rss_mb, result.recycled_pss_mb = tree_memory_mb(server_pid)
    print(
        f"  worker recycled {result.recycled_s:.0f} s after the training: idle RSS "
        f"{result.recycled_rss_mb:.0f} MB, PSS {result.recycled_pss_mb:.0f} MB",
        flush=True,
    )


def server_ms(load: LoadResult) -> float:
    """Server CPU milliseconds a request (all its processes): comparable under other load."""
    return load.server_cpu_s * 1000 / load.requests if load.requests else float("nan")


def rasa_tables(rasa: RasaResult) -> str:
    rows = [
        [
            str(r.clients),
            str(r.requests),
            str(r.errors),
            fmt(r.p50_ms, ".1f"),
            fmt(r.p99_ms, ".1f"),
            fmt(r.rps, ".1f"),
            fmt(server_ms(r), ".2f"),
            fmt(r.requests / r.server_cpu_s if r.server_cpu_s else float("nan"), ".0f"),
            fmt(r.bench_cpu_s, ".1f"),
            r.load_1m,
        ]
        for r in rasa.load
    ]
    header = [
        "clients",
        "ok",
        "errors",
        "p50 ms",
        "p99 ms",
        "req/s",
        "server CPU ms/req",
        "req per server CPU s",
        "client cpu s",
        "load 1m",
    ]
    load = render_table(header, rows, "rrrrrrrrrr")
    memory = render_table(
        [
            "processes",
            "train s",
            "first answer s",
            "idle RSS MB",
            "idle PSS MB",
            "procs",
            "idle RSS after training MB",
            "worker recycled MB",
            "RSS warm-up models MB",
            f"RSS +{rasa.extra_models} more MB",
            "intents/model",
            "kB/model",
        ],
        [
            [
                rasa.processes,
                fmt(rasa.train_s, ".1f"),
                fmt(rasa.first_answer_s, ".1f"),
                fmt(rasa.idle_rss_mb, ".0f"),
                fmt(rasa.idle_pss_mb, ".0f"),
                str(rasa.idle_processes),
                fmt(rasa.trained_rss_mb, ".0f"),
                fmt(rasa.recycled_rss_mb, ".0f"),
                fmt(rasa.warm_rss_mb, ".0f"),
                fmt(rasa.loaded_rss_mb, ".0f"),
                fmt(rasa.extra_labels, ".1f"),
                fmt(rasa.per_model_kb, ".0f"),
            ]
        ],
        "lrrrrrrrrrrr",
    )
    texts = (
        f"/model/parse texts: {rasa.distinct_texts} distinct of {rasa.sent_texts} sent (each "
        "request its own text: no batch encodes a text once for several requests)"
    )
    return f"{load}\n\n{memory}\n{texts}"


def rasa_targets(rasa: RasaResult) -> list[dict[str, Any]]:
    nan = float("nan")
    one = next((r for r in rasa.load if r.clients == 1), None)
    top = max(rasa.load, key=lambda r: r.clients, default=None)
    n = top.clients if top else 0
    note = "" if n >= RASA_CLIENTS else f" (only {n}; target is for {RASA_CLIENTS})"
    checks = [
        (f"rasa: req/s at {n} clients{note}", top.rps if top else nan, ">=", RASA_RPS_TARGET),
        (f"rasa: p99 ms at {n} clients", top.p99_ms if top else nan, "<=", RASA_P99_TARGET_MS),
        ("rasa: p50 ms, one client", one.p50_ms if one else nan, "<=", RASA_ONE_P50_TARGET_MS),
        ("rasa: idle RSS MB, gateway + workers", rasa.idle_rss_mb, "<=", RASA_IDLE_TARGET_MB),
        (
            "rasa: idle RSS MB after a training (worker recycled)",
            rasa.recycled_rss_mb,
            "<=",
            RASA_IDLE_TARGET_MB,
        ),
        (
            "rasa: kB per extra loaded model (RSS)",
            rasa.per_model_kb,
            "<=",
            RASA_PER_MODEL_TARGET_KB,
        ),
        ("rasa: spawn to first answer s", rasa.first_answer_s, "<=", RASA_FIRST_ANSWER_TARGET_S),
    ]
    return [check_row(*c) for c in checks]


def check_row(
    title: str, value: float, op: str, threshold: float, spec: str = ".1f"
) -> dict[str, Any]:
    """One row of the targets table: ``value`` against ``op`` (<= or >=) ``threshold``."""
    ok = value == value and (value <= threshold if op == "<=" else value >= threshold)
    return {
        "check": title,
        "value": value,
        "shown": fmt(value, spec),
        "target": f"{op} {threshold:g}",
        "pass": bool(ok),
    }


# --- report -------------------------------------------------------------------------------


def load_table(servers: Sequence[ServerResult]) -> str:
    rows = []
    for s in servers:
        for r in s.load:
            rows.append(
                [
                    s.batching,
                    str(r.max_batch),
                    str(r.clients),
                    f"{r.requests}",
                    f"{r.errors}",
                    fmt(r.p50_ms, ".1f"),
                    fmt(r.p90_ms, ".1f"),
                    fmt(r.p99_ms, ".1f"),
                    fmt(r.max_ms, ".1f"),
                    fmt(r.rps, ".1f"),
                    fmt(r.wall_s, ".1f") + ("*" if r.stopped_early else ""),
                    fmt(r.server_cpu_s, ".1f"),
                    fmt(r.bench_cpu_s, ".1f"),
                    r.load_1m,
                ]
            )
    header = [
        "batching",
        "max_batch",
        "clients",
        "ok",
        "errors",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "req/s",
        "wall s",
        "server cpu s",
        "client cpu s",
        "load 1m",
    ]
    return render_table(header, rows, "lrrrrrrrrrrrrr")


def memory_table(servers: Sequence[ServerResult], n: int) -> str:
    rows = []
    for s in servers:
        per_model_kb = (s.rss_loaded_mb - s.rss_start_mb) * MB / 1000 / n if n else float("nan")
        rows.append(
            [
                s.batching,
                fmt(s.startup_s, ".1f"),
                fmt(s.rss_start_mb, ".0f"),
                fmt(s.rss_loaded_mb, ".0f"),
                fmt(per_model_kb, ".0f"),
                fmt(s.rss_end_mb, ".0f"),
                fmt(s.rss_peak_mb, ".0f"),
                str(s.models_loaded),
                fmt(s.load_all_s, ".1f"),
                str(s.load_all_errors),
                str(s.children),
            ]
        )
    header = [
        "batching",
        "start s",
        "RSS before MB",
        f"RSS {n} models MB",
        "kB/model",
        "RSS end MB",
        "peak MB",
        "loaded",
        "load-all s",
        "errors",
        "children",
    ]
    return render_table(header, rows, "lrrrrrrrrrr")


def cold_table(cold: dict[str, Any]) -> str:
    rows = [
        [
            "first call (cold: load + key/model look-up)",
            *(fmt(cold.get(f"first_{p}_ms", float("nan")), ".1f") for p in ("p50", "p90", "p99")),
        ],
        [
            "second call (warm)",
            fmt(cold.get("warm_p50_ms", float("nan")), ".1f"),
            "-",
            fmt(cold.get("warm_p99_ms", float("nan")), ".1f"),
        ],
        [
            "cold cost = first - median warm",
            *(fmt(cold.get(f"cost_{p}_ms", float("nan")), ".1f") for p in ("p50", "p90", "p99")),
        ],
    ]
    title = f"cold load, {cold.get('models', 0)} models ({cold.get('errors', 0)} errors)"
    return render_table([title, "p50 ms", "p90 ms", "p99 ms"], rows)


def find_load(servers: Sequence[ServerResult], batching: str, clients: int) -> LoadResult | None:
    for s in servers:
        if s.batching == batching:
            for r in s.load:
                if r.clients == clients:
                    return r
    return None


def evaluate_targets(
    servers: Sequence[ServerResult], n: int, clients: Sequence[int]
) -> list[dict[str, Any]]:
    on = next((s for s in servers if s.batching == "on"), None)
    top = TARGET_CLIENTS if TARGET_CLIENTS in clients else max(clients)
    on_top, off_top = find_load(servers, "on", top), find_load(servers, "off", top)
    nan = float("nan")
    rss = on.rss_loaded_mb if on else nan
    cold = on.cold.get("cost_p50_ms", nan) if on else nan
    speedup = (
        on_top.rps / off_top.rps if on_top and off_top and off_top.rps and off_top.rps > 0 else nan
    )
    p99 = on_top.p99_ms if on_top else nan
    models_note = "" if n >= TARGET_MODELS else f" (only {n}; target is for {TARGET_MODELS})"
    checks = [
        ("server RSS MB, " + f"{n} models loaded{models_note}", rss, "<=", RSS_TARGET_MB, ".0f"),
        ("cold-load cost p50 ms", cold, "<=", COLD_TARGET_MS, ".1f"),
        (f"batching speed-up, req/s on/off at {top} clients", speedup, ">=", SPEEDUP_TARGET, ".2f"),
        (f"p99 ms at {top} clients (batching on)", p99, "<=", P99_TARGET_MS, ".1f"),
    ]
    return [check_row(*c) for c in checks]


# --- main ---------------------------------------------------------------------------------


def parse_clients(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--clients {text!r}: give numbers like 1,16,64") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("--clients needs positive numbers, like 1,16,64")
    return values


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tenants", type=int, default=1000, help="tenants, one model each")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HWU64 folder (train/)")
    p.add_argument("--port", type=int, default=0, help="port for the servers (default: free)")
    p.add_argument("--clients", type=parse_clients, default=[1, 16, 64], help="e.g. 1,16,64")
    p.add_argument(
        "--per-client",
        type=int,
        default=0,
        help="requests per client (default: 300 for 1 client, 40 for 16, 15 for 64)",
    )
    p.add_argument("--max-seconds", type=float, default=60.0, help="time bound per load level")
    p.add_argument("--cold-models", type=int, default=COLD_MODELS, help="models timed cold")
    p.add_argument("--max-batch", type=int, default=64, help="MAX_BATCH of the batching server")
    p.add_argument(
        "--precision",
        choices=["auto", "int8", "fp32"],
        default="auto",
        help="encoder precision the heads are trained (and so served) with",
    )
    p.add_argument("--threads", type=int, default=2, help="encoder threads for the setup")
    p.add_argument("--only", choices=["on", "off"], help="run one configuration only")
    p.add_argument(
        "--scenario",
        choices=["both", "tenants", "rasa"],
        default="both",
        help="tenants: many tenants' models (batching on/off); rasa: one bot's model from a "
        "Rasa nlu.yml on /model/parse (its extra models are the first --extra-models tenants; "
        "alone it sets up only those)",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=0,
        help="rasa: gateway processes of the server (PARLEY_SERVING__PROCESSES; 0: its default; "
        "more than 1 uses PARLEY_REDIS__URL, or a throwaway redis-server when it is unset)",
    )
    p.add_argument(
        "--extra-models", type=int, default=EXTRA_MODELS, help="rasa: models loaded after idle"
    )
    p.add_argument(
        "--recycle-idle-s",
        type=float,
        default=RASA_RECYCLE_IDLE_S,
        help="rasa: PARLEY_QUEUE__RECYCLE_IDLE_S of the measured server (its worker releases "
        "PyTorch after this many idle seconds; the server's default is 300)",
    )
    p.add_argument("--rasa-clients", type=int, default=RASA_CLIENTS, help="rasa: clients")
    p.add_argument(
        "--rasa-per-client", type=int, default=RASA_PER_CLIENT, help="rasa: requests a client"
    )
    p.add_argument(
        "--rasa-one-client", type=int, default=RASA_ONE_CLIENT, help="rasa: one-client requests"
    )
    common_flags(
        p,
        "3 tenants on 12 generated intents, 1 and 2 clients, 5 requests each; the rasa bot "
        "with 2 extra models after 1 warm-up model, 1 and 4 clients, worker recycled after 3 s",
    )
    args = p.parse_args(argv)
    args.extra_warm = EXTRA_WARM
    if args.quick:
        args.tenants, args.clients, args.per_client, args.cold_models = 3, [1, 2], 5, 2
        args.max_seconds = min(args.max_seconds, 10.0)
        args.extra_models, args.rasa_clients, args.rasa_per_client = 2, 4, 5
        args.rasa_one_client, args.extra_warm = 20, 1
        args.recycle_idle_s = min(args.recycle_idle_s, 3.0)
    if args.scenario == "rasa":
        args.tenants = args.extra_models + args.extra_warm
    elif args.scenario == "both":
        args.tenants = max(args.tenants, args.extra_models + args.extra_warm)
    if args.tenants < 1 or args.cold_models < 0 or args.max_batch < 2 or args.per_client < 0:
        p.error("--tenants must be >= 1, --max-batch >= 2, --cold-models/--per-client >= 0")
    if min(args.rasa_clients, args.rasa_per_client, args.rasa_one_client) < 1:
        p.error("--rasa-clients, --rasa-per-client and --rasa-one-client must be >= 1")
    return args


def run(
    args: argparse.Namespace, workdir: Path
) -> tuple[dict[str, Any], list[ServerResult], RasaResult | None]:
    data_dir = workdir / "data"
    scratch = workdir / "scratch"
    scratch.mkdir(parents=True)
    if args.quick:
        args.data = quick_intent_data(workdir / "quick")
    t0 = time.perf_counter()
    tenants, timings = setup_tenants(args, data_dir, scratch)
    timings["setup_s"] = time.perf_counter() - t0
    print(f"setup took {timings['setup_s']:.1f} s", flush=True)
    servers = []
    if args.scenario != "rasa":
        configs = [b for b in (True, False) if args.only in (None, "on" if b else "off")]
        servers = [serve_config(b, tenants, data_dir, workdir, args) for b in configs]
    rasa = run_rasa(args, tenants, data_dir, workdir) if args.scenario != "tenants" else None
    return timings, servers, rasa


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    facts = machine_facts()
    print_header(
        f"Parley serving benchmark ({args.tenants} tenants, HWU64)",
        [str(Path(sys.argv[0])), *argv],
        facts,
        server=f"parley serve --no-demo; tenants: PARLEY_QUEUE__WORKERS=0, "
        f"PARLEY_SERVING__MAX_BATCH={args.max_batch} (on) / 1 (off); rasa: with its train "
        f"worker, processes {args.processes or 'default'}; device {args.device}; load clients "
        "run here too",
    )
    outcome, total, code = guarded(lambda tmp: run(args, tmp), "parley-bench-serving-")
    if outcome is None:
        return code
    timings, servers, rasa = outcome
    checks = evaluate_targets(servers, args.tenants, args.clients) if servers else []
    if rasa is not None:
        checks += rasa_targets(rasa)
    print(
        f"\nSetup: {args.tenants} tenants in {timings['setup_s']:.1f} s (featurize "
        f"{timings['featurize_s']:.1f} s with the {timings['precision']} encoder; heads "
        f"{timings['heads_total_s']:.1f} s, of which training {timings['heads_train_s']:.1f} s)"
    )
    if servers:
        print("\nLoad (single-text predict, random tenant per request)")
        print(load_table(servers))
        if any(r.stopped_early for s in servers for r in s.load):
            print("* stopped at --max-seconds before every client sent its requests")
        print("\nMemory (VmRSS of the parley serve process; MB = 10^6 bytes)")
        print(memory_table(servers, args.tenants))
        on = next((s for s in servers if s.batching == "on"), None)
        if on and on.cold:
            print()
            print(cold_table(on.cold))
    if rasa is not None:
        print(
            "\nRasa-shaped POST /model/parse (one bot trained from bench/data/rasa_init_nlu.yml; "
            "server: parley serve --no-demo with its train worker; memory summed over the "
            "process tree, MB = 10^6 bytes; server CPU = all its processes)"
        )
        print(rasa_tables(rasa))
    return report_targets(
        checks,
        total,
        facts,
        args,
        setup=timings,
        servers=[asdict(s) for s in servers],
        rasa=asdict(rasa) if rasa is not None else None,
    )


if __name__ == "__main__":
    sys.exit(main())
