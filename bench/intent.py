"""Intent-classification benchmark on Banking77, end to end through Parley's REST API.

What it measures, per training split (``full`` = ``train/``, 8,622 texts; ``train_10`` = 10
examples per label, 770 texts):

* train time: seconds from ``POST /v1/models`` until the client sees ``status: succeeded``
  (polling every 0.25 s), next to the server's own ``started_at`` -> ``finished_at``;
* test accuracy and macro-F1, computed here from batch predictions (``texts``, 64 a request)
  on the whole ``test/`` split (3,080 texts), next to the server's held-out metrics. Accuracy
  is closed-set, as published results are: the top intent, whether or not the model flagged
  the text ``out_of_scope`` (these datasets have no out-of-scope texts); the share of flagged
  test texts, and the accuracy when a flagged text counts as an error, are shown beside it;
* single-text latency over HTTP: ``--requests`` sequential calls on one keep-alive client,
  after 10 warm-up calls (p50 / p90 / p99 / mean);
* throughput: ``--concurrency`` clients (threads, one ``httpx.Client`` each) each sending
  ``--per-client`` single-text requests in a loop, bounded by ``--max-seconds``.

The results are printed as a plain-text table, followed by the targets with PASS/FAIL:
issue 2 (Banking77, the default backend): full train <= 60 s; accuracy >= 0.90 (full) and
>= 0.83 (train_10); p50 <= 15 ms and p99 <= 40 ms. Issue 3: accuracy >= 0.93 on full
Banking77, >= 0.87 at train_10 on Banking77 and on HWU64 (``--data``). ``--backend`` picks
the intent backend (``embedding-head``, ``setfit``), ``--params`` its settings.

Unless ``--url`` is given, the benchmark starts its own server (``parley serve --no-demo``) on
a temporary data directory, creates a tenant with a random operator token, and stops the
server at the end. Run it as::

    .venv/bin/python bench/intent.py --split train_10
    .venv/bin/python bench/intent.py --split both --json /tmp/intent.json
    .venv/bin/python bench/intent.py --backend setfit --split all --data ../shared/datasets/hwu64
    .venv/bin/python bench/intent.py --url http://127.0.0.1:8000 --api-key pk_...
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import csv
import json
import math
import os
import platform
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "banking77"
SPLITS = {"full": "train", "train_10": "train_10", "train_5": "train_5"}
BATCH = 64
OUT_OF_SCOPE = "out_of_scope"
WARMUP = 10
POLL_S = 0.25
HEALTH_TIMEOUT_S = 120.0
TRAIN_TIMEOUT_S = 1800.0
STOP_GRACE_S = 15.0

# Targets: (dataset folder or None for any, split or None for every split, result field,
# comparison, threshold, label). Issue 2 set the platform ones (Banking77, the fast default
# backend); issue 3 the few-shot ones (the best published 10-shot results, CPFT: 87.2 on
# Banking77 and 87.1 on HWU64) and full Banking77 >= 93 %.
TARGETS: list[tuple[str | None, str | None, str, str, float, str]] = [
    ("banking77", "full", "train_s", "<=", 60.0, "train seconds (client), issue 2"),
    ("banking77", "full", "accuracy", ">=", 0.90, "test accuracy, issue 2"),
    ("banking77", "train_10", "accuracy", ">=", 0.83, "test accuracy, issue 2"),
    (None, None, "p50_ms", "<=", 15.0, "latency p50 ms"),
    (None, None, "p99_ms", "<=", 40.0, "latency p99 ms"),
    ("banking77", "full", "accuracy", ">=", 0.93, "test accuracy, issue 3"),
    ("banking77", "train_10", "accuracy", ">=", 0.87, "test accuracy, issue 3"),
    ("hwu64", "train_10", "accuracy", ">=", 0.87, "test accuracy, issue 3"),
]


class BenchError(RuntimeError):
    """A failure that ends the benchmark with a message (and a non-zero exit)."""


@dataclass
class SplitResult:
    split: str
    examples: int
    labels: int
    dataset_id: str = ""
    model_id: str = ""
    train_s: float = math.nan
    server_train_s: float = math.nan
    server_accuracy: float = math.nan
    server_macro_f1: float = math.nan
    test_examples: int = 0
    accuracy: float = math.nan  # closed set: the top intent, flagged or not
    macro_f1: float = math.nan
    flagged_share: float = math.nan  # test texts the model flagged out_of_scope
    accuracy_flags_wrong: float = math.nan  # a flagged text counts as an error
    batch_predict_s: float = math.nan
    latency_n: int = 0
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    mean_ms: float = math.nan
    throughput_rps: float = math.nan
    throughput_requests: int = 0
    throughput_errors: int = 0
    throughput_s: float = math.nan
    extra: dict[str, Any] = field(default_factory=dict)


# --- data ---------------------------------------------------------------------------------


def read_split(data_dir: Path, name: str) -> tuple[list[str], list[str]]:
    """Utterances and labels of one split folder (``seq.in`` and ``label``, line by line)."""
    folder = data_dir / name
    try:
        texts = (folder / "seq.in").read_text(encoding="utf-8").splitlines()
        labels = (folder / "label").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise BenchError(f"missing dataset file: {e.filename}") from e
    if len(texts) != len(labels):
        raise BenchError(f"{folder}: {len(texts)} texts but {len(labels)} labels")
    pairs = [(t.strip(), lab.strip()) for t, lab in zip(texts, labels, strict=True)]
    pairs = [(t, lab) for t, lab in pairs if t and lab]
    return [t for t, _ in pairs], [lab for _, lab in pairs]


def write_csv(path: Path, texts: Sequence[str], labels: Sequence[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels, strict=True))


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Unweighted mean of per-label F1 over the labels seen in truth or prediction."""
    tp: dict[str, int] = {}
    fp: dict[str, int] = {}
    fn: dict[str, int] = {}
    for t, p in zip(y_true, y_pred, strict=True):
        if t == p:
            tp[t] = tp.get(t, 0) + 1
        else:
            fp[p] = fp.get(p, 0) + 1
            fn[t] = fn.get(t, 0) + 1
    labels = set(y_true) | set(y_pred)
    scores = []
    for label in labels:
        denom = 2 * tp.get(label, 0) + fp.get(label, 0) + fn.get(label, 0)
        scores.append(2 * tp.get(label, 0) / denom if denom else 0.0)
    return sum(scores) / len(scores) if scores else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100), like numpy's default."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# --- server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server, then SIGKILL its process group after ``STOP_GRACE_S``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        print(f"server did not stop within {STOP_GRACE_S:.0f} s of SIGTERM; killing it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group is ours: start_new_session=True
        proc.wait(timeout=10)


