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

    .venv/bin/python -m bench.intent --split train_10
    .venv/bin/python -m bench.intent --split both --json /tmp/intent.json
    .venv/bin/python -m bench.intent --backend setfit --split all --data ../shared/datasets/hwu64
    .venv/bin/python -m bench.intent --url http://127.0.0.1:8000 --api-key pk_...
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.harness import (
    SHARED_DATA,
    BenchError,
    check,
    common_flags,
    create_tenant,
    free_port,
    guarded,
    machine_facts,
    parse_time,
    percentile,
    print_header,
    quick_intent_data,
    read_split,
    report_targets,
    run_server,
    train,
    upload_dataset,
    write_csv,
)
from bench.report import fmt, render_table, targets_table

DEFAULT_DATA = SHARED_DATA / "banking77"
SPLITS = {"full": "train", "train_10": "train_10", "train_5": "train_5"}
BATCH = 64
OUT_OF_SCOPE = "out_of_scope"
WARMUP = 10

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


# --- server -------------------------------------------------------------------------------


# --- API calls ----------------------------------------------------------------------------


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
    common_flags(p, "12 intents, the train_10 split, a few latency and throughput calls", seed=None)
    args = p.parse_args(argv)
    if args.quick:
        args.split, args.requests, args.concurrency, args.per_client = "train_10", 5, 2, 3
        args.max_seconds = min(args.max_seconds, 10.0)
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
    if args.quick:
        args.data = quick_intent_data(workdir / "quick")
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
    return report_targets(
        checks,
        total,
        facts,
        args,
        table=targets_table(checks, by="split"),
        results=[asdict(r) for r in results],
    )


if __name__ == "__main__":
    sys.exit(main())
