"""Sentence encoders side by side: all-MiniLM-L6-v2 (the default) and all-mpnet-base-v2.

In process (no server): the backends' own code (``nlu.encoder``, the ``embedding-head``
trainer, optionally ``setfit``), on Banking77 and HWU64 (``../shared/datasets``, the layout
``bench.intent`` reads), with the few-shot protocols of the intent bench: ``5-shot``
(``train_5``), ``10-shot`` (``train_10``) and ``full`` (``train``), tested on ``test``.

Per encoder and protocol: closed-set test accuracy and macro-F1 of an ``embedding-head``
model with its default settings, and the head's training seconds; the encoding a training job
adds to that is ``texts / batch throughput`` (shown as ``encode s``). Per encoder: the latency
of one text (p50 / p90 of ``--latency-calls`` calls after 5 warm-up ones) and the batch
throughput (texts per second over ``--throughput-texts`` test texts), on ``--threads`` threads,
and ``load s``: building the encoder and its first text (a first run also exports its ONNX graph).
``--setfit`` adds the ``setfit`` backend at 10-shot (minutes per model on CPU; mpnet about 5x
MiniLM).

Each text is encoded once per encoder: embeddings are kept in ``--cache`` (one file per
dataset and encoder, keyed by the encoder's name, weights and precision), reused across
protocols and runs. The issue's rule: mpnet is recommended if it gains >= 2 points of
10-shot accuracy; the targets table says whether it did, per dataset. ::

    .venv/bin/python -m bench.encoders --quick
    .venv/bin/python -m bench.encoders --protocols 10-shot,5-shot,full --json /tmp/enc.json
    .venv/bin/python -m bench.encoders --datasets banking77 --setfit
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import (
    ROOT,
    SHARED_DATA,
    common_flags,
    guarded,
    machine_facts,
    percentile,
    print_header,
    quick_intent_data,
    read_split,
    report_targets,
)
from bench.report import fmt, render_table, targets_table

PROTOCOLS = {"5-shot": "train_5", "10-shot": "train_10", "full": "train"}
ENCODERS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")
GAIN_POINTS = 2.0  # the issue: recommend mpnet if it gains >= 2 points at 10-shot


@dataclass
class Row:
    dataset: str
    protocol: str
    backend: str
    encoder: str
    precision: str
    train_examples: int
    accuracy: float
    macro_f1: float
    train_s: float  # the head (embedding-head) or the whole fine-tune (setfit)
    encode_s: float  # embedding-head: train texts / batch throughput (what a job adds)


@dataclass
class Speed:
    encoder: str
    precision: str
    load_s: float
    p50_ms: float
    p90_ms: float
    throughput: float  # texts per second, batched


class FeatureStore:
    """Embeddings of one dataset's texts under one encoder, kept on disk between runs."""

    def __init__(self, path: Path, encoder: Any) -> None:
        self.path, self.encoder = path, encoder
        self.rows: dict[str, np.ndarray] = {}
        if path.is_file():
            with np.load(path) as saved:
                texts, feats = saved["texts"], saved["features"]
            self.rows = {str(t): f for t, f in zip(texts, feats, strict=True)}

    def features(self, texts: Sequence[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in self.rows})
        if missing:
            t0 = time.perf_counter()
            print(f"  encoding {len(missing)} texts with {self.encoder.name}", flush=True)
            out = self.encoder.encode(missing)
            print(f"  ... {time.perf_counter() - t0:.0f} s", flush=True)
            self.rows.update(zip(missing, out, strict=True))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp.npz")
            keys = list(self.rows)
            np.savez(tmp, texts=np.array(keys), features=np.stack([self.rows[k] for k in keys]))
            tmp.replace(self.path)
        return np.stack([self.rows[t] for t in texts])


def store_path(cache: Path, data_dir: Path, encoder: Any) -> Path:
    """The cached-features file: dataset folder, encoder name, weights and precision."""
    from nlu.encoder import encoder_spec

    spec = encoder_spec(encoder.name)
    where = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
    key = f"{spec.name}-{spec.sha256[:16]}-{encoder.precision}"
    return cache / f"{data_dir.name}-{where}" / f"{key}.npz"


def macro_f1(truth: Sequence[str], predicted: Sequence[str]) -> float:
    from core.evaluation import accuracy_and_macro_f1

    return accuracy_and_macro_f1(truth, predicted, sorted(set(truth) | set(predicted)))[1]


def measure_speed(encoder: Any, texts: Sequence[str], args: argparse.Namespace) -> Speed:
    sample = list(texts[: args.throughput_texts])
    for text in sample[:5]:
        encoder.encode([text])
    times = []
    for i in range(args.latency_calls):
        t0 = time.perf_counter()
        encoder.encode([sample[i % len(sample)]])
        times.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    encoder.encode(sample)
    rate = len(sample) / (time.perf_counter() - t0)
    return Speed(
        encoder.name,
        encoder.precision,
        math.nan,
        percentile(times, 50),
        percentile(times, 90),
        rate,
    )


