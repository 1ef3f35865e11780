"""Studio benchmark: how fast the API behind Parley Studio answers a signed-in user.

It starts ``parley serve --no-demo`` on a temporary data directory, creates a tenant, uploads
an intent dataset and trains the default intent backend on it (``--backend`` to change), invites
a ``builder`` and signs in as the Studio does (``POST /v1/auth/login``: the session cookie, and
its CSRF token sent in ``X-CSRF-Token`` on writes: the bot is created that way). A bot on that
model then has ``--conversations`` scripted conversations on the REST channel (each
``--messages`` customer messages: test texts of the dataset, and now and then an off-topic
question written here, so there are fallbacks, handoffs and low-confidence answers), sent by
``--concurrency`` callers with the tenant's API key, as a customer's system would.

Then, one request at a time on one keep-alive client with the session cookie (as a browser
tab), it times:

* the Studio's shell: ``GET /studio/datasets`` (index.html) and ``studio.js``;
* the session: ``GET /v1/auth/me``, and ``GET /v1/models`` with the cookie against the same
  call with the API key (interleaved), whose p50 difference is the session's overhead;
* charts: the dataset's label chart (not cached: every call draws; the very first chart of the
  process also imports matplotlib and is shown on its own row); the model's
  ``confusion-matrix`` (77 labels on Banking77), ``learning-curve``, ``out-of-scope`` and
  ``per-label``, SVG and PNG: cold (a first draw, kept per model, format and ``max_labels``:
  the cold p50 is of ``--cold`` first draws, the default ``max_labels`` then 81, 82, ... which
  draw the same chart) and cached;
* the held-out examples of the most confused confusion-matrix cell (a page of 25, as the
  model page asks) and the dataset's examples search ``q=`` (a page of 24, as the datasets
  page asks): a word in many texts and one in none (every text read);
* ``GET /v1/analytics?bot_id=&granularity=day`` over the conversations (all of today: the
  REST channel cannot backdate a message) and its ``rates`` chart;
* the improve inbox (``GET /v1/bots/{id}/improve``): cold (its first opening encodes every
  item) and warm, with its items and groups.

Cheap calls are repeated ``--repeat`` times, the heavier ones (held-out, search, analytics,
the inbox warm, the label chart) a fifth of that, after one warm-up call each.

Targets (issue 16): shell p50 <= 10 ms; cached chart p50 <= 20 ms (the slowest of the cached
charts); held-out and search p50 <= 50 ms; analytics p50 <= 200 ms at the full size (500
conversations, 3,000 messages); improve inbox warm p50 <= 300 ms; session overhead over an
API key <= 5 ms at p50.

The full run reads Banking77 from ../shared/datasets (train + valid: 10,162 texts, 77 labels;
the conversations say test texts)::

    .venv/bin/python -m bench.studio
    .venv/bin/python -m bench.studio --conversations 100 --repeat 50 --json /tmp/studio.json
    .venv/bin/python -m bench.studio --quick
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import math
import random
import secrets
import sys
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
from bench.report import fmt, render_table

DEFAULT_DATA = SHARED_DATA / "banking77"
BOT_READY_TIMEOUT_S = 300.0
USERNAME = "studio-bench"
PASSWORD = secrets.token_urlsafe(18)
MODEL_CHARTS = ("confusion-matrix", "learning-curve", "out-of-scope", "per-label")
FORMATS = ("svg", "png")
HELD_OUT_PAGE = 25  # the model page's page of held-out examples
EXAMPLES_PAGE = 24  # the datasets page's page of examples
SEARCH_HIT = "card"
SEARCH_MISS = "zzqx"  # in no text: the search reads every example
OFF_TOPIC_SHARE = 0.15

# Questions no banking intent answers, written for this benchmark; said now and then in the
# conversations so the bot falls back (and hands over after two in a row).
OFF_TOPIC = (
    "what's the weather like in paris tomorrow",
    "tell me a joke",
    "who won the football last night",
    "can you recommend a good pizza place",
    "how tall is the eiffel tower",
    "play some jazz music",
    "what time is it in tokyo",
    "i want to book a table for two",
    "what's a good movie to watch tonight",
    "how do i bake sourdough bread",
    "is it going to rain this weekend",
    "translate hello into spanish",
    "what is the capital of australia",
    "remind me to call my mum",
    "how many calories in a banana",
    "where can i park my car near the station",
)

# Targets (issue 16), milliseconds at p50.
SHELL_MS = 10.0
CACHED_CHART_MS = 20.0
LIST_MS = 50.0  # held-out examples, examples search
ANALYTICS_MS = 200.0
IMPROVE_WARM_MS = 300.0
SESSION_OVERHEAD_MS = 5.0


@dataclass
class Row:
    """One timed call: its samples in ms (``cold``: first draws, each on its own key)."""

    group: str
    what: str
    route: str
    samples: list[float]
    size: int = 0  # bytes of the last answer
    note: str = ""

    @property
    def p50(self) -> float:
        return percentile(self.samples, 50)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)


@dataclass
class Setup:
    """What was built before the timing, and how long it took."""

    examples: int = 0
    labels: int = 0
    model_id: str = ""
    backend: str = ""
    train_s: float = math.nan
    login_ms: list[float] = field(default_factory=list)
    conversations: int = 0
    turns: int = 0
    turn_errors: int = 0
    conversations_s: float = math.nan
    analytics_totals: dict[str, Any] = field(default_factory=dict)
    improve_items: int = 0
    improve_groups: int = 0
    held_out_cell: str = ""
    held_out_total: int = 0
    search_hits: dict[str, int] = field(default_factory=dict)


@dataclass
class Outcome:
    setup: Setup
    rows: list[Row]


class Timer:
    """Timed calls on one keep-alive client; every answer checked for its status and body."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def once(self, path: str, *, params: dict[str, Any] | None = None) -> tuple[float, bytes]:
        t0 = time.perf_counter()
        resp = self.client.get(path, params=params)
        ms = (time.perf_counter() - t0) * 1000
        if resp.status_code != 200:
            raise BenchError(f"GET {path} -> HTTP {resp.status_code}: {resp.text[:500]}")
        return ms, resp.content

    def many(
        self, path: str, n: int, *, params: dict[str, Any] | None = None, warm: bool = True
    ) -> tuple[list[float], bytes]:
        """``n`` timed calls (after one untimed call when ``warm``)."""
        if warm:
            self.once(path, params=params)
        samples: list[float] = []
        body = b""
        for _ in range(n):
            ms, body = self.once(path, params=params)
            samples.append(ms)
        return samples, body


