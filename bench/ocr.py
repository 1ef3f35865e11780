"""OCR benchmark: character error rate and latency of the pre-built OCR engines.

What it measures, for each engine (``--engines``: ``auto``, the default engine, and
``rapidocr`` and ``tesseract`` alone) on ``--n`` generated documents a set:

* ``clean`` and ``noisy``: 60 % shipping labels of 800 x 600 px, 40 % receipts of 600 x 800 px
  (``bench/documents.py``), once flat (``clean``, PNG) and once photographed badly (``noisy``:
  warped, rotated up to 5 degrees, blurred, noisy, JPEG at quality 30-85), the same documents
  in both sets;
* ``scanned``: blocks of 3-6 lines of running text scanned at 300 dpi (9-12 pt, a slight
  skew and blur, light noise, binarised; ``bench/scans.py``), about 1,700 x 450 px.

Per engine and set:

* CER: the Levenshtein distance between the engine's text and the ground truth, whitespace
  runs (newlines too) collapsed to one space on both sides, summed over the documents and
  divided by the ground truth's characters (case and punctuation count);
* latency: milliseconds of ``engine.read(image)`` alone, per image, p50 and p95, after two
  warm-up reads of other documents. Images are decoded from their PNG / JPEG files first,
  outside the timing. Beside it, the CPU milliseconds the process spent in the read (p50):
  on a machine that other work shares, the wall time grows with the load and this does not
  (with one thread it is what the read takes on an idle core);
* lines by RapidOCR: the share of the lines read that name ``rapidocr`` as their reader
  (``auto`` hands RapidOCR the lines Tesseract is unsure of).

ONNX Runtime and torch run with ``--threads`` threads (1 by default, as served on 2 cores).
The results are printed as a plain-text table, followed by the targets with PASS/FAIL: CER
<= 0.6 % clean, <= 2 % noisy, <= 1 % scanned, and p50 <= 500 ms per label-sized image (clean
and noisy). Run it as::

    .venv/bin/python -m bench.ocr
    .venv/bin/python -m bench.ocr --n 20 --engines auto --sets scanned --json /tmp/ocr.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.documents import Document, generate, normalize_text
from bench.harness import (
    common_flags,
    load_average,
    machine_facts,
    percentile,
    print_header,
    report_targets,
)
from bench.report import fmt, render_table, targets_table
from bench.scans import generate_scans
from core.evaluation import levenshtein

ENGINES = ("auto", "rapidocr", "tesseract")
SETS = ("clean", "noisy", "scanned")
WARMUP = 2
CER_TARGETS = {"clean": 0.006, "noisy": 0.02, "scanned": 0.01}
P50_TARGET_MS = 500.0
LABEL_SIZED = ("clean", "noisy")  # the sets the latency target is for


@dataclass
class DocResult:
    index: int
    kind: str
    chars: int  # of the normalised ground truth
    distance: int
    ms: float
    cpu_ms: float
    text: str
    lines: int  # lines the engine returned
    by_rapidocr: int  # of them, read by RapidOCR (``auto`` sends it Tesseract's unsure ones)


@dataclass
class SetResult:
    engine: str
    set: str
    docs: list[DocResult] = field(default_factory=list)

    @property
    def cer(self) -> float:
        chars = sum(d.chars for d in self.docs)
        return sum(d.distance for d in self.docs) / chars if chars else float("nan")

    @property
    def rapidocr_share(self) -> float:
        """The share of the lines read that RapidOCR read."""
        lines = sum(d.lines for d in self.docs)
        return sum(d.by_rapidocr for d in self.docs) / lines if lines else float("nan")

    def p(self, q: float) -> float:
        return percentile([d.ms for d in self.docs], q)

    def summary(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "set": self.set,
            "documents": len(self.docs),
            "cer": self.cer,
            "p50_ms": self.p(50),
            "p95_ms": self.p(95),
            "cpu_p50_ms": percentile([d.cpu_ms for d in self.docs], 50),
            "rapidocr_line_share": self.rapidocr_share,
            "mean_ms": sum(d.ms for d in self.docs) / len(self.docs) if self.docs else None,
        }


def limit_threads(threads: int) -> None:
    """OpenMP, MKL and torch (when loaded) to ``threads`` threads; ONNX Runtime gets them
    through the engine."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)


def limit_torch(threads: int) -> None:
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def run_set(engine: Any, name: str, set_name: str, docs: Sequence[Document]) -> SetResult:
    result = SetResult(name, set_name)
    for doc in docs:
        image = doc.image  # decoded from the PNG / JPEG file the generator wrote
        began, cpu_began = time.perf_counter(), time.process_time()
        read = engine.read(image)
        ms = (time.perf_counter() - began) * 1000
        cpu_ms = (time.process_time() - cpu_began) * 1000
        truth = normalize_text(doc.text)
        distance = levenshtein(normalize_text(read.text), truth)
        by_rapidocr = sum(line.engine == "rapidocr" for line in read.lines)
        result.docs.append(
            DocResult(
                doc.index,
                doc.kind,
                len(truth),
                distance,
                ms,
                cpu_ms,
                read.text,
                len(read.lines),
                by_rapidocr,
            )
        )
    return result


