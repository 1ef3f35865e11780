"""Object-detection benchmark: the ``faster-rcnn-lite0`` backend on synthetic product photos.

What it measures (the backend is trained directly, not through the HTTP API):

* data: ``--train`` photos (default 100) and a held-out ``--test`` set (default 40) from
  ``bench/scenes.py`` (six object kinds, 1-4 objects a photo, exact boxes), different seeds;
* training time: seconds of ``backend.train`` (the model built from the shipped Lite0 weights,
  every epoch run), with ``--threads`` torch threads (default 1: where other work shares the
  two cores, two threads made a step 6x slower);
* quality on the test set: mAP50 (VOC all-point AP at IoU 0.5, mean over kinds), mAP (COCO
  IoU 0.50:0.05:0.95), precision and recall at IoU 0.5 of detections with probability >= 0.5;
  AP50 per kind;
* prediction latency: one image per call, ``--predict-threads`` torch threads (default 1, as a
  serving worker runs), every test image after 3 warm-up calls: p50 / p95 / mean;
* save and load: artifact size, cold load time.

The results are printed as tables, followed by the targets with PASS/FAIL (the issue's):
trained in <= 300 s on CPU to mAP50 >= 0.9; prediction p50 <= 300 ms. Run it as::

    .venv/bin/python -m bench.detection
    .venv/bin/python -m bench.detection --train 200 --epochs 16 --json /tmp/detection.json
    .venv/bin/python -m bench.detection --device cuda --threads 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness import (
    common_flags,
    machine_facts,
    percentile,
    print_header,
    report_targets,
)
from bench.report import fmt, render_table
from bench.scenes import detection_set

TRAIN_SEED, TEST_SEED = 101, 202
WARMUP = 3
TARGETS: list[tuple[str, str, float, str, bool]] = [
    # (result key, comparison, threshold, label, only on CPU)
    ("train_s", "<=", 300.0, "train seconds (CPU)", True),
    ("map50", ">=", 0.9, "test mAP50", False),
    ("p50_ms", "<=", 300.0, "prediction p50 ms per image", False),
]


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=int, default=100, help="training photos")
    p.add_argument("--test", type=int, default=40, help="held-out test photos")
    p.add_argument("--validation", type=int, default=0, help="validation photos (best epoch)")
    p.add_argument("--epochs", type=int, help="default: the backend's default")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for training (1: on a busy 2-core machine 2 threads fight)",
    )
    p.add_argument("--predict-threads", type=int, default=1, help="torch threads to predict")
    p.add_argument("--size", type=_size, default=(320, 240), help="photo size WIDTHxHEIGHT")
    p.add_argument(
        "--params", type=json.loads, default={}, help="config as JSON, e.g. '{\"batch_size\": 8}'"
    )
    common_flags(p, "6 training photos, 2 test photos of 160x120, 2 epochs", seed="training seed")
    args = p.parse_args(argv)
    if args.quick:
        args.train, args.test, args.epochs, args.size = 6, 2, 2, (160, 120)
        # the backend's min_steps would train 150 updates; the photos stay 160 px wide
        args.params = {"min_steps": 0, "min_size": 120, "max_size": 160, **args.params}
    if min(args.train, args.test, args.threads, args.predict_threads) < 1:
        p.error("--train, --test, --threads and --predict-threads must be at least 1")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from core.backends import BackendContext
    from vision.detect.backend import DetectionBackend, DetectionConfig
    from vision.detect.metrics import detection_metrics

    t0 = time.perf_counter()
    train = detection_set(args.train, seed=TRAIN_SEED, size=args.size)
    test = detection_set(args.test, seed=TEST_SEED, size=args.size)
    validation = detection_set(args.validation, seed=TEST_SEED + 1, size=args.size)
    generate_s = time.perf_counter() - t0
    n_boxes = sum(len(b) for _, b in train)
    print(
        f"data: {len(train)} training photos ({n_boxes} boxes), {len(test)} test, "
        f"{len(validation)} validation, {args.size[0]}x{args.size[1]}, {generate_s:.1f} s"
    )

    params = dict(args.params)
    if args.epochs is not None:
        params["epochs"] = args.epochs
    config = DetectionConfig(**params)
    with tempfile.TemporaryDirectory(prefix="parley-bench-detect-") as tmp:
        context = BackendContext(cache_dir=Path(tmp), device=args.device, threads=args.threads)
        backend = DetectionBackend(context)
        epochs: list[dict[str, Any]] = []
        started = time.perf_counter()

        def on_epoch(record: Any) -> None:
            elapsed = time.perf_counter() - started
            epochs.append({"epoch": record.epoch, "loss": record.train_loss, "s": elapsed})
            print(f"  epoch {record.epoch:3d}  loss {record.train_loss:.4f}  {elapsed:6.1f} s")

        model = backend.train(
            [im for im, _ in train],
            [b for _, b in train],
            config,
            seed=args.seed,
            validation=([im for im, _ in validation], [b for _, b in validation])
            if validation
            else None,
            on_epoch=on_epoch,
            progress=lambda _f: None,
        )
        train_s = time.perf_counter() - started

        torch.set_num_threads(args.predict_threads)
        found = model.detect([im for im, _ in test], min_score=0.0)
        metrics = detection_metrics(
            [b for _, b in test], [[d.to_dict() for d in row] for row in found], model.labels
        )
        for image, _ in test[:WARMUP]:
            model.detect([image])
        times = []
        for image, _ in test:
            t = time.perf_counter()
            model.detect([image])
            times.append((time.perf_counter() - t) * 1000)

        directory = Path(tmp) / "model"
        model.save(directory)
        size_mb = sum(f.stat().st_size for f in directory.iterdir()) / 1e6
        t = time.perf_counter()
        DetectionBackend(
            BackendContext(cache_dir=Path(tmp), device=args.device, threads=args.predict_threads)
        ).load(directory)
        load_s = time.perf_counter() - t

    return {
        "device": args.device,
        "train_images": len(train),
        "train_boxes": n_boxes,
        "test_images": len(test),
        "test_boxes": metrics["support"],
        "labels": model.labels,
        "config": config.model_dump(),
        "epochs_run": len(epochs),
        "train_s": train_s,
        "map50": metrics["map50"],
        "map": metrics["map"],
        "precision": metrics["precision"],
        "recall": metrics["recall"],
        "p50_ms": percentile(times, 50),
        "p95_ms": percentile(times, 95),
        "mean_ms": statistics.fmean(times),
        "artifact_mb": size_mb,
        "load_s": load_s,
        "generate_s": generate_s,
        "per_label": metrics["per_label"],
        "learning_curve": epochs,
    }


def results_table(r: dict[str, Any], args: argparse.Namespace) -> str:
    rows = [
        ("device", r["device"]),
        ("training photos / boxes", f"{r['train_images']} / {r['train_boxes']}"),
        ("test photos / boxes", f"{r['test_images']} / {r['test_boxes']}"),
        ("epochs run", str(r["epochs_run"])),
        (f"train s ({args.threads} threads)", fmt(r["train_s"], ".1f")),
        ("test mAP50", fmt(r["map50"], ".4f")),
        ("test mAP (IoU 0.50:0.95)", fmt(r["map"], ".4f")),
        ("test precision (p >= 0.5, IoU 0.5)", fmt(r["precision"], ".4f")),
        ("test recall (p >= 0.5, IoU 0.5)", fmt(r["recall"], ".4f")),
        (f"predict p50 ms/image ({args.predict_threads} thread)", fmt(r["p50_ms"], ".1f")),
        ("predict p95 ms/image", fmt(r["p95_ms"], ".1f")),
        ("predict mean ms/image", fmt(r["mean_ms"], ".1f")),
        ("artifact MB", fmt(r["artifact_mb"], ".1f")),
        ("cold load s", fmt(r["load_s"], ".2f")),
    ]
    return render_table(["metric", "value"], rows)


def labels_table(r: dict[str, Any]) -> str:
    rows = [
        [
            name,
            str(m["support"]),
            fmt(m["ap50"] if m["ap50"] is not None else float("nan"), ".4f"),
            fmt(m["ap"] if m["ap"] is not None else float("nan"), ".4f"),
            fmt(m["precision"], ".3f"),
            fmt(m["recall"], ".3f"),
        ]
        for name, m in r["per_label"].items()
    ]
    return render_table(["kind", "boxes", "AP50", "AP", "P", "R"], rows)


def evaluate_targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for key, op, threshold, title, cpu_only in TARGETS:
        if cpu_only and r["device"] != "cpu":
            continue
        value = r[key]
        ok = value is not None and (value <= threshold if op == "<=" else value >= threshold)
        checks.append(
            {
                "check": title,
                "value": value,
                "shown": fmt(value, ".4f" if key == "map50" else ".1f"),
                "target": f"{op} {threshold:g}",
                "pass": ok,
            }
        )
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    facts = machine_facts()
    print_header(
        "Parley object-detection benchmark (faster-rcnn-lite0)",
        [str(Path(sys.argv[0])), *argv],
        facts,
        server="none: the backend is trained and called in this process",
    )
    t0 = time.perf_counter()
    try:
        result = run(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    total = time.perf_counter() - t0
    checks = evaluate_targets(result)
    print("\nResults")
    print(results_table(result, args))
    print("\nPer kind (test set)")
    print(labels_table(result))
    return report_targets(
        checks,
        total,
        facts,
        args,
        results=result,
    )


if __name__ == "__main__":
    sys.exit(main())