def check_chart(body: bytes, fmt_name: str, what: str) -> None:
    ok = body.startswith(b"\x89PNG") if fmt_name == "png" else b"<svg" in body[:2000]
    if not ok:
        raise BenchError(f"{what}: the answer is not a {fmt_name.upper()} image")


def dataset_rows(args: argparse.Namespace) -> tuple[list[str], list[str], list[str]]:
    """(training texts, their labels, the texts the conversations say)."""
    texts: list[str] = []
    labels: list[str] = []
    for split in args.splits:
        t, lab = read_split(args.data, split)
        texts += t
        labels += lab
    said, _ = read_split(args.data, "test")
    return texts, labels, said


def bot_definition(model_id: str, intents: Sequence[str]) -> dict[str, Any]:
    """A bot whose NLU is the benchmark's model: one flow answers every intent; a fallback
    twice in a row hands the conversation to a person (the default)."""
    return {
        "name": "Studio bench bot",
        "description": "Answers every intent of the benchmark's model with one reply.",
        "nlu": {"model": model_id},
        "responses": {
            "utter_answer": [{"text": "Thanks, I can help with that."}],
            "utter_fallback": [{"text": "Sorry, I didn't get that. Could you rephrase?"}],
        },
        "flows": {"answer": {"intents": list(intents), "steps": [{"reply": "utter_answer"}]}},
        "fallback": {"responses": ["utter_fallback"]},
    }