@contextlib.contextmanager
def parley_server(
    data_dir: Path,
    port: int,
    log_path: Path,
    env: dict[str, str],
    *,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes], float]]:
    """Start ``parley serve --no-demo`` on ``data_dir`` with ``env`` added (log level WARNING;
    rate limits off unless ``env`` turns them on); yield (base URL, process, startup seconds);
    stop it. Every bench starts its server here."""
    parley = Path(sys.executable).parent / "parley"
    if not parley.exists():
        raise BenchError(f"{parley} not found; install the project (pip install -e .)")
    full_env = {
        **os.environ,
        "PARLEY_DATA_DIR": str(data_dir),
        "PARLEY_LOG_LEVEL": "WARNING",
        "PARLEY_RATE_LIMITS__ENABLED": "false",  # benches measure throughput, not the limits
        **env,
    }
    cmd = [str(parley), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-demo"]
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )
        try:
            wait_healthy(url, proc, log_path)
            yield url, proc, time.perf_counter() - t0
        finally:
            stop_server(proc)


@contextlib.contextmanager
def run_server(
    workdir: Path, port: int, device: str, operator_token: str
) -> Iterator[tuple[str, Path]]:
    """Start ``parley serve`` on a fresh data dir; yield (base URL, log path); stop it."""
    log_path = workdir / "server.log"
    env = {
        "PARLEY_OPERATOR_TOKEN": operator_token,
        "PARLEY_SERVING__DEVICE": device,
        "PARLEY_QUEUE__THREADS": "0",
    }
    with parley_server(workdir / "data", port, log_path, env) as (url, _proc, startup):
        print(f"server up on {url} in {startup:.1f} s (log: {log_path})")
        yield url, log_path


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    with httpx.Client(base_url=url, timeout=5.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(
                    f"server exited with code {proc.returncode} before it was healthy; "
                    f"log tail:\n{tail(log_path)}"
                )
            try:
                if client.get("/v1/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
    raise BenchError(
        f"server not healthy after {HEALTH_TIMEOUT_S:.0f} s; log tail:\n{tail(log_path)}"
    )


# --- API calls ----------------------------------------------------------------------------


def check(resp: httpx.Response, *expected: int) -> Any:
    """The JSON body of ``resp``, or a ``BenchError`` naming the call and the body."""
    if resp.status_code not in expected:
        req = resp.request
        raise BenchError(
            f"{req.method} {req.url.path} -> HTTP {resp.status_code} (expected "
            f"{'/'.join(map(str, expected))}): {resp.text[:800]}"
        )
    return resp.json()


def create_tenant(url: str, operator_token: str) -> str:
    with httpx.Client(base_url=url, timeout=30.0) as client:
        body = check(
            client.post(
                "/v1/tenants",
                json={"name": f"bench-{secrets.token_hex(4)}"},
                headers={"Authorization": f"Bearer {operator_token}"},
            ),
            201,
        )
    return str(body["api_key"])


def upload_dataset(
    client: httpx.Client,
    name: str,
    path: Path,
    *,
    type: str = "text-intent",
    content_type: str = "text/csv",
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Upload a dataset file and wait until it is ready (large files import in the background)."""
    with path.open("rb") as f:
        resp = client.post(
            "/v1/datasets",
            data={"name": name, "type": type},
            files={"file": (path.name, f, content_type)},
        )
    dataset: dict[str, Any] = check(resp, 201, 202)
    deadline = time.monotonic() + timeout_s
    while dataset["status"] not in ("ready", "failed"):
        if time.monotonic() > deadline:
            raise BenchError(
                f"dataset {dataset['id']} still {dataset['status']} after {timeout_s:.0f} s"
            )
        time.sleep(POLL_S)
        dataset = check(client.get(f"/v1/datasets/{dataset['id']}"), 200)
    if dataset["status"] != "ready":
        raise BenchError(f"dataset import failed: {dataset.get('status_message')}")
    return dataset


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class Progress:
    """One status line while training: rewritten in place on a terminal, sparse otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stdout.isatty()
        self.last_key: tuple[str, int] | None = None
        self.last_print = 0.0

    def update(self, model: dict[str, Any], elapsed: float) -> None:
        pct = int(100 * float(model.get("progress") or 0.0))
        status = str(model["status"])
        extra = ""
        if model.get("queue_position") is not None:
            extra = f", queue position {model['queue_position']}"
        line = f"  training {self.label}: {status} {pct:3d}% ({elapsed:5.1f} s{extra})"
        if self.tty:
            print(f"\r{line:<72}", end="", flush=True)
            return
        key = (status, pct // 10)
        if key != self.last_key or elapsed - self.last_print >= 10:
            print(line, flush=True)
            self.last_key, self.last_print = key, elapsed

    def done(self) -> None:
        if self.tty:
            print(flush=True)


def train(
    client: httpx.Client,
    dataset_id: str,
    label: str,
    params: dict[str, Any] | None = None,
    backend: str | None = None,
    *,
    timeout_s: float = TRAIN_TIMEOUT_S,
    samples: list[tuple[float, float]] | None = None,
) -> tuple[dict[str, Any], float]:
    """Queue a model and poll it to the end; return (final model JSON, client seconds).
    ``samples`` collects (client seconds, progress) at every poll."""
    samples = [] if samples is None else samples
    progress = Progress(label)
    t0 = time.perf_counter()
    body: dict[str, Any] = {"dataset_id": dataset_id, "params": params or {}}
    if backend:
        body["backend"] = backend
    model: dict[str, Any] = check(client.post("/v1/models", json=body), 202)
    try:
        while model["status"] not in ("succeeded", "failed", "cancelled"):
            elapsed = time.perf_counter() - t0
            if elapsed > timeout_s:
                raise BenchError(f"model {model['id']} not done after {timeout_s:.0f} s")
            samples.append((elapsed, float(model.get("progress") or 0.0)))
            progress.update(model, elapsed)
            time.sleep(POLL_S)
            model = check(client.get(f"/v1/models/{model['id']}"), 200)
        train_s = time.perf_counter() - t0
        samples.append((train_s, float(model.get("progress") or 0.0)))
        progress.update(model, train_s)
    finally:
        progress.done()
    if model["status"] != "succeeded":
        raise BenchError(
            f"model {model['id']} {model['status']}: {model.get('failure_message') or '-'}"
        )
    return model, train_s


def predict_batches(
    client: httpx.Client, model_id: str, texts: Sequence[str], labels: set[str]
) -> tuple[list[str], list[bool], float]:
    """For every text (64 a request): the top intent, and whether the model flagged it
    ``out_of_scope`` (under its calibrated threshold); return (intents, flags, seconds).

    The top intent skips the ``out_of_scope`` entry the server puts first for a flagged text
    (unless ``out_of_scope`` is one of the dataset's labels): closed-set accuracy, as the
    published results are measured."""
    intents: list[str] = []
    flags: list[bool] = []
    t0 = time.perf_counter()
    for i in range(0, len(texts), BATCH):
        chunk = list(texts[i : i + BATCH])
        body = {"texts": chunk, "num_results": 2}
        answer = check(client.post(f"/v1/models/{model_id}/predict", json=body), 200)
        preds = answer["predictions"]
        if len(preds) != len(chunk):
            raise BenchError(f"sent {len(chunk)} texts, got {len(preds)} prediction lists")
        flagged_rows = answer.get("out_of_scope") or [False] * len(preds)
        for row, flagged in zip(preds, flagged_rows, strict=True):
            top = [p["label"] for p in row if p["label"] != OUT_OF_SCOPE or p["label"] in labels]
            intents.append(top[0] if top else OUT_OF_SCOPE)
            flags.append(bool(flagged))
    return intents, flags, time.perf_counter() - t0


def predict_one(client: httpx.Client, model_id: str, text: str) -> None:
    body = check(client.post(f"/v1/models/{model_id}/predict", json={"text": text}), 200)
    if not body.get("predictions"):
        raise BenchError(f"empty predictions for {text!r}: {body}")


def measure_latency(
    client: httpx.Client, model_id: str, texts: Sequence[str], n: int
) -> list[float]:
    """Milliseconds of ``n`` sequential single-text calls, after ``WARMUP`` warm-up calls."""
    for i in range(WARMUP):
        predict_one(client, model_id, texts[i % len(texts)])
    samples = []
    for i in range(n):
        text = texts[(WARMUP + i) % len(texts)]
        t0 = time.perf_counter()
        predict_one(client, model_id, text)
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def measure_throughput(
    url: str,
    api_key: str,
    model_id: str,
    texts: Sequence[str],
    clients: int,
    per_client: int,
    max_seconds: float,
) -> tuple[int, int, float]:
    """``clients`` threads each send up to ``per_client`` single-text requests (stopping at
    ``max_seconds``); return (successful requests, errors, wall seconds)."""
    clock: dict[str, float] = {}

    def begin() -> None:  # run once, as every client and this thread pass the barrier
        clock["t0"] = time.perf_counter()
        clock["deadline"] = time.monotonic() + max_seconds

    start = threading.Barrier(clients + 1, action=begin)

    def worker(index: int) -> tuple[int, int]:
        ok = errors = 0
        headers = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30.0) as client:
            try:
                predict_one(client, model_id, texts[index % len(texts)])  # open the connection
            except Exception:
                start.abort()
                raise
            start.wait()
            for i in range(per_client):
                if time.monotonic() > clock["deadline"]:
                    break
                text = texts[(index * per_client + i) % len(texts)]
                try:
                    predict_one(client, model_id, text)
                    ok += 1
                except (BenchError, httpx.HTTPError):
                    errors += 1
        return ok, errors

    with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(worker, i) for i in range(clients)]
        try:
            start.wait(timeout=120)
        except threading.BrokenBarrierError as e:
            for f in futures:
                if f.done() and f.exception():
                    raise BenchError(f"throughput client failed: {f.exception()}") from e
            raise BenchError("throughput clients did not start within 120 s") from e
        results = [f.result() for f in futures]
        wall = time.perf_counter() - clock["t0"]
    return sum(r[0] for r in results), sum(r[1] for r in results), wall


# --- one split ----------------------------------------------------------------------------


def run_split(
    split: str,
    url: str,
    api_key: str,
    data_dir: Path,
    workdir: Path,
    test: tuple[list[str], list[str]],
    args: argparse.Namespace,
) -> SplitResult:
    texts, labels = read_split(data_dir, SPLITS[split])
    result = SplitResult(split=split, examples=len(texts), labels=len(set(labels)))
    print(f"\n== {split}: {result.examples} examples, {result.labels} labels")
    csv_path = workdir / f"{data_dir.name}-{split}.csv"
    write_csv(csv_path, texts, labels)
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60.0) as client:
        t0 = time.perf_counter()
        dataset = upload_dataset(client, f"{data_dir.name}-{split}", csv_path)
        result.dataset_id = dataset["id"]
        result.extra["upload_s"] = round(time.perf_counter() - t0, 3)
        print(
            f"  dataset {dataset['id']}: {dataset['num_examples']} examples, "
            f"{dataset['num_labels']} labels ({result.extra['upload_s']:.1f} s)"
        )
        if dataset["num_examples"] != result.examples:
            print(
                f"  note: server kept {dataset['num_examples']} of {result.examples} examples "
                f"({dataset.get('num_duplicates')} duplicates)"
            )

        model, result.train_s = train(client, dataset["id"], split, args.params, args.backend)
        result.model_id = model["id"]
        started, finished = (
            parse_time(model.get("started_at")),
            parse_time(model.get("finished_at")),
        )
        if started and finished:
            result.server_train_s = (finished - started).total_seconds()
        metrics = model.get("metrics") or {}
        result.server_accuracy = float(metrics.get("accuracy", math.nan))
        result.server_macro_f1 = float(metrics.get("macro_f1", math.nan))
        result.extra["backend"] = f"{model.get('backend')} {model.get('backend_version') or ''}"
        print(
            f"  model {model['id']} succeeded: {result.train_s:.1f} s (client), "
            f"{result.server_train_s:.1f} s (server)"
        )

        test_texts, test_labels = test
        predicted, flags, result.batch_predict_s = predict_batches(
            client, model["id"], test_texts, set(labels)
        )
        result.test_examples = len(test_texts)
        hits = [p == t for p, t in zip(predicted, test_labels, strict=True)]
        result.accuracy = sum(hits) / len(test_texts)
        result.macro_f1 = macro_f1(test_labels, predicted)
        result.flagged_share = sum(flags) / len(flags)
        kept = sum(h and not f for h, f in zip(hits, flags, strict=True))
        result.accuracy_flags_wrong = kept / len(test_texts)
        print(
            f"  test: accuracy {result.accuracy:.4f}, macro-F1 {result.macro_f1:.4f}, "
            f"flagged out_of_scope {result.flagged_share:.4f} "
            f"({result.batch_predict_s:.1f} s for {len(test_texts)} texts in batches of {BATCH})"
        )

        samples = measure_latency(client, model["id"], test_texts, args.requests)
    result.latency_n = len(samples)
    result.p50_ms = percentile(samples, 50)
    result.p90_ms = percentile(samples, 90)
    result.p99_ms = percentile(samples, 99)
    result.mean_ms = statistics.fmean(samples)
    print(
        f"  latency ({len(samples)} calls): p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms"
    )

    ok, errors, wall = measure_throughput(
        url,
        api_key,
        model["id"],
        test_texts,
        args.concurrency,
        args.per_client,
        args.max_seconds,
    )
    result.throughput_requests, result.throughput_errors, result.throughput_s = ok, errors, wall
    result.throughput_rps = ok / wall if wall > 0 else math.nan
    print(
        f"  throughput: {ok} predictions in {wall:.1f} s with {args.concurrency} clients "
        f"= {result.throughput_rps:.1f}/s ({errors} errors)"
    )
    return result


# --- report -------------------------------------------------------------------------------


def fmt(value: float, spec: str) -> str:
    return "-" if isinstance(value, float) and math.isnan(value) else format(value, spec)


def json_safe(value: Any) -> Any:
    """NaN becomes null so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """Fixed-width columns; ``align`` has one ``l``/``r`` a column (default: first left,
    the rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).ljust(w) if a == "l" else str(c).rjust(w)
            for c, w, a in zip(cells, widths, align, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def results_table(results: Sequence[SplitResult], args: argparse.Namespace) -> str:
    rows: list[tuple[str, str, str]] = [
        ("train examples", "examples", "d"),
        ("labels", "labels", "d"),
        ("train s (client: POST -> succeeded)", "train_s", ".1f"),
        ("train s (server: started -> finished)", "server_train_s", ".1f"),
        ("held-out accuracy (server metrics)", "server_accuracy", ".4f"),
        ("held-out macro-F1 (server metrics)", "server_macro_f1", ".4f"),
        ("test examples", "test_examples", "d"),
        ("test accuracy (closed set: top intent)", "accuracy", ".4f"),
        ("test macro-F1", "macro_f1", ".4f"),
        ("test texts flagged out_of_scope", "flagged_share", ".4f"),
        ("test accuracy, a flagged text counted wrong", "accuracy_flags_wrong", ".4f"),
        (f"batch predict s (test, {BATCH}/request)", "batch_predict_s", ".1f"),
        (f"latency p50 ms (n={args.requests})", "p50_ms", ".1f"),
        ("latency p90 ms", "p90_ms", ".1f"),
        ("latency p99 ms", "p99_ms", ".1f"),
        ("latency mean ms", "mean_ms", ".1f"),
        (f"throughput pred/s ({args.concurrency} clients)", "throughput_rps", ".1f"),
        ("throughput requests ok / errors", "", ""),
    ]
    body = [["backend", *(str(r.extra.get("backend", "-")) for r in results)]]
    for title, attr, spec in rows:
        if not attr:
            body.append(
                [title, *(f"{r.throughput_requests} / {r.throughput_errors}" for r in results)]
            )
            continue
        body.append([title, *(fmt(getattr(r, attr), spec) for r in results)])
    return render_table(["metric", *(r.split for r in results)], body)


def evaluate_targets(results: Sequence[SplitResult], dataset: str) -> list[dict[str, Any]]:
    checks = []
    for r in results:
        for data, split, attr, op, threshold, title in TARGETS:
            if split not in (None, r.split) or data not in (None, dataset.lower()):
                continue
            value = float(getattr(r, attr))
            ok = not math.isnan(value) and (
                value <= threshold if op == "<=" else value >= threshold
            )
            checks.append(
                {
                    "split": r.split,
                    "check": title,
                    "value": value,
                    "shown": fmt(value, ".4f" if attr == "accuracy" else ".1f"),
                    "target": f"{op} {threshold:g}",
                    "pass": ok,
                }
            )
    return checks


def targets_table(checks: Sequence[dict[str, Any]]) -> str:
    rows = [
        [c["split"], c["check"], c["shown"], c["target"], "PASS" if c["pass"] else "FAIL"]
        for c in checks
    ]
    return render_table(["split", "target", "value", "goal", "result"], rows, "llrrl")


def machine_facts() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    env_names = [
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "TORCH_NUM_THREADS",
        "PARLEY_SERVING__TORCH_THREADS",
        "PARLEY_QUEUE__THREADS",
        "PARLEY_QUEUE__WORKERS",
    ]
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "threads_env": {n: os.environ.get(n, "(unset)") for n in env_names},
        "load_average_start": load_average(),
    }


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "-"


def print_header(
    title: str, argv: Sequence[str], facts: dict[str, Any], server: str | None = None
) -> None:
    """The benchmark's title, command line and the machine facts that skew its timings."""
    print(title)
    print(f"command : {shlex.join([sys.executable, *argv])}")
    print(f"machine : {facts['host']}, {facts['platform']}, Python {facts['python']}")
    print(
        f"cpus    : {facts['cpu_count']} ({facts['cpus_usable']} usable)"
        f"{', ' + facts['cpu_model'] if facts['cpu_model'] else ''}"
    )
    env = ", ".join(f"{k}={v}" for k, v in facts["threads_env"].items())
    print(f"threads : {env}")
    print(f"load    : {load_average()} (1/5/15 min; other work on this machine skews timings)")
    print(f"server  : {server or 'started here with PARLEY_QUEUE__THREADS=0 (all cores)'}")


def write_json(
    path: Path, args: argparse.Namespace, facts: dict[str, Any], total: float, **sections: Any
) -> None:
    """The run's command, machine, arguments (no secrets) and results, as JSON."""
    payload = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": facts,
        "load_average_end": load_average(),
        "args": {k: str(v) for k, v in vars(args).items() if k != "api_key"},
        **sections,
        "total_s": total,
    }
    path.write_text(json.dumps(json_safe(payload), indent=2, default=str) + "\n")
    print(f"wrote {path}")


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--split",
        choices=["full", "train_10", "train_5", "both", "all"],
        default="both",
        help="both = full + train_10; all = full + train_10 + train_5",
    )
    p.add_argument(
        "--params",
        type=json.loads,
        default={},
        help='train params as JSON, e.g. \'{"encoder_precision": "fp32"}\'',
    )
    p.add_argument(
        "--backend",
        help="intent backend (embedding-head, setfit); default: the platform's default",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--port", type=int, default=0, help="port for the server (default: free)")
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="intent data folder (Banking77 layout: <split>/seq.in + label)",
    )
    p.add_argument("--url", help="use this running server instead of starting one")
    p.add_argument("--api-key", help="tenant API key for --url")
    p.add_argument("--requests", type=int, default=200, help="sequential latency calls")
    p.add_argument("--concurrency", type=int, default=16, help="throughput clients")
    p.add_argument("--per-client", type=int, default=30, help="requests per throughput client")
    p.add_argument("--max-seconds", type=float, default=60.0, help="throughput time bound")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.url and not args.api_key:
        p.error("--url needs --api-key")
    if args.api_key and not args.url:
        p.error("--api-key needs --url")
    if args.requests < 1 or args.concurrency < 1 or args.per_client < 1:
        p.error("--requests, --concurrency and --per-client must be at least 1")
    return args