def head_row(
    dataset: str,
    protocol: str,
    encoder: Any,
    store: FeatureStore,
    train: tuple[list[str], list[str]],
    test: tuple[list[str], list[str]],
    throughput: float,
    seed: int,
) -> Row:
    from nlu.intent.embedding_head import EmbeddingHeadConfig, train_head

    x = store.features(train[0])
    t0 = time.perf_counter()
    config = EmbeddingHeadConfig(encoder=encoder.name)
    model = train_head(
        x,
        train[1],
        config,
        seed=seed,
        validation=None,
        on_epoch=None,
        progress=lambda _f: None,
        build=lambda names, w, b: (names, w, b),  # type: ignore[arg-type,return-value]
    )
    train_s = time.perf_counter() - t0
    names, weight, bias = model  # type: ignore[misc]
    logits = store.features(test[0]) @ weight.T + bias
    predicted = [names[i] for i in logits.argmax(axis=1)]
    acc = float(np.mean([p == t for p, t in zip(predicted, test[1], strict=True)]))
    return Row(
        dataset,
        protocol,
        "embedding-head",
        encoder.name,
        encoder.precision,
        len(train[0]),
        acc,
        macro_f1(test[1], predicted),
        train_s,
        len(train[0]) / throughput,
    )


def setfit_row(
    dataset: str,
    encoder_name: str,
    train: tuple[list[str], list[str]],
    test: tuple[list[str], list[str]],
    args: argparse.Namespace,
) -> Row:
    from core.backends import BackendContext
    from nlu.intent.setfit import SetFitBackend, SetFitConfig

    backend = SetFitBackend(BackendContext(args.cache, device=args.device, threads=args.threads))
    t0 = time.perf_counter()
    model = backend.train(
        train[0],
        train[1],
        SetFitConfig(encoder=encoder_name),
        seed=args.seed,
        validation=None,
        on_epoch=None,
        progress=lambda _f: None,
    )
    train_s = time.perf_counter() - t0
    probs = model.predict_features(model.featurize(test[0]))
    predicted = [model.labels[i] for i in probs.argmax(axis=1)]
    acc = float(np.mean([p == t for p, t in zip(predicted, test[1], strict=True)]))
    return Row(
        dataset,
        "10-shot",
        "setfit",
        encoder_name,
        "fp32",
        len(train[0]),
        acc,
        macro_f1(test[1], predicted),
        train_s,
        math.nan,
    )


def run(args: argparse.Namespace, workdir: Path) -> tuple[list[Row], list[Speed]]:
    import torch

    from nlu.encoder import get_encoder

    torch.set_num_threads(args.threads)
    folders = (
        {"quick": quick_intent_data(workdir / "quick")}
        if args.quick
        else {name: args.data / name for name in args.datasets}
    )
    encoders = []
    speeds = []
    first_test = read_split(next(iter(folders.values())), "test")[0]
    for name in args.encoders:
        t0 = time.perf_counter()
        encoder = get_encoder(
            cache_dir=args.cache,
            device=args.device,
            threads=args.threads,
            precision=args.precision if name == ENCODERS[0] else "fp32",
            runtime=args.runtime,
            encoder=name,
        )
        encoder.encode(["warm up"])
        load_s = time.perf_counter() - t0  # the first use: load (and any ONNX export)
        speed = measure_speed(encoder, first_test, args)
        speed.load_s = load_s
        print(
            f"{encoder.name} ({encoder.precision}): loaded in {speed.load_s:.1f} s, one text "
            f"p50 {speed.p50_ms:.1f} ms, {speed.throughput:.0f} texts/s batched",
            flush=True,
        )
        encoders.append(encoder)
        speeds.append(speed)
    rows: list[Row] = []
    for dataset, folder in folders.items():
        test = read_split(folder, "test")
        # --quick's data lives in a temporary folder: so do its features (nothing left behind)
        where = workdir / "features" if args.quick else args.cache
        stores = [FeatureStore(store_path(where, folder, e), e) for e in encoders]
        for protocol in args.protocols:
            train = read_split(folder, PROTOCOLS[protocol])
            print(f"\n== {dataset} {protocol}: {len(train[0])} training texts", flush=True)
            for encoder, store, speed in zip(encoders, stores, speeds, strict=True):
                row = head_row(
                    dataset, protocol, encoder, store, train, test, speed.throughput, args.seed
                )
                print(f"  {row.encoder}: accuracy {row.accuracy:.4f}", flush=True)
                rows.append(row)
        if args.setfit:
            train = read_split(folder, PROTOCOLS["10-shot"])
            for name in args.encoders:
                print(f"\n== {dataset} setfit 10-shot, {name}", flush=True)
                row = setfit_row(dataset, name, train, test, args)
                print(f"  accuracy {row.accuracy:.4f} ({row.train_s:.0f} s)", flush=True)
                rows.append(row)
    return rows, speeds


def results_table(rows: Sequence[Row]) -> str:
    body = [
        [
            r.dataset,
            r.protocol,
            r.backend,
            f"{r.encoder} {r.precision}",
            str(r.train_examples),
            fmt(100 * r.accuracy, ".2f"),
            fmt(100 * r.macro_f1, ".2f"),
            fmt(r.train_s, ".1f"),
            fmt(r.encode_s, ".1f"),
        ]
        for r in rows
    ]
    header = ["dataset", "protocol", "backend", "encoder", "train", "acc %", "F1 %"]
    return render_table([*header, "train s", "encode s"], body, "llll" + "r" * 5)


