"""Entity-extraction benchmark on SNIPS slots, end to end through Parley's REST API.

The data: ``train/``, ``valid/`` and ``test/`` folders, each with ``seq.in`` (one utterance a
line) and ``seq.out`` (its BIO slot tags, one per whitespace token of ``seq.in``). A sentence's
text is its tokens joined by single spaces (as Parley's CoNLL importer joins them) and every
``B-type I-type ...`` run is an entity span of that text, in characters.

What it measures:

* the train split (all 13,084 sentences, or the first ``--train-limit``) is written as a
  CoNLL file (``token<TAB>tag``, blank line between sentences) and uploaded as a
  ``text-entities`` dataset;
* train time: seconds from ``POST /v1/models`` (``--backend``: by default the platform's
  default entity backend; ``--epochs``, ``--batch-size`` and ``--params``) until the client
  sees ``status: succeeded`` (polling every 0.25 s), next to the server's own
  ``started_at`` -> ``finished_at``, and seconds per epoch estimated from the progress the
  server reports. By default the server trains twice: on 80 % with the other 20 % held out
  for its metrics, then again on everything (``--no-refit`` skips the second fit);
* the server's held-out metrics (``metrics.micro`` and ``per_entity``);
* test slot F1, computed here: exact span match on (start, end, type), micro-averaged, from
  batch predictions (``texts``, 64 a request) on the whole ``test/`` split (700 sentences),
  with per-type scores for the ``--top`` most frequent types and a breakdown of the errors.

The results are printed as plain-text tables, followed by the target with PASS/FAIL: test
slot F1 >= 0.93 (JointBERT reports 96.9 on this split).

Unless ``--url`` is given, the benchmark starts its own server (``parley serve --no-demo``) on
a temporary data directory, creates a tenant with a random operator token, and stops the
server at the end. Run it as::

    .venv/bin/python -m bench.entities --train-limit 1000 --epochs 5
    .venv/bin/python -m bench.entities --backend spacy-ner --epochs 15 --no-refit
    .venv/bin/python -m bench.entities --backend encoder-ner --params '{"learning_rate": 1e-4}'
    .venv/bin/python -m bench.entities --json /tmp/entities.json
    .venv/bin/python -m bench.entities --url http://127.0.0.1:8000 --api-key pk_...
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import sys
import time
from collections import Counter
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
    load_average,
    machine_facts,
    parse_time,
    print_header,
    quick_slot_data,
    run_server,
    train,
    upload_dataset,
    write_json,
)
from bench.report import fmt, render_table, targets_table

DEFAULT_DATA = SHARED_DATA / "snips"
BATCH = 64
UPLOAD_TIMEOUT_S = 600.0
TARGET_F1 = 0.93
REFERENCE = "JointBERT reports slot F1 96.9 on SNIPS"
# The job's progress spans (training/jobs.py): featurize 0 -> 0.6, fit on the split
# 0.6 -> 0.78 (0.95 without a refit), refit on all 0.78 -> 0.95, save 0.95 -> 1.
FIT_SPAN = (0.6, 0.78)
REFIT_SPAN = (0.78, 0.95)
NO_REFIT_SPAN = (0.6, 0.95)

Span = tuple[int, int, str]  # (start, end, entity type), characters of the joined text


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


@dataclass
class EntityResult:
    train_sentences: int
    train_entities: int
    entity_types: int
    epochs: int | None
    batch_size: int | None
    refit: bool
    requested_backend: str | None = None
    dataset_id: str = ""
    dataset_examples: int = 0
    dataset_duplicates: int = 0
    model_id: str = ""
    backend: str = ""
    train_s: float = math.nan
    server_train_s: float = math.nan
    fit_epoch_s: float = math.nan
    refit_epoch_s: float = math.nan
    server_examples: int = 0
    server_precision: float = math.nan
    server_recall: float = math.nan
    server_f1: float = math.nan
    test_sentences: int = 0
    test_gold: int = 0
    test_predicted: int = 0
    test_correct: int = 0
    precision: float = math.nan
    recall: float = math.nan
    f1: float = math.nan
    predict_s: float = math.nan
    unreachable_gold: int | None = None
    extractors: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    per_type: dict[str, dict[str, Any]] = field(default_factory=dict)
    learning_curve: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


# --- data ---------------------------------------------------------------------------------


def read_bio(data_dir: Path, name: str) -> list[Sentence]:
    """Sentences of one split folder: whitespace tokens of ``seq.in`` and tags of ``seq.out``."""
    folder = data_dir / name
    try:
        lines_in = (folder / "seq.in").read_text(encoding="utf-8").splitlines()
        lines_out = (folder / "seq.out").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise BenchError(f"missing dataset file: {e.filename}") from e
    if len(lines_in) != len(lines_out):
        raise BenchError(f"{folder}: {len(lines_in)} lines in seq.in, {len(lines_out)} in seq.out")
    sentences = []
    for n, (text, tags) in enumerate(zip(lines_in, lines_out, strict=True), start=1):
        tokens, labels = text.split(), tags.split()
        if not tokens and not labels:
            continue
        if len(tokens) != len(labels):
            raise BenchError(
                f"{folder} line {n}: {len(tokens)} tokens but {len(labels)} tags: {text!r}"
            )
        bad = [t for t in labels if t != "O" and t[:2] not in ("B-", "I-")]
        if bad:
            raise BenchError(f"{folder}/seq.out line {n}: tag {bad[0]!r} is not BIO")
        sentences.append(Sentence(tokens, labels))
    if not sentences:
        raise BenchError(f"{folder}: no sentences")
    return sentences


def bio_spans(sentence: Sentence) -> list[Span]:
    """Entity spans in the single-space-joined text, read the way Parley's CoNLL importer reads
    them: ``B-x`` begins an entity, ``I-x`` continues an open ``x`` (or begins one)."""
    spans: list[list[Any]] = []
    open_: list[Any] | None = None
    pos = 0
    for i, (token, tag) in enumerate(zip(sentence.tokens, sentence.tags, strict=True)):
        start = pos + (1 if i else 0)
        end = start + len(token)
        pos = end
        if tag == "O":
            open_ = None
            continue
        prefix, entity = tag[0], tag[2:]
        if prefix == "B" or open_ is None or open_[2] != entity:
            open_ = [start, end, entity]
            spans.append(open_)
        else:
            open_[1] = end
    return [(s, e, t) for s, e, t in spans]


def write_conll(path: Path, sentences: Sequence[Sentence]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for sentence in sentences:
            for token, tag in zip(sentence.tokens, sentence.tags, strict=True):
                f.write(f"{token}\t{tag}\n")
            f.write("\n")


# --- scoring ------------------------------------------------------------------------------


def score(
    gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]]
) -> tuple[dict[str, int], dict[str, dict[str, int]], dict[str, int]]:
    """Exact-span counts: (micro {tp, pred, gold}, per type {tp, pred, gold}, error kinds).

    Error kinds, for the spans that do not match exactly: ``wrong type`` (a prediction on a
    gold span's exact characters with another type), ``wrong boundary`` (a prediction that
    overlaps a gold span without matching it), ``spurious`` (a prediction overlapping no gold
    span) and ``missed`` (a gold span no prediction overlaps).
    """
    per: dict[str, dict[str, int]] = {}
    errors = Counter({"wrong type": 0, "wrong boundary": 0, "spurious": 0, "missed": 0})

    def bump(t: str, key: str) -> None:
        per.setdefault(t, {"tp": 0, "pred": 0, "gold": 0})[key] += 1

    for g_row, p_row in zip(gold, predicted, strict=True):
        g, p = set(g_row), set(p_row)
        for span in g:
            bump(span[2], "gold")
        for span in p:
            bump(span[2], "pred")
        for span in g & p:
            bump(span[2], "tp")
        g_miss, p_extra = g - p, p - g
        for ps, pe, _ in p_extra:
            if any((gs, ge) == (ps, pe) for gs, ge, _ in g_miss):
                errors["wrong type"] += 1
            elif any(ps < ge and gs < pe for gs, ge, _ in g_miss):
                errors["wrong boundary"] += 1
            else:
                errors["spurious"] += 1
        for gs, ge, _ in g_miss:
            if not any(ps < ge and gs < pe for ps, pe, _ in p_extra):
                errors["missed"] += 1
    micro = {k: sum(v[k] for v in per.values()) for k in ("tp", "pred", "gold")}
    return micro, per, dict(errors)


def prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def unreachable_spans(texts: Sequence[str], gold: Sequence[Sequence[Span]]) -> int | None:
    """Gold spans whose ends are not spaCy token boundaries (``spacy.blank("en")``, as the
    ``spacy-ner`` backend tokenizes): no prediction can match them exactly. None without spaCy."""
    try:
        import spacy
    except ImportError:
        return None
    nlp = spacy.blank("en")
    count = 0
    for text, spans in zip(texts, gold, strict=True):
        doc = nlp.make_doc(text)
        count += sum(doc.char_span(s, e, alignment_mode="strict") is None for s, e, _ in spans)
    return count


# --- API calls ----------------------------------------------------------------------------


def epoch_seconds(
    samples: Sequence[tuple[float, float]],
    span: tuple[float, float],
    epochs: int,
    *,
    last: bool = False,
) -> float:
    """Seconds per epoch within one progress span: the time between the first and the last
    epoch boundary the polls saw (the span's start counts as boundary 0; for the ``last``
    span, the final progress 1.0 counts as boundary ``epochs``, so saving is included), over
    the epochs between them (NaN with fewer than two boundaries seen)."""
    lo, hi = span
    step = (hi - lo) / epochs
    first_seen: dict[int, float] = {}
    for t, p in samples:
        if last and p >= 1.0:
            first_seen.setdefault(epochs, t)
        elif lo - 1e-9 <= p <= hi + 1e-9:
            k = round((p - lo) / step)
            if abs(p - (lo + k * step)) < step * 1e-3 and 0 <= k <= epochs:
                first_seen.setdefault(k, t)
    if len(first_seen) < 2:
        return math.nan
    k0, k1 = min(first_seen), max(first_seen)
    return (first_seen[k1] - first_seen[k0]) / (k1 - k0)


def predict_entities(
    client: httpx.Client, model_id: str, texts: Sequence[str]
) -> tuple[list[list[dict[str, Any]]], float]:
    """Entities of every text, 64 texts a request; return (one list per text, seconds)."""
    out: list[list[dict[str, Any]]] = []
    t0 = time.perf_counter()
    for i in range(0, len(texts), BATCH):
        chunk = list(texts[i : i + BATCH])
        body = check(client.post(f"/v1/models/{model_id}/predict", json={"texts": chunk}), 200)
        rows = body.get("entities")
        if not isinstance(rows, list) or len(rows) != len(chunk):
            got = len(rows) if isinstance(rows, list) else type(rows).__name__
            raise BenchError(f"sent {len(chunk)} texts, got {got} entity lists: {body}")
        out.extend(rows)
    return out, time.perf_counter() - t0


# --- the run ------------------------------------------------------------------------------


def run_bench(
    url: str,
    api_key: str,
    train_set: Sequence[Sentence],
    test_set: Sequence[Sentence],
    workdir: Path,
    args: argparse.Namespace,
) -> EntityResult:
    train_spans = [bio_spans(s) for s in train_set]
    type_counts = Counter(t for spans in train_spans for _, _, t in spans)
    result = EntityResult(
        train_sentences=len(train_set),
        train_entities=sum(type_counts.values()),
        entity_types=len(type_counts),
        epochs=args.epochs,
        batch_size=args.batch_size,
        refit=not args.no_refit,
        requested_backend=args.backend,
    )
    result.extra["train_type_counts"] = dict(type_counts.most_common())
    print(
        f"\n== train: {result.train_sentences} sentences, {result.train_entities} entities, "
        f"{result.entity_types} types"
    )
    conll = workdir / "snips-train.conll"
    write_conll(conll, train_set)
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120.0) as client:
        t0 = time.perf_counter()
        dataset = upload_dataset(
            client,
            f"snips-train-{len(train_set)}",
            conll,
            type="text-entities",
            content_type="text/plain",
            timeout_s=UPLOAD_TIMEOUT_S,
        )
        result.extra["upload_s"] = round(time.perf_counter() - t0, 3)
        result.dataset_id = dataset["id"]
        result.dataset_examples = int(dataset.get("num_examples") or 0)
        result.dataset_duplicates = int(dataset.get("num_duplicates") or 0)
        print(
            f"  dataset {dataset['id']}: {result.dataset_examples} examples, "
            f"{result.dataset_duplicates} duplicates dropped ({result.extra['upload_s']:.1f} s)"
        )

        params: dict[str, Any] = dict(args.params)
        if args.epochs is not None:
            params["epochs"] = args.epochs
        if args.batch_size is not None:
            params["batch_size"] = args.batch_size
        if args.no_refit:
            params["refit_on_all"] = False
        print(f"  training: POST /v1/models params {json.dumps(params)}")
        samples: list[tuple[float, float]] = []
        model, result.train_s = train(
            client,
            dataset["id"],
            f"{args.backend or 'default backend'} {json.dumps(params)}",
            params,
            args.backend,
            timeout_s=args.train_timeout,
            samples=samples,
        )
        result.model_id = model["id"]
        result.backend = f"{model.get('backend')} {model.get('backend_version') or ''}".strip()
        started = parse_time(model.get("started_at"))
        finished = parse_time(model.get("finished_at"))
        if started and finished:
            result.server_train_s = (finished - started).total_seconds()
        metrics = model.get("metrics") or {}
        refit = bool(metrics.get("refit_on_all", not args.no_refit))
        result.refit = refit
        curve = check(client.get(f"/v1/models/{model['id']}/learning-curve"), 200)
        result.learning_curve = list(curve.get("points") or [])
        # the epochs the server ran (a backend may run more than asked on small data)
        epochs = len(result.learning_curve) or args.epochs
        result.epochs = epochs
        fit_span = FIT_SPAN if refit else NO_REFIT_SPAN
        if epochs:
            result.fit_epoch_s = epoch_seconds(samples, fit_span, epochs, last=not refit)
            if refit:
                result.refit_epoch_s = epoch_seconds(samples, REFIT_SPAN, epochs, last=True)
        micro = metrics.get("micro") or {}
        result.server_examples = int(metrics.get("num_evaluated") or 0)
        result.server_precision = float(micro.get("precision", math.nan))
        result.server_recall = float(micro.get("recall", math.nan))
        result.server_f1 = float(micro.get("f1", math.nan))
        server_per = metrics.get("per_entity") or {}
        print(
            f"  model {model['id']} ({result.backend}) succeeded: {result.train_s:.1f} s "
            f"(client), {result.server_train_s:.1f} s (server); "
            f"{fmt(result.fit_epoch_s, '.1f')} s/epoch on the split, "
            f"{fmt(result.refit_epoch_s, '.1f')} s/epoch on all"
        )
        print(
            f"  server held-out ({result.server_examples} sentences): "
            f"P {fmt(result.server_precision, '.4f')}  R {fmt(result.server_recall, '.4f')}  "
            f"F1 {fmt(result.server_f1, '.4f')}"
        )

        texts = [s.text for s in test_set]
        gold = [bio_spans(s) for s in test_set]
        rows, result.predict_s = predict_entities(client, model["id"], texts)

    predicted: list[list[Span]] = []
    extractors: Counter[str] = Counter()
    bad_offsets = 0
    for text, row in zip(texts, rows, strict=True):
        spans = []
        for e in row:
            extractors[str(e.get("extractor"))] += 1
            start, end = int(e["start"]), int(e["end"])
            if not 0 <= start < end <= len(text):
                bad_offsets += 1
            spans.append((start, end, str(e["entity"])))
        predicted.append(spans)
    result.extractors = dict(extractors)
    if bad_offsets:
        result.extra["bad_offsets"] = bad_offsets
    result.test_sentences = len(test_set)
    micro_counts, per_type, result.errors = score(gold, predicted)
    result.test_correct = micro_counts["tp"]
    result.test_predicted = micro_counts["pred"]
    result.test_gold = micro_counts["gold"]
    result.precision, result.recall, result.f1 = prf(
        micro_counts["tp"], micro_counts["pred"], micro_counts["gold"]
    )
    result.unreachable_gold = unreachable_spans(texts, gold)
    for t, c in per_type.items():
        p, r, f = prf(c["tp"], c["pred"], c["gold"])
        held = server_per.get(t) or {}
        result.per_type[t] = {
            "train_count": type_counts.get(t, 0),
            "test_support": c["gold"],
            "test_predicted": c["pred"],
            "test_precision": p,
            "test_recall": r,
            "test_f1": f,
            "server_f1": float(held.get("f1", math.nan)),
            "server_support": int(held.get("support") or 0),
        }
    print(
        f"  test: P {result.precision:.4f}  R {result.recall:.4f}  F1 {result.f1:.4f} "
        f"({result.predict_s:.1f} s for {len(texts)} texts in batches of {BATCH})"
    )
    backend_name = model.get("backend")
    others = {k: v for k, v in extractors.items() if k != backend_name}
    if others:
        print(f"  note: entities from extractors other than {backend_name}: {others}")
    if bad_offsets:
        print(f"  note: {bad_offsets} predicted entities have offsets outside their text")
    return result


# --- report -------------------------------------------------------------------------------


def results_table(r: EntityResult) -> str:
    def ratio(num: int, den: int) -> str:
        return f"{num}/{den}" if den else "-"

    per_text = r.predict_s / r.test_sentences * 1000 if r.test_sentences else math.nan
    rows = [
        ["backend", r.backend or "-"],
        ["train sentences (uploaded / kept)", f"{r.train_sentences} / {r.dataset_examples}"],
        ["train entities / types", f"{r.train_entities} / {r.entity_types}"],
        ["epochs / batch size", f"{r.epochs or 'default'} / {r.batch_size or 'default'}"],
        ["refit on all after held-out fit", "yes" if r.refit else "no"],
        ["train s (client: POST -> succeeded)", fmt(r.train_s, ".1f")],
        ["train s (server: started -> finished)", fmt(r.server_train_s, ".1f")],
        ["s per epoch, fit on the split (+ val F1)", fmt(r.fit_epoch_s, ".1f")],
        ["s per epoch, refit on all", fmt(r.refit_epoch_s, ".1f")],
        [
            f"held-out P / R (server, n={r.server_examples})",
            _pair(r.server_precision, r.server_recall),
        ],
        ["held-out slot F1 (server metrics)", fmt(r.server_f1, ".4f")],
        ["test sentences", str(r.test_sentences)],
        [
            "test entities gold / pred / correct",
            f"{r.test_gold} / {r.test_predicted} / {r.test_correct}",
        ],
        ["test precision", fmt(r.precision, ".4f")],
        ["test recall", fmt(r.recall, ".4f")],
        ["test slot F1 (exact span, micro)", fmt(r.f1, ".4f")],
        [f"test pass s ({BATCH} texts/request)", fmt(r.predict_s, ".2f")],
        ["test pass ms per text", fmt(per_text, ".2f")],
        ["extractors (entities)", ", ".join(f"{k} {v}" for k, v in r.extractors.items()) or "-"],
        [
            "gold spans off spaCy token bounds",
            "-" if r.unreachable_gold is None else ratio(r.unreachable_gold, r.test_gold),
        ],
    ]
    rows += [[f"errors: {k}", str(v)] for k, v in r.errors.items()]
    return render_table(["metric", "value"], rows)


def _pair(a: float, b: float) -> str:
    return f"{fmt(a, '.4f')} / {fmt(b, '.4f')}"


def types_table(r: EntityResult, top: int) -> str:
    ranked = sorted(r.per_type.items(), key=lambda kv: (-kv[1]["train_count"], kv[0]))[:top]
    rows = [
        [
            t,
            str(v["train_count"]),
            str(v["test_support"]),
            fmt(v["test_precision"], ".3f"),
            fmt(v["test_recall"], ".3f"),
            fmt(v["test_f1"], ".3f"),
            str(v["server_support"]),
            fmt(v["server_f1"], ".3f"),
        ]
        for t, v in ranked
    ]
    header = ["type", "train", "test n", "test P", "test R", "test F1", "held n", "held F1"]
    return render_table(header, rows)


def curve_table(r: EntityResult) -> str:
    rows = []
    for rec in r.learning_curve:
        val = rec.get("validation_entity_f1")
        rows.append(
            [
                str(rec.get("epoch", "-")),
                fmt(float(rec.get("train_loss") or math.nan), ".3f"),
                "-" if val is None else f"{float(val):.4f}",
            ]
        )
    return render_table(["epoch", "loss/sentence", "held-out F1"], rows, "rrr")


def target_check(r: EntityResult) -> dict[str, Any]:
    ok = not math.isnan(r.f1) and r.f1 >= TARGET_F1
    return {
        "check": "test slot F1 (exact span, micro)",
        "value": r.f1,
        "shown": fmt(r.f1, ".4f"),
        "target": f">= {TARGET_F1:g}",
        "pass": ok,
    }


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SNIPS folder")
    p.add_argument("--train-limit", type=int, help="use only the first N train sentences")
    p.add_argument(
        "--backend",
        help="entity backend to train (default: the platform's default entity backend)",
    )
    p.add_argument("--epochs", type=int, help="epochs (default: the backend's default)")
    p.add_argument("--batch-size", type=int, help="batch size (default: the backend's default)")
    p.add_argument(
        "--params",
        type=json.loads,
        default={},
        help="more train params as a JSON object, e.g. '{\"learning_rate\": 1e-4}'",
    )
    p.add_argument(
        "--no-refit",
        action="store_true",
        help="train once on the 80 %% split (params.refit_on_all=false): about half the time",
    )
    p.add_argument("--top", type=int, default=10, help="entity types in the per-type table")
    p.add_argument("--port", type=int, default=0, help="port for the server (default: free)")
    p.add_argument("--url", help="use this running server instead of starting one")
    p.add_argument("--api-key", help="tenant API key for --url")
    p.add_argument("--train-timeout", type=float, default=3600.0, help="seconds (default 3600)")
    common_flags(p, "18 sentences with 2 entity types, 2 epochs, no refit", device=False, seed=None)
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.no_refit = args.epochs or 2, True
        if args.backend in (None, "encoder-ner"):  # its min_steps would train 100 updates
            args.params = {"min_steps": 0, **args.params}
    if args.url and not args.api_key:
        p.error("--url needs --api-key")
    if args.api_key and not args.url:
        p.error("--api-key needs --url")
    if args.train_limit is not None and args.train_limit < 1:
        p.error("--train-limit must be at least 1")
    if not isinstance(args.params, dict):
        p.error("--params must be a JSON object")
    if (args.epochs is not None and args.epochs < 1) or (
        args.batch_size is not None and args.batch_size < 1
    ):
        p.error("--epochs and --batch-size must be at least 1")
    return args


def run(args: argparse.Namespace, workdir: Path) -> EntityResult:
    if args.quick:
        args.data = quick_slot_data(workdir / "quick")
    train_set = read_bio(args.data, "train")
    if args.train_limit is not None:
        train_set = train_set[: args.train_limit]
    test_set = read_bio(args.data, "test")
    print(f"test split: {len(test_set)} sentences ({args.data})")
    if args.url:
        return run_bench(args.url.rstrip("/"), args.api_key, train_set, test_set, workdir, args)
    token = secrets.token_urlsafe(24)
    port = args.port or free_port()
    with run_server(workdir, port, "cpu", token) as (url, _log):
        api_key = create_tenant(url, token)
        return run_bench(url, api_key, train_set, test_set, workdir, args)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    facts = machine_facts()
    print_header("Parley entity benchmark (SNIPS slots)", [str(Path(sys.argv[0])), *argv], facts)
    result, total, code = guarded(lambda tmp: run(args, tmp))
    if result is None:
        return code
    target = target_check(result)
    print("\nResults")
    print(results_table(result))
    print(f"\nPer entity type (the {args.top} most frequent in the train sentences used)")
    print(types_table(result, args.top))
    if result.learning_curve:
        print("\nLearning curve (fit on the split; held-out F1 from the server)")
        print(curve_table(result))
    print("\nTarget")
    verdict = "PASS" if target["pass"] else "FAIL"
    print(targets_table([target]))
    print(f"({REFERENCE})")
    print(
        f"\n{verdict}: test slot F1 {target['shown']} (target {target['target']}); training "
        f"{fmt(result.train_s, '.1f')} s, test pass {fmt(result.predict_s, '.1f')} s; "
        f"benchmark took {total:.0f} s"
    )
    print(f"load average at the end: {load_average()}")
    if args.json:
        write_json(args.json, args, facts, total, result=asdict(result), targets=[target])
    return 0


if __name__ == "__main__":
    sys.exit(main())