def run(args: argparse.Namespace, workdir: Path) -> list[SplitResult]:
    splits = {"both": ["full", "train_10"], "all": ["full", "train_10", "train_5"]}.get(
        args.split, [args.split]
    )
    test = read_split(args.data, "test")
    print(f"test split: {len(test[0])} texts, {len(set(test[1]))} labels ({args.data})")
    if args.url:
        url = args.url.rstrip("/")
        return [run_split(s, url, args.api_key, args.data, workdir, test, args) for s in splits]
    token = secrets.token_urlsafe(24)
    port = args.port or free_port()
    with run_server(workdir, port, args.device, token) as (url, _log):
        api_key = create_tenant(url, token)
        return [run_split(s, url, api_key, args.data, workdir, test, args) for s in splits]


def interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


T = TypeVar("T")


def guarded(run: Callable[[Path], T], prefix: str = "parley-bench-") -> tuple[T | None, float, int]:
    """Run a benchmark body in a temp folder: (result, seconds, exit code).

    SIGTERM and Ctrl-C stop it (its server is stopped by the body's context managers); a
    ``BenchError`` or HTTP failure prints one ``ERROR:`` line. Exit code 0 means a result.
    """
    signal.signal(signal.SIGTERM, interrupt)  # stop the server on SIGTERM too
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            result = run(Path(tmp))
    except BenchError as e:
        print(f"\nERROR: {e}", file=sys.stderr)
        return None, time.perf_counter() - t0, 1
    except httpx.HTTPError as e:
        where = e.request.url if isinstance(e, httpx.RequestError) else ""
        print(f"\nERROR: HTTP failure {type(e).__name__}: {e} {where}", file=sys.stderr)
        return None, time.perf_counter() - t0, 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return None, time.perf_counter() - t0, 130
    return result, time.perf_counter() - t0, 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    facts = machine_facts()
    print_header("Parley intent benchmark", [str(Path(sys.argv[0])), *argv], facts)
    results, total, code = guarded(lambda tmp: run(args, tmp))
    if results is None:
        return code
    checks = evaluate_targets(results, args.data.name)
    print("\nResults")
    print(results_table(results, args))
    print("\nTargets")
    print(targets_table(checks))
    passed = sum(c["pass"] for c in checks)
    print(f"\n{passed}/{len(checks)} targets met; benchmark took {total:.0f} s")
    print(f"load average at the end: {load_average()}")
    if args.json:
        write_json(
            args.json, args, facts, total, results=[asdict(r) for r in results], targets=checks
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
