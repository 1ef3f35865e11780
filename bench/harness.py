"""The benches' shared harness: starting and stopping a Parley server, the REST calls every
bench makes (tenant, dataset upload, training), timing helpers, the machine facts printed
above every result, the JSON output, the shared datasets' reader, and the tiny data that
``--quick`` runs generate in-process (so a quick run needs nothing from ../shared).

Every bench imports what it shares from here and from :mod:`bench.report`, never from another
bench.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import random
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bench.report import json_safe, targets_table

ROOT = Path(__file__).resolve().parent.parent

SHARED_DATA = ROOT.parent / "shared" / "datasets"
MB = 1_000_000

POLL_S = 0.25


HEALTH_TIMEOUT_S = 120.0


TRAIN_TIMEOUT_S = 1800.0


STOP_GRACE_S = 15.0


class BenchError(RuntimeError):
    """A failure that ends the benchmark with a message (and a non-zero exit)."""


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


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100), like numpy's default."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


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


def report_targets(
    checks: Sequence[dict[str, Any]],
    total: float,
    facts: dict[str, Any],
    args: argparse.Namespace,
    *,
    title: str = "Targets",
    table: str | None = None,
    notes: Sequence[str] = (),
    **sections: Any,
) -> int:
    """The end of every bench: the targets table (``table``, default ``targets_table(checks)``)
    under ``title``, how many were met and how long it took, ``notes``, the load average, and
    with ``--json`` the run's JSON (``sections`` and the targets). Returns 0, ``main``'s code."""
    print(f"\n{title}")
    print(table if table is not None else targets_table(checks))
    passed = sum(bool(c["pass"]) for c in checks)
    print(f"\n{passed}/{len(checks)} targets met; benchmark took {total:.0f} s")
    for note in notes:
        print(note)
    print(f"load average at the start: {facts['load_average_start']}, at the end: {load_average()}")
    if args.json:
        write_json(args.json, args, facts, total, **sections, targets=list(checks))
    return 0


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


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB (10^6 bytes)."""
    values: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) * 1024 / MB
    except OSError:
        pass
    return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- quick mode ---------------------------------------------------------------------------


def common_flags(
    p: argparse.ArgumentParser, quick: str, *, device: bool = True, seed: str | None = ""
) -> None:
    """The flags benches share: ``--quick`` (``quick`` says what the quick run does),
    ``--json``, and unless turned off ``--device`` and ``--seed`` (``seed``: its help)."""
    if device:
        p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    if seed is not None:
        p.add_argument("--seed", type=int, default=0, help=seed or None)
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"a run of seconds on tiny data generated here (not ../shared): {quick}",
    )


QUICK_INTENTS: dict[str, tuple[str, ...]] = {
    "check_balance": ("balance", "money left", "how much is in my account", "funds available"),
    "card_lost": ("lost my card", "card is missing", "cannot find my card", "card was stolen"),
    "transfer": ("send money", "transfer funds", "wire to my friend", "move cash to savings"),
    "exchange_rate": ("exchange rate", "euro to dollar", "currency conversion", "fx rate today"),
    "pin_change": ("change my pin", "new pin code", "reset the pin", "forgot my pin"),
    "open_account": ("open an account", "new savings account", "sign up for banking", "join"),
    "close_account": ("close my account", "cancel my account", "delete my profile", "leave"),
    "loan": ("apply for a loan", "borrow money", "mortgage rates", "personal loan terms"),
    "atm": ("nearest atm", "cash machine nearby", "where to withdraw", "atm locations"),
    "fees": ("monthly fee", "why was i charged", "service charges", "hidden fees"),
    "address": ("change my address", "i moved house", "update postal address", "new address"),
    "statement": ("bank statement", "last month transactions", "download statement", "history"),
}
QUICK_SLOTS: dict[str, tuple[str, ...]] = {
    "city": ("paris", "berlin", "tokyo", "lima", "oslo", "cairo"),
    "artist": ("adele", "queen", "drake", "abba", "muse", "sting"),
}


def quick_intent_data(folder: Path, *, seed: int = 0) -> Path:
    """A tiny intent dataset in the Banking77 layout (``<split>/seq.in`` + ``label``) under
    ``folder``: splits ``train``, ``train_10``, ``train_5`` and ``test``, 12 intents (the
    serving bench draws 10 or more a tenant)."""
    rng = random.Random(seed)
    frames = ("{}", "please {}", "i need {} now", "{} thanks", "can you help: {}", "hi, {}")
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    for label, phrases in QUICK_INTENTS.items():
        texts = sorted({f.format(p) for f in frames for p in phrases})
        rng.shuffle(texts)
        splits["test"] += [(t, label) for t in texts[:3]]
        splits["train"] += [(t, label) for t in texts[3:15]]
    splits["train_10"] = [(t, lab) for i, (t, lab) in enumerate(splits["train"]) if i % 12 < 10]
    splits["train_5"] = [(t, lab) for i, (t, lab) in enumerate(splits["train"]) if i % 12 < 5]
    for name, pairs in splits.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "seq.in").write_text("".join(f"{t}\n" for t, _ in pairs))
        (folder / name / "label").write_text("".join(f"{lab}\n" for _, lab in pairs))
    return folder


def quick_slot_data(folder: Path, *, seed: int = 0) -> Path:
    """A tiny slot dataset in the SNIPS layout (``<split>/seq.in`` + ``seq.out`` BIO tags)
    under ``folder``: splits ``train`` and ``test``, entity types ``city`` and ``artist``."""
    rng = random.Random(seed)
    frames = (
        ("weather in", "city"),
        ("fly to", "city"),
        ("play", "artist"),
        ("songs by", "artist"),
    )
    rows: list[tuple[str, str]] = []
    for words, kind in frames:
        for value in QUICK_SLOTS[kind]:
            tokens = [*words.split(), value, "please"]
            tags = ["O"] * len(words.split()) + [f"B-{kind}", "O"]
            rows.append((" ".join(tokens), " ".join(tags)))
    rng.shuffle(rows)
    for name, part in (("test", rows[:6]), ("train", rows[6:])):
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "seq.in").write_text("".join(f"{t}\n" for t, _ in part))
        (folder / name / "seq.out").write_text("".join(f"{tags}\n" for _, tags in part))
    return folder