def results_table(results: Sequence[SetResult]) -> str:
    rows = [
        [
            r.engine,
            r.set,
            str(len(r.docs)),
            fmt(100 * r.cer, ".2f"),
            fmt(r.p(50), ".0f"),
            fmt(r.p(95), ".0f"),
            fmt(percentile([d.cpu_ms for d in r.docs], 50), ".0f"),
            fmt(100 * r.rapidocr_share, ".0f"),
        ]
        for r in results
    ]
    header = [
        "engine",
        "set",
        "documents",
        "CER %",
        "p50 ms",
        "p95 ms",
        "CPU p50 ms",
        "lines by RapidOCR %",
    ]
    return render_table(header, rows)


def kinds_table(results: Sequence[SetResult]) -> str:
    rows = []
    for r in results:
        for kind in sorted({d.kind for d in r.docs}):
            part = SetResult(r.engine, r.set, [d for d in r.docs if d.kind == kind])
            rows.append(
                [
                    r.engine,
                    r.set,
                    kind,
                    str(len(part.docs)),
                    fmt(100 * part.cer, ".2f"),
                    fmt(100 * max(d.distance / d.chars for d in part.docs), ".1f"),
                    fmt(part.p(50), ".0f"),
                ]
            )
    header = ["engine", "set", "kind", "documents", "CER %", "worst doc CER %", "p50 ms"]
    return render_table(header, rows, "lllrrrr")


def evaluate_targets(results: Sequence[SetResult]) -> list[dict[str, Any]]:
    checks = []
    for r in results:
        target = CER_TARGETS[r.set]
        checks.append(
            {
                "engine": r.engine,
                "check": f"CER ({r.set})",
                "value": r.cer,
                "shown": fmt(100 * r.cer, ".2f") + " %",
                "target": f"<= {100 * target:g} %",
                "pass": r.cer <= target,
            }
        )
        if r.set not in LABEL_SIZED:
            continue
        p50 = r.p(50)
        checks.append(
            {
                "engine": r.engine,
                "check": f"p50 ms per image ({r.set})",
                "value": p50,
                "shown": fmt(p50, ".0f"),
                "target": f"<= {P50_TARGET_MS:g}",
                "pass": p50 <= P50_TARGET_MS,
            }
        )
    return checks


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100, help="documents per set")
    p.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help=f"comma-separated engines (default: {','.join(ENGINES)})",
    )
    p.add_argument(
        "--sets", default=",".join(SETS), help=f"comma-separated sets (default: {','.join(SETS)})"
    )
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime / torch threads")
    common_flags(p, "2 documents per set", device=False, seed="seed of the generated documents")
    args = p.parse_args(argv)
    if args.quick:
        args.n = 2
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    args.sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    if args.n < 1 or args.threads < 1:
        p.error("--n and --threads must be at least 1")
    if unknown := set(args.sets) - set(SETS):
        p.error(f"unknown sets {sorted(unknown)}; use {', '.join(SETS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    limit_threads(args.threads)
    facts = machine_facts()
    print_header("Parley OCR benchmark", [str(Path(sys.argv[0])), *argv], facts, server="none")
    from vision.ocr.engines import get_engine

    t0 = time.perf_counter()
    sets = {
        s: generate_scans(args.n, seed=args.seed)
        if s == "scanned"
        else generate(args.n, noisy=s == "noisy", seed=args.seed)
        for s in args.sets
    }
    kinds = [d.kind for docs in sets.values() for d in docs]
    counts = ", ".join(f"{kinds.count(k)} {k}s" for k in sorted(set(kinds)))
    print(
        f"documents: {args.n} a set ({counts} in all), seed {args.seed}, generated in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    warmup = generate(WARMUP, noisy=True, seed=args.seed + 10_000)
    results: list[SetResult] = []
    for name in args.engines:
        began = time.perf_counter()
        engine = get_engine(name, threads=args.threads)
        limit_torch(args.threads)
        for doc in warmup:
            engine.read(doc.image)
        print(f"{name}: loaded and warmed up in {time.perf_counter() - began:.1f} s")
        for set_name, docs in sets.items():
            result = run_set(engine, name, set_name, docs)
            results.append(result)
            print(
                f"  {set_name}: CER {100 * result.cer:.2f} %, p50 {result.p(50):.0f} ms "
                f"(load {load_average()})",
                flush=True,
            )
    total = time.perf_counter() - t0
    checks = evaluate_targets(results)
    print("\nResults")
    print(results_table(results))
    print("\nBy kind")
    print(kinds_table(results))
    return report_targets(
        checks,
        total,
        facts,
        args,
        table=targets_table(checks, by="engine"),
        results=[{**r.summary(), "docs": [asdict(d) for d in r.docs]} for r in results],
    )


if __name__ == "__main__":
    sys.exit(main())
