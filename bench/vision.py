"""Image classification benchmark, end to end through a real Parley server.

Generates product-photo scenes (``bench/scenes.py``: ``--classes`` kinds, ``--per-class``
images each for the dataset, ``--test-per-class`` more, from another seed, for testing),
uploads the dataset as a zip (one folder per label), trains each ``--backends`` backend
through the API, and reports: the held-out validation accuracy the model records, the
training time (client, POST → succeeded), accuracy on the unseen test images (multipart
predict, 4 images per call) and single-image prediction latency p50 / p95 (sequential calls,
after warm-up). Targets (issue 4, CPU): a classifier trained in <= 60 s with >= 95 %
validation accuracy on a clean generated set; prediction p50 <= 60 ms. Run it as::

    .venv/bin/python -m bench.vision
    .venv/bin/python -m bench.vision --backends lite0-head,lite0-finetune --json /tmp/vision.json
"""

from __future__ import annotations

import argparse
import io
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.harness import (
    check,
    common_flags,
    create_tenant,
    free_port,
    guarded,
    machine_facts,
    percentile,
    print_header,
    report_targets,
    run_server,
    train,
    upload_dataset,
)
from bench.report import render_table, targets_table
from bench.scenes import KINDS, classification_set, write_classification_zip

TARGET_TRAIN_S, TARGET_ACCURACY, TARGET_P50_MS = 60.0, 0.95, 60.0
WARMUP = 5


def jpeg(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92)
    return out.getvalue()


def predict(client: httpx.Client, model_id: str, images: Sequence[bytes]) -> list[str]:
    files = [("file", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)]
    body = check(client.post(f"/v1/models/{model_id}/predict", files=files), 200)
    results = body.get("results", [body])
    return [r["probabilities"][0]["label"] for r in results]


def run_backend(
    client: httpx.Client,
    dataset_id: str,
    backend: str,
    test: Sequence[tuple[bytes, str]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    params: dict[str, Any] = {"refit_on_all": not args.no_refit}
    model, train_s = train(client, dataset_id, backend, params, backend)
    predicted: list[str] = []
    for start in range(0, len(test), 4):
        predicted += predict(client, model["id"], [d for d, _ in test[start : start + 4]])
    accuracy = sum(p == t for p, (_, t) in zip(predicted, test, strict=True)) / len(test)
    for i in range(WARMUP):
        predict(client, model["id"], [test[i % len(test)][0]])
    samples = []
    for i in range(args.latency_n):
        t0 = time.perf_counter()
        predict(client, model["id"], [test[i % len(test)][0]])
        samples.append((time.perf_counter() - t0) * 1000)
    metrics = model.get("metrics") or {}
    return {
        "backend": backend,
        "train_s": train_s,
        "validation_accuracy": metrics.get("accuracy"),
        "validation_n": metrics.get("num_evaluated"),
        "test_accuracy": accuracy,
        "test_n": len(test),
        "p50_ms": percentile(samples, 50),
        "p95_ms": percentile(samples, 95),
    }


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    kinds = sorted(KINDS)[: args.classes]
    t0 = time.perf_counter()
    data = classification_set(args.per_class, kinds, seed=args.seed)
    test = [
        (jpeg(im), label)
        for im, label in classification_set(args.test_per_class, kinds, seed=args.seed + 1000)
    ]
    zip_path = workdir / "scenes.zip"
    write_classification_zip(zip_path, data)
    print(
        f"generated {len(data)} training and {len(test)} test images of {len(kinds)} kinds "
        f"({', '.join(kinds)}) in {time.perf_counter() - t0:.1f} s; "
        f"zip {zip_path.stat().st_size / 1e6:.1f} MB"
    )
    token = secrets.token_urlsafe(24)
    results = []
    with run_server(workdir, args.port or free_port(), args.device, token) as (url, _log):
        api_key = create_tenant(url, token)
        headers = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
            dataset = upload_dataset(
                client, "scenes", zip_path, type="image", content_type="application/zip"
            )
            for backend in args.backends:
                results.append(run_backend(client, dataset["id"], backend, test, args))
    return {"kinds": kinds, "train_images": len(data), "results": results}


def results_table(outcome: dict[str, Any]) -> str:
    rows = [
        [
            r["backend"],
            f"{r['train_s']:.1f}",
            f"{r['validation_accuracy']:.3f} (n={r['validation_n']})",
            f"{r['test_accuracy']:.3f} (n={r['test_n']})",
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
        ]
        for r in outcome["results"]
    ]
    header = ["backend", "train s", "validation acc", "test acc", "p50 ms", "p95 ms"]
    return render_table(header, rows)


def evaluate_targets(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for r in outcome["results"]:
        checks += [
            {
                "target": f"{r['backend']} train s",
                "value": r["train_s"],
                "goal": f"<= {TARGET_TRAIN_S:g}",
                "pass": r["train_s"] <= TARGET_TRAIN_S,
            },
            {
                "target": f"{r['backend']} validation accuracy",
                "value": r["validation_accuracy"],
                "goal": f">= {TARGET_ACCURACY}",
                "pass": (r["validation_accuracy"] or 0) >= TARGET_ACCURACY,
            },
            {
                "target": f"{r['backend']} predict p50 ms",
                "value": r["p50_ms"],
                "goal": f"<= {TARGET_P50_MS:g}",
                "pass": r["p50_ms"] <= TARGET_P50_MS,
            },
        ]
    return checks


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, default=6, help=f"object kinds (max {len(KINDS)})")
    p.add_argument("--per-class", type=int, default=30, help="dataset images per kind")
    p.add_argument("--test-per-class", type=int, default=20, help="test images per kind")
    p.add_argument(
        "--backends",
        type=lambda s: [b.strip() for b in s.split(",") if b.strip()],
        default=["lite0-head"],
        help="comma-separated, e.g. lite0-head,lite0-finetune",
    )
    p.add_argument("--no-refit", action="store_true", help="serve the held-out fit (no refit)")
    p.add_argument("--latency-n", type=int, default=100, help="sequential latency calls")
    p.add_argument("--port", type=int, default=0)
    common_flags(p, "2 kinds, 6 photos each, 2 test photos each, 5 latency calls")
    args = p.parse_args(argv)
    if args.quick:
        args.classes, args.per_class, args.test_per_class, args.latency_n = 2, 6, 2, 5
    if not 2 <= args.classes <= len(KINDS):
        p.error(f"--classes must be 2..{len(KINDS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    facts = machine_facts()
    print_header("Parley image classification benchmark", [str(Path(sys.argv[0])), *argv], facts)
    outcome, total, code = guarded(lambda tmp: run(args, tmp), "parley-bench-vision-")
    if outcome is None:
        return code
    checks = evaluate_targets(outcome)
    print("\nResults")
    print(results_table(outcome))
    shown = [
        {"check": c["target"], "shown": f"{c['value']:.3f}", "target": c["goal"], "pass": c["pass"]}
        for c in checks
    ]
    return report_targets(checks, total, facts, args, table=targets_table(shown), outcome=outcome)


if __name__ == "__main__":
    sys.exit(main())