def studio_client(url: str, tenant: str) -> tuple[httpx.Client, str, list[float]]:
    """A client signed in as the Studio user (cookie kept by the client), its CSRF token, and
    the login times (ms) of three sign-ins (password hashing included; the last one is kept)."""
    client = httpx.Client(base_url=url, timeout=120.0)
    login_ms: list[float] = []
    csrf = ""
    for _ in range(3):
        client.cookies.clear()
        t0 = time.perf_counter()
        body = check(
            client.post(
                "/v1/auth/login",
                json={"tenant": tenant, "username": USERNAME, "password": PASSWORD},
            ),
            200,
        )
        login_ms.append((time.perf_counter() - t0) * 1000)
        csrf = str(body["csrf_token"])
    if body["user"]["role"] != "builder":
        raise BenchError(f"signed in as {body['user']['role']}, not builder")
    return client, csrf, login_ms


def create_bot(studio: httpx.Client, csrf: str, model_id: str, intents: Sequence[str]) -> str:
    """Create the bot as the Studio does (cookie + ``X-CSRF-Token``); wait until it is ready."""
    bot = check(
        studio.post(
            "/v1/bots", json=bot_definition(model_id, intents), headers={"X-CSRF-Token": csrf}
        ),
        201,
    )
    deadline = time.monotonic() + BOT_READY_TIMEOUT_S
    while bot["status"] == "training":
        if time.monotonic() > deadline:
            raise BenchError(f"bot {bot['id']} still training after {BOT_READY_TIMEOUT_S:.0f} s")
        time.sleep(0.25)
        bot = check(studio.get(f"/v1/bots/{bot['id']}"), 200)
    if bot["status"] != "ready":
        raise BenchError(f"bot {bot['id']} is {bot['status']}: {bot.get('status_message')}")
    return str(bot["id"])


def scripts(said: Sequence[str], args: argparse.Namespace) -> list[list[str]]:
    """What each conversation says, in turn (seeded)."""
    out = []
    for i in range(args.conversations):
        rng = random.Random(f"{args.seed}:{i}")
        out.append(
            [
                rng.choice(OFF_TOPIC) if rng.random() < OFF_TOPIC_SHARE else rng.choice(said)
                for _ in range(args.messages)
            ]
        )
    return out


def converse(
    url: str, api_key: str, bot_id: str, said: Sequence[str], args: argparse.Namespace
) -> tuple[int, int, float]:
    """Run the scripted conversations on the REST channel: (turns, failed turns, seconds)."""
    path = f"/v1/bots/{bot_id}/webhooks/rest"
    headers = {"Authorization": f"Bearer {api_key}"}
    failures: list[str] = []

    def one(index: int, texts: list[str], client: httpx.Client) -> int:
        for text in texts:
            resp = client.post(path, json={"sender": f"customer-{index:05d}", "message": text})
            if resp.status_code != 200:
                failures.append(f"HTTP {resp.status_code}: {resp.text[:200]}")
        return len(texts)

    t0 = time.perf_counter()
    with (
        httpx.Client(base_url=url, headers=headers, timeout=120.0) as client,
        concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool,
    ):
        futures = [pool.submit(one, i, s, client) for i, s in enumerate(scripts(said, args))]
        turns = sum(f.result() for f in futures)
    if failures:
        print(f"  {len(failures)} turns failed, e.g. {failures[0]}")
    return turns, len(failures), time.perf_counter() - t0


def most_confused(metrics: dict[str, Any]) -> tuple[str, str]:
    """The confusion-matrix cell (true, predicted) off the diagonal with the most examples;
    the fullest diagonal cell when the model confused nothing."""
    cm = metrics.get("confusion_matrix") or {}
    labels, matrix = cm.get("labels") or [], cm.get("matrix") or []
    if not labels:
        raise BenchError("the model has no confusion matrix (trained without a held-out split?)")
    cells = [(count, i, j) for i, row in enumerate(matrix) for j, count in enumerate(row)]
    off = [c for c in cells if c[1] != c[2] and c[0]]
    _, i, j = max(off or cells)
    return labels[i], labels[j]