def speed_table(speeds: Sequence[Speed], threads: int) -> str:
    body = [
        [
            f"{s.encoder} {s.precision}",
            fmt(s.load_s, ".1f"),
            fmt(s.p50_ms, ".1f"),
            fmt(s.p90_ms, ".1f"),
            fmt(s.throughput, ".0f"),
        ]
        for s in speeds
    ]
    header = ["encoder", "load s", "1 text p50 ms", "p90 ms", f"texts/s batched ({threads} thr)"]
    return render_table(header, body)


def gain_checks(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per dataset and backend at 10-shot: mpnet's accuracy gain over MiniLM in points."""
    checks = []
    tens = [r for r in rows if r.protocol == "10-shot"]
    for r in tens:
        if r.encoder != ENCODERS[1]:
            continue
        base = next(
            (
                b
                for b in tens
                if (b.dataset, b.backend, b.encoder) == (r.dataset, r.backend, ENCODERS[0])
            ),
            None,
        )
        if base is None:
            continue
        gain = 100 * (r.accuracy - base.accuracy)
        checks.append(
            {
                "dataset": r.dataset,
                "check": f"{r.backend}: mpnet - MiniLM, 10-shot accuracy points",
                "value": gain,
                "shown": f"{gain:+.2f}",
                "target": f">= {GAIN_POINTS:g}",
                "pass": gain >= GAIN_POINTS,
            }
        )
    return checks


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=SHARED_DATA, help="folder of the datasets")
    p.add_argument("--datasets", default="banking77,hwu64", help="comma-separated")
    p.add_argument("--protocols", default="5-shot,10-shot,full", help="comma-separated, in order")
    p.add_argument("--encoders", default=",".join(ENCODERS), help="comma-separated")
    p.add_argument(
        "--precision",
        choices=["fp32", "int8"],
        default="fp32",
        help="MiniLM's precision (mpnet runs fp32 only); int8 is MiniLM's CPU serving default",
    )
    p.add_argument("--threads", type=int, default=2, help="encoder threads")
    p.add_argument(
        "--runtime",
        choices=["auto", "onnx", "torch"],
        default="auto",
        help="encoder runtime (auto: ONNX Runtime on CPU, as served; --quick: torch, which "
        "skips exporting mpnet's 440 MB graph)",
    )
    p.add_argument("--latency-calls", type=int, default=50)
    p.add_argument("--throughput-texts", type=int, default=256)
    p.add_argument("--setfit", action="store_true", help="also setfit at 10-shot (slow)")
    p.add_argument(
        "--cache",
        type=Path,
        default=ROOT / "var" / "bench-encoders",
        help="model cache (mpnet unpacks here) and the cached features",
    )
    common_flags(p, "both encoders on 12 tiny intents, every protocol", seed="head seed")
    args = p.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.protocols = [x for x in args.protocols.split(",") if x]
    args.encoders = [e for e in args.encoders.split(",") if e]
    unknown = [x for x in args.protocols if x not in PROTOCOLS]
    if unknown:
        p.error(f"unknown protocols {unknown}; use {', '.join(PROTOCOLS)}")
    if args.quick:
        args.latency_calls, args.throughput_texts = 5, 32
        args.runtime = "torch" if args.precision == "fp32" else args.runtime
    if args.runtime == "torch" and args.precision == "int8":
        p.error("int8 runs on ONNX Runtime only: --runtime onnx or auto")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    from core.errors import InvalidInput
    from nlu.encoder import check_encoder_installed, encoder_spec

    try:
        wanted = [encoder_spec(e).name for e in args.encoders]
    except InvalidInput as e:  # names the known encoders
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    args.encoders, skipped = [], []
    for name in wanted:
        try:
            args.encoders.append(check_encoder_installed(name).name)
        except InvalidInput as e:  # says what to install
            print(f"skipping {name}: {e}")
            skipped.append(name)
    facts = machine_facts()
    print_header("Parley encoders benchmark", [str(Path(sys.argv[0])), *argv], facts, "none")
    result, total, code = guarded(lambda tmp: run(args, tmp), prefix="parley-encoders-")
    if result is None:
        return code
    rows, speeds = result
    checks = gain_checks(rows) + [
        {
            "dataset": "-",
            "check": f"{name} installed (scripts/install --mpnet)",
            "value": 0,
            "shown": "no",
            "target": "yes",
            "pass": False,
        }
        for name in skipped
    ]
    print("\nAccuracy (test split, closed set) and training time")
    print(results_table(rows))
    print("\nEncoding speed")
    print(speed_table(speeds, args.threads))
    return report_targets(
        checks,
        total,
        facts,
        args,
        table=targets_table(checks, by="dataset"),
        rows=[asdict(r) for r in rows],
        speeds=[asdict(s) for s in speeds],
    )


if __name__ == "__main__":
    sys.exit(main())