def measure(
    studio: httpx.Client,
    keyed: httpx.Client,
    dataset_id: str,
    model: dict[str, Any],
    bot_id: str,
    setup: Setup,
    args: argparse.Namespace,
) -> list[Row]:
    """Every timed call of the Studio's pages (see the module docstring)."""
    t = Timer(studio)
    n, heavy = args.repeat, max(3, args.repeat // 5)
    rows: list[Row] = []

    def add(
        group: str, what: str, route: str, samples: list[float], body: bytes, note: str = ""
    ) -> None:
        rows.append(Row(group, what, route, samples, len(body), note))

    print("timing the Studio's shell and session")
    for what, path in (
        ("index.html", "/studio/datasets"),
        ("studio.js", "/studio/static/studio.js"),
    ):
        samples, body = t.many(path, n)
        add("shell", what, path, samples, body)
    samples, body = t.many("/v1/auth/me", n)
    add("session", "who am I", "/v1/auth/me", samples, body)
    cookie_ms, key_ms = [], []
    by_key = Timer(keyed)
    for _ in range(n + 1):  # interleaved: the same load on both; the first pair warms up
        ms, body = t.once("/v1/models")
        cookie_ms.append(ms)
        key_ms.append(by_key.once("/v1/models")[0])
    add("session", "models (cookie)", "/v1/models", cookie_ms[1:], body)
    add("session", "models (API key)", "/v1/models", key_ms[1:], body)

    print("timing the charts")
    labels_path = f"/v1/datasets/{dataset_id}/plots/labels"
    first_ms, body = t.once(f"{labels_path}.svg")
    check_chart(body, "svg", "labels.svg")
    add("charts", "labels.svg, process's first chart", f"{labels_path}.svg", [first_ms], body)
    for fmt_name in FORMATS:
        samples, body = t.many(f"{labels_path}.{fmt_name}", heavy)
        check_chart(body, fmt_name, f"labels.{fmt_name}")
        add("charts", f"labels.{fmt_name} (cached by its counts)", labels_path, samples, body)
    model_path = f"/v1/models/{model['id']}/plots"
    for kind in MODEL_CHARTS:
        for fmt_name in FORMATS:
            path = f"{model_path}/{kind}.{fmt_name}"
            cold: list[float] = []
            for k in range(args.cold):  # a new max_labels is a new cache key: a first draw
                ms, body = t.once(path, params={"max_labels": 81 + k - 1} if k else None)
                cold.append(ms)
            check_chart(body, fmt_name, f"{kind}.{fmt_name}")
            add("charts", f"{kind}.{fmt_name} cold", path, cold, body, "first draws")
            samples, body = t.many(path, n, warm=False)  # the default max_labels: drawn above
            add("charts", f"{kind}.{fmt_name} cached", path, samples, body)

    print("timing held-out examples and the examples search")
    label, predicted = most_confused(model.get("metrics") or {})
    params: dict[str, Any] = {"label": label, "predicted": predicted, "limit": HELD_OUT_PAGE}
    held_path = f"/v1/models/{model['id']}/held-out"
    samples, body = t.many(held_path, heavy, params=params)
    page = check(studio.get(held_path, params=params), 200)
    setup.held_out_cell, setup.held_out_total = f"{label} -> {predicted}", int(page["total"])
    add("lists", "held-out of one cell", held_path, samples, body, f"{page['total']} examples")
    examples_path = f"/v1/datasets/{dataset_id}/examples"
    for q, what in ((SEARCH_HIT, "search, many hits"), (SEARCH_MISS, "search, no hit")):
        params = {"q": q, "offset": 0, "limit": EXAMPLES_PAGE}
        samples, body = t.many(examples_path, heavy, params=params)
        hits = int(check(studio.get(examples_path, params=params), 200)["total"])
        setup.search_hits[q] = hits
        add("lists", f"{what} (q={q})", examples_path, samples, body, f"{hits} of {setup.examples}")

    print("timing analytics and the improve inbox")
    params = {"bot_id": bot_id, "granularity": "day"}
    samples, body = t.many("/v1/analytics", heavy, params=params)
    setup.analytics_totals = check(studio.get("/v1/analytics", params=params), 200)["totals"]
    totals = setup.analytics_totals
    note = f"{totals['conversations']} conv., {totals['messages']} msg."
    add("analytics", "analytics, day", "/v1/analytics", samples, body, note)
    samples, body = t.many("/v1/analytics/plots/rates.svg", heavy, params=params)
    check_chart(body, "svg", "rates.svg")
    add("analytics", "rates.svg", "/v1/analytics/plots/rates.svg", samples, body)
    improve_path = f"/v1/bots/{bot_id}/improve"
    cold_ms, body = t.once(improve_path, params={"status": "open"})
    inbox = check(studio.get(improve_path, params={"status": "open"}), 200)
    setup.improve_groups = len(inbox["groups"])
    setup.improve_items = sum(len(g["items"]) for g in inbox["groups"])
    note = f"{setup.improve_items} items, {setup.improve_groups} groups"
    add("improve", "inbox cold (encodes)", improve_path, [cold_ms], body, note)
    samples, body = t.many(improve_path, heavy, params={"status": "open"}, warm=False)
    add("improve", "inbox warm", improve_path, samples, body, note)
    return rows


def run(args: argparse.Namespace, workdir: Path) -> Outcome:
    if args.quick:
        args.data = quick_intent_data(workdir / "quick", seed=args.seed)
        args.splits = ["train"]
    texts, labels, said = dataset_rows(args)
    intents = sorted(set(labels))
    setup = Setup(examples=len(texts), labels=len(intents))
    csv_path = workdir / "dataset.csv"
    write_csv(csv_path, texts, labels)
    token = secrets.token_urlsafe(24)
    with run_server(workdir, args.port or free_port(), args.device, token) as (url, _log):
        api_key = create_tenant(url, token)
        headers = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=url, headers=headers, timeout=120.0) as keyed:
            dataset = upload_dataset(keyed, "studio-bench", csv_path)
            print(
                f"dataset {dataset['id']}: {dataset['num_examples']} examples, "
                f"{len(intents)} labels"
            )
            model, setup.train_s = train(keyed, dataset["id"], "studio-bench", {}, args.backend)
            setup.model_id, setup.backend = model["id"], str(model.get("backend"))
            invite = check(
                keyed.post("/v1/users/invites", json={"username": USERNAME, "role": "builder"}),
                201,
            )
            accepted = check(  # not on the keyed client: it would keep the session cookie
                httpx.post(
                    f"{url}/v1/auth/accept-invite",
                    json={"token": invite["token"], "password": PASSWORD},
                    timeout=60.0,
                ),
                200,
            )
            tenant = str(accepted["user"]["tenant_name"] or accepted["user"]["tenant_id"])
            studio, csrf, setup.login_ms = studio_client(url, tenant)
            with contextlib.closing(studio):
                bot_id = create_bot(studio, csrf, model["id"], intents)
                print(
                    f"bot {bot_id}: {args.conversations} conversations of {args.messages} "
                    f"messages on the REST channel ({args.concurrency} at a time)"
                )
                setup.turns, setup.turn_errors, setup.conversations_s = converse(
                    url, api_key, bot_id, said, args
                )
                setup.conversations = args.conversations
                rows = measure(studio, keyed, dataset["id"], model, bot_id, setup, args)
    return Outcome(setup, rows)


def results_table(rows: Sequence[Row]) -> str:
    header = ["group", "call", "n", "p50 ms", "p99 ms", "bytes", "note"]
    body = [
        [
            r.group,
            r.what,
            str(len(r.samples)),
            fmt(r.p50, ".1f"),
            fmt(r.p99, ".1f") if len(r.samples) > 1 else "-",
            f"{r.size:,}" if r.size else "-",
            r.note,
        ]
        for r in rows
    ]
    return render_table(header, body, "llrrrrl")


def evaluate_targets(outcome: Outcome, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = {r.what: r for r in outcome.rows}
    checks: list[dict[str, Any]] = []

    def add(title: str, value: float, goal: float, target: str) -> None:
        checks.append(
            {
                "check": title,
                "value": value,
                "shown": f"{fmt(value, '.1f')} ms",
                "target": target,
                "pass": not math.isnan(value) and value <= goal,
            }
        )

    for what in ("index.html", "studio.js"):
        add(f"shell {what} p50", rows[what].p50, SHELL_MS, f"<= {SHELL_MS:g} ms")
    cached = max((r for r in outcome.rows if r.what.endswith(" cached")), key=lambda r: r.p50)
    add(f"cached chart p50 (slowest: {cached.what[:-7]})", cached.p50, CACHED_CHART_MS, "<= 20 ms")
    for r in outcome.rows:
        if r.group == "lists":
            add(f"{r.what} p50", r.p50, LIST_MS, f"<= {LIST_MS:g} ms")
    size = "" if args.conversations >= 500 else f" (at {args.conversations} conv.; goal at 500)"
    add(f"analytics day p50{size}", rows["analytics, day"].p50, ANALYTICS_MS, "<= 200 ms")
    add("improve inbox warm p50", rows["inbox warm"].p50, IMPROVE_WARM_MS, "<= 300 ms")
    overhead = rows["models (cookie)"].p50 - rows["models (API key)"].p50
    add("session overhead over a key p50", overhead, SESSION_OVERHEAD_MS, "<= 5 ms")
    return checks


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="intent data folder (Banking77 layout: <split>/seq.in + label)",
    )
    p.add_argument(
        "--splits",
        default="train,valid",
        help="the splits that make the dataset, comma-separated (test: what customers say)",
    )
    p.add_argument(
        "--backend", help="intent backend (embedding-head, setfit); default: the platform's"
    )
    p.add_argument("--conversations", type=int, default=500, help="scripted conversations")
    p.add_argument("--messages", type=int, default=6, help="customer messages a conversation")
    p.add_argument("--concurrency", type=int, default=8, help="conversations at a time")
    p.add_argument(
        "--repeat", type=int, default=100, help="timed calls of a cheap route (heavy: a fifth)"
    )
    p.add_argument("--cold", type=int, default=3, help="first draws timed per chart and format")
    p.add_argument("--port", type=int, default=0, help="port for the server (default: free)")
    common_flags(
        p, "12 intents, 30 conversations, 20 calls a route", seed="the conversations' seed"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.conversations, args.repeat = 30, 20
    args.splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    if not args.splits:
        p.error("--splits: at least one split")
    for name in ("conversations", "messages", "concurrency", "repeat", "cold"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    facts = machine_facts()
    print_header("Parley Studio API benchmark", [str(Path(sys.argv[0])), *argv], facts)
    outcome, total, code = guarded(lambda tmp: run(args, tmp))
    if outcome is None:
        return code
    s = outcome.setup
    print(
        f"\nSet-up: {s.examples} examples, {s.labels} labels; {s.backend} trained in "
        f"{s.train_s:.1f} s; sign-in {fmt(percentile(s.login_ms, 50), '.0f')} ms p50 of "
        f"{len(s.login_ms)}; {s.turns} REST turns in {s.conversations_s:.1f} s "
        f"({s.turns / s.conversations_s:.0f}/s, {s.turn_errors} failed)"
    )
    print(f"held-out cell: {s.held_out_cell}; analytics totals: {s.analytics_totals}")
    print("\nResults (one request at a time, the Studio user's cookie, keep-alive)")
    print(results_table(outcome.rows))
    return report_targets(
        evaluate_targets(outcome, args),
        total,
        facts,
        args,
        setup=asdict(s),
        results=[{**asdict(r), "p50": r.p50, "p99": r.p99} for r in outcome.rows],
    )


if __name__ == "__main__":
    sys.exit(main())
