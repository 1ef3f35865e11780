"""docker-compose.yml, Dockerfile and Dockerfile.gpu, checked without a Docker engine.

The compose file is validated against the Compose Specification's JSON schema
(``compose-spec.json`` beside this file: compose-spec/compose-spec@170098b, Apache-2.0); every
``parley …`` it or an image runs is parsed by the real CLI (unknown commands, options and bad
values fail); every ``PARLEY_*`` variable set anywhere is a real setting; the topology the
README promises (scalable gateways that train nothing, a GPU worker in profile ``gpu``,
migrations before anything starts, a bucket that matches the storage URL) is asserted.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
import yaml
from pydantic import BaseModel

from core.settings import Settings
from parley import cli

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILES = ("Dockerfile", "Dockerfile.gpu")
SCHEMA = Path(__file__).with_name("compose-spec.json")

SERVICES = {"postgres", "redis", "minio", "minio-setup", "migrate", "demo", "gateway", "worker"}
SCALABLE = ("gateway", "worker")
PARLEY_IMAGE_SERVICES = ("migrate", "demo", "gateway", "worker", "worker-gpu")


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


# --- reading the files ---------------------------------------------------------------------

VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str) -> str:
    """Compose's ``${VAR:-default}`` with nothing set: the default; a required ``${VAR:?…}``
    (or plain ``${VAR}``) becomes a long placeholder, as an operator would give; ``$$`` → ``$``."""

    def value(m: re.Match[str]) -> str:
        name, op, arg = m.groups()
        return arg if op in (":-", "-") else f"{name.lower()}-given-by-the-operator"

    return VAR.sub(value, text.replace("$$", "\0")).replace("\0", "$")


def referenced_variables(text: str) -> set[str]:
    return {m.group(1) for m in VAR.finditer(text.replace("$$", ""))}


@dataclass(frozen=True)
class Instruction:
    file: str
    stage: int  # index of the FROM it follows (0 = the first stage)
    name: str  # upper case: RUN, ENV, USER, ...
    args: str


def dockerfile(name: str) -> list[Instruction]:
    """The instructions of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    stage, pending = -1, ""
    for raw in (ROOT / name).read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text, pending = pending + line, ""
        word, _, args = text.partition(" ")
        if word.upper() == "FROM":
            stage += 1
        out.append(Instruction(name, stage, word.upper(), args.strip()))
    return out


def final_stage(name: str) -> list[Instruction]:
    instructions = dockerfile(name)
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def exec_form(args: str) -> list[str]:
    """``["a", "b"]`` (exec form) or a shell string, as an argv."""
    return json.loads(args) if args.startswith("[") else ["sh", "-c", args]


def dockerfile_env(name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for i in dockerfile(name):
        if i.name != "ENV":
            continue
        words = shlex.split(i.args)
        if words and "=" not in words[0]:  # legacy `ENV NAME value`
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, sep, value = word.partition("=")
            assert sep, f"{name}: ENV {i.args!r}: cannot read {word!r}"
            env[key] = value
    return env


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def argv_of(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else shlex.split(str(value))


SHELLS = ("sh", "bash")


def argvs(argv: list[str]) -> list[list[str]]:
    """The commands an argv runs: itself, or each command of a ``sh -c`` script (split at
    ``&&``, ``||``, ``;`` and newlines, ``exec`` dropped)."""
    if not (len(argv) >= 3 and Path(argv[0]).name in SHELLS and argv[1].startswith("-")):
        return [argv]
    if "c" not in argv[1]:
        return [argv]
    out = []
    for part in re.split(r"&&|\|\||;|\n", argv[2]):
        words = shlex.split(part)
        out.append(words[1:] if words[:1] == ["exec"] else words)
    return [w for w in out if w]


def parley_commands() -> list[tuple[str, list[str]]]:
    """Every ``parley …`` the compose file and the images run: (where, argv), interpolated."""
    found: list[tuple[str, list[str]]] = []
    for name, service in compose()["services"].items():
        candidates = [(key, service.get(key)) for key in ("command", "entrypoint")]
        test = (service.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and test[:1] == ["CMD"]:
            candidates.append(("healthcheck", test[1:]))
        elif isinstance(test, list) and test[:1] == ["CMD-SHELL"]:
            candidates.append(("healthcheck", ["sh", "-c", test[1]]))
        elif isinstance(test, str):
            candidates.append(("healthcheck", ["sh", "-c", test]))
        for what, value in candidates:
            if value:
                argv = [interpolate(a) for a in argv_of(value)]
                found += [(f"{name} {what}", a) for a in argvs(argv)]
    for name in DOCKERFILES:
        for i in dockerfile(name):
            if i.name in ("CMD", "ENTRYPOINT"):
                found += [(f"{name} {i.name}", a) for a in argvs(exec_form(i.args))]
            elif i.name == "HEALTHCHECK":
                _, _, cmd = i.args.partition("CMD ")
                found += [(f"{name} HEALTHCHECK", a) for a in argvs(exec_form(cmd.strip()))]
    return [(where, argv) for where, argv in found if Path(argv[0]).name == "parley"]


def parse_cli(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``argv`` (``parley …``) with the real CLI (typer's command tree, as ``parley``
    runs it, without invoking anything): the command's path and its parameters. Fails on an
    unknown command, an unknown option or a value of the wrong type."""
    command = typer.main.get_command(cli.app)
    path, args = ["parley"], list(argv[1:])
    while hasattr(command, "list_commands"):  # a group: the next word picks a subcommand
        assert args, f"`{' '.join(path)}` needs a subcommand"
        name = args.pop(0)
        ctx = typer.Context(command)
        sub = command.get_command(ctx, name)
        known = command.list_commands(ctx)
        assert sub is not None, f"`{' '.join(path)} {name}`: no such command (known: {known})"
        command, path = sub, [*path, name]
    try:
        parsed = command.make_context(" ".join(path), args)
    except Exception as e:  # click's UsageError family (typer vendors click)
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        pytest.fail(f"`{' '.join(argv)}`: {message}")
    return " ".join(path), parsed.params


def setting_names(model: type[BaseModel] = Settings, prefix: str = "PARLEY_") -> set[str]:
    """Every environment variable a setting reads: ``PARLEY_<FIELD>``, nested sections with
    ``__`` (a section may also be given whole, as JSON), and aliases (PARLEY_CACHE_DIR)."""
    names: set[str] = set()
    for field_name, field in model.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        env = alias.upper() if alias else f"{prefix}{field_name.upper()}"
        names.add(env)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= setting_names(annotation, env + "__")
    return names


def parley_variables() -> dict[str, str]:
    """Every PARLEY_* variable set (or passed through) anywhere: where → name."""
    found: dict[str, str] = {}
    data = compose()
    for name, service in data["services"].items():
        for key in environment(service):
            found[f"{name}: {key}"] = key
    for key in data.get("x-parley-env", {}):
        found[f"x-parley-env: {key}"] = key
    for var in referenced_variables(COMPOSE.read_text()):
        found[f"docker-compose.yml: ${{{var}}}"] = var
    for file in DOCKERFILES:
        for key in dockerfile_env(file):
            found[f"{file}: ENV {key}"] = key
    return {where: key for where, key in found.items() if key.upper().startswith("PARLEY_")}


# --- the compose file ----------------------------------------------------------------------


def test_the_compose_file_follows_the_compose_specification() -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    errors = [
        f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(compose())
    ]
    assert not errors, "\n".join(errors)


def test_it_has_the_services_of_the_issue() -> None:
    services = compose()["services"]
    assert set(services) >= SERVICES, f"missing: {sorted(SERVICES - set(services))}"
    assert "worker-gpu" in services


def test_every_service_it_depends_on_exists() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for needed in service.get("depends_on") or {}:
            assert needed in services, f"{name} depends on {needed}, which is not a service"


@pytest.mark.parametrize("name", SCALABLE)
def test_scalable_services_have_no_fixed_name_or_host_port(name: str) -> None:
    service = compose()["services"][name]
    assert "container_name" not in service, f"{name}: a container_name stops --scale"
    assert not service.get("ports"), f"{name}: a host port clashes at --scale {name}=2"


def test_gateways_train_nothing_and_listen_on_every_interface() -> None:
    path, params = parse_cli(argv_of(compose()["services"]["gateway"]["command"]))
    assert path == "parley serve"
    assert params["workers"] == 0
    assert params["demo"] is False  # the one-shot demo job creates it, once
    assert params["host"] == "0.0.0.0"


def test_workers_take_their_queues() -> None:
    services = compose()["services"]
    queues = {}
    for name in ("worker", "worker-gpu"):
        path, params = parse_cli(argv_of(services[name]["command"]))
        assert path == "parley worker", name
        raw = params["queues"]
        queues[name] = raw.split(",") if isinstance(raw, str) else list(raw)
    assert queues["worker"] == ["cpu"]
    assert queues["worker-gpu"][0] == "gpu" and "cpu" in queues["worker-gpu"]


def test_the_gpu_worker_is_in_profile_gpu_with_an_nvidia_reservation() -> None:
    service = compose()["services"]["worker-gpu"]
    assert service.get("profiles") == ["gpu"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) and d.get("count")
        for d in devices
    ), devices
    assert service["build"]["dockerfile"] == "Dockerfile.gpu"
    others = {n for n, s in compose()["services"].items() if "gpu" in (s.get("profiles") or [])}
    assert others == {"worker-gpu"}, "only the GPU worker may wait for --profile gpu"


def test_migrations_run_before_gateways_workers_and_the_demo() -> None:
    services = compose()["services"]
    path, _ = parse_cli(argv_of(services["migrate"]["command"]))
    assert path == "parley db upgrade"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("gateway", "worker", "worker-gpu", "demo"):
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully", name
        assert needs["minio-setup"]["condition"] == "service_completed_successfully", name
    for name in ("gateway", "worker", "worker-gpu"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_the_demo_job_creates_the_demo_once() -> None:
    services = compose()["services"]
    path, _ = parse_cli(argv_of(services["demo"]["command"]))
    assert path == "parley demo create"
    assert services["demo"].get("restart") == "no"
    assert environment(services["gateway"]).get("PARLEY_DEMO") == "true"  # its orders API


def test_the_bucket_created_is_the_one_parley_stores_in() -> None:
    data = compose()
    url = interpolate(environment(data["services"]["gateway"])["PARLEY_STORAGE__URL"])
    bucket = url.removeprefix("s3://").split("/")[0]
    assert url.startswith("s3://") and bucket
    setup = " ".join(argv_of(data["services"]["minio-setup"]["entrypoint"]))
    made = re.findall(r"mc mb (?:--ignore-existing )?\w+/([\w.-]+)", setup)
    assert made == [bucket], f"minio-setup creates {made}, PARLEY_STORAGE__URL uses {bucket}"


def test_stateful_services_keep_their_data_in_volumes_and_have_health_checks() -> None:
    data = compose()
    for name in ("postgres", "redis", "minio"):
        service = data["services"][name]
        mounts = [str(v).split(":")[0] for v in service.get("volumes", [])]
        assert any(m in data.get("volumes", {}) for m in mounts), f"{name}: no named volume"
        assert service["healthcheck"]["test"], name
    assert "pg_isready" in " ".join(argv_of(data["services"]["postgres"]["healthcheck"]["test"]))


def worker_check(name: str) -> str:
    """The Python program of a worker service's health check (``CMD python -c …``)."""
    check = compose()["services"][name]["healthcheck"]
    assert not check.get("disable"), f"{name}: no health check"
    test = check["test"]
    assert test[:3] == ["CMD", "python", "-c"], f"{name}: {test}"
    return str(test[3])


@pytest.mark.parametrize("name", ["worker", "worker-gpu"])
def test_workers_check_their_own_health_with_real_names(name: str) -> None:
    import ast
    import importlib

    code = worker_check(name)
    tree = ast.parse(code)  # a syntax error fails here
    imported = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert any(n.module == "training.celery_app" for n in imported), "it asks Celery"
    for node in imported:
        module = importlib.import_module(str(node.module))
        for alias in node.names:
            assert hasattr(module, alias.name), f"{name}: {node.module} has no {alias.name}"
    assert "8000" not in code, "a worker's check asks the worker, not a gateway"


@pytest.mark.slow
@pytest.mark.integration
def test_the_worker_check_fails_without_a_worker_and_passes_with_one(
    redis_url: str, tmp_path: Path
) -> None:
    """The compose file's worker health check, run as Docker would, against a real
    redis-server and a real ``parley worker``."""
    import os
    import subprocess
    import sys
    import time

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")},
        "PARLEY_DATA_DIR": str(tmp_path),
        "PARLEY_CACHE_DIR": os.environ["PARLEY_CACHE_DIR"],
        "PARLEY_REDIS__URL": redis_url,
        "PARLEY_QUEUE__BACKEND": "celery",
    }
    code = worker_check("worker")

    def check() -> int:
        argv = [sys.executable, "-c", code]
        return subprocess.run(argv, env=env, cwd=ROOT, timeout=60).returncode

    assert check() == 1, "healthy with no worker running"
    worker = subprocess.Popen(
        [sys.executable, "-m", "parley.cli", "worker", "--queues", "cpu"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while check() != 0:
            assert worker.poll() is None, f"the worker exited ({worker.returncode})"
            assert time.monotonic() < deadline, "the worker never answered its health check"
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def test_the_gateway_keeps_the_images_health_check() -> None:
    service = compose()["services"]["gateway"]
    assert not (service.get("healthcheck") or {}).get("disable")


@pytest.mark.parametrize("where,argv", parley_commands(), ids=lambda v: str(v))
def test_every_parley_command_it_runs_exists(where: str, argv: list[str]) -> None:
    parse_cli(argv)


def test_the_commands_checked_include_every_service_that_runs_parley() -> None:
    wheres = {where.split(" ")[0] for where, _ in parley_commands()}
    assert set(PARLEY_IMAGE_SERVICES) <= wheres


@pytest.mark.parametrize("where,name", sorted(parley_variables().items()))
def test_every_parley_variable_is_a_setting(where: str, name: str) -> None:
    assert name.upper() in setting_names(), f"{where}: {name} is not a Parley setting"


def test_the_shared_environment_selects_the_distributed_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = environment(compose()["services"]["gateway"])
    for key, value in env.items():
        if key.startswith("PARLEY_"):
            monkeypatch.setenv(key, interpolate(value))
    settings = Settings()
    assert settings.queue.backend == "celery"
    assert settings.redis.url and settings.redis.url.startswith("redis://redis:")
    assert settings.storage_url.startswith("s3://")
    assert settings.storage.endpoint_url == "http://minio:9000"
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.counter_backend == "redis"
    assert settings.secret_key is not None and settings.operator_token is not None
    for key in ("PARLEY_SECRET_KEY", "PARLEY_OPERATOR_TOKEN"):
        assert ":?" in env[key], f"{key} has a default: a cluster must not run on a known secret"
    for name in PARLEY_IMAGE_SERVICES:
        service_env = environment(compose()["services"][name])
        missing = set(env) - set(service_env) - {"PARLEY_DEMO", "FORWARDED_ALLOW_IPS"}
        assert not missing, f"{name} lacks {sorted(missing)}"


# --- the images ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_run_as_a_non_root_user(name: str) -> None:
    users = [i.args for i in final_stage(name) if i.name == "USER"]
    assert users, f"{name}: the final stage runs as root (no USER)"
    assert users[-1].split(":")[0] not in ("root", "0"), f"{name}: USER {users[-1]}"
    for service in compose()["services"].values():
        assert str(service.get("user", "parley")).split(":")[0] not in ("root", "0")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_check_the_gateways_health_route(name: str) -> None:
    from bot_gateway.app import create_app

    checks = [i.args for i in final_stage(name) if i.name == "HEALTHCHECK"]
    assert checks and checks[-1] != "NONE", f"{name}: no HEALTHCHECK"
    urls = re.findall(r"https?://[^'\" ]+", checks[-1])
    assert urls, f"{name}: the HEALTHCHECK calls no URL"
    path = re.sub(r"^https?://[^/]+", "", urls[0])
    paths = create_app(Settings(), warm_encoder=False).openapi()["paths"]
    assert "get" in paths.get(path, {}), f"{name}: HEALTHCHECK calls {path}, no GET route there"
    exposed = [i.args for i in final_stage(name) if i.name == "EXPOSE"]
    port = re.search(r":(\d+)/", urls[0])
    assert port and any(port.group(1) in e.split() for e in exposed), f"{name}: port not exposed"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_install_pinned_by_constraints(name: str) -> None:
    runs = [i.args for i in dockerfile(name) if i.name == "RUN" and "pip install" in i.args]
    assert runs, f"{name}: nothing is installed with pip"
    for run in runs:
        for part in run.split("pip install")[1:]:
            assert "-c constraints.txt" in part.split("&&")[0], f"{name}: unpinned: {run}"
    assert any(re.search(r"pip install .*\s\.(\s|$)", run) for run in runs), (
        f"{name}: Parley itself is never installed"
    )
    copied = " ".join(i.args for i in dockerfile(name) if i.name == "COPY")
    assert "constraints.txt" in copied, f"{name}: constraints.txt is not copied in"


def test_the_gpu_image_starts_from_cuda() -> None:
    froms = [i.args for i in dockerfile("Dockerfile.gpu") if i.name == "FROM"]
    args = dict(
        a.partition("=")[::2]
        for i in dockerfile("Dockerfile.gpu")
        if i.name == "ARG"
        for a in [i.args]
    )
    first = froms[0].split()[0]
    image = args.get(first.strip("${}"), first) if first.startswith("$") else first
    assert image.startswith("nvidia/cuda:"), image


def test_the_build_context_leaves_out_environments_data_and_secrets() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for entry in (".venv", "var", ".git", ".env", "tests"):
        assert entry in ignored, f".dockerignore does not leave out {entry}"


# --- the README's deployment section ---------------------------------------------------------


def deploying_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Deploying distributed\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_the_readme_deployment_section_names_real_settings() -> None:
    section = deploying_section()
    names = set(re.findall(r"\bPARLEY_[A-Z0-9_]+", section))
    assert "PARLEY_REDIS__URL" in names
    unknown = sorted(names - setting_names())
    assert not unknown, f"README 'Deploying distributed' names unknown settings: {unknown}"


def test_the_readme_deployment_commands_exist() -> None:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", deploying_section(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            words = [w for w in words if not re.fullmatch(r"[A-Z_]+=\S*", w)]  # VAR=value
            if words and Path(words[0]).name == "parley":
                commands.append(["parley", *[w for w in words[1:] if w != "&"]])
    assert len(commands) >= 3, commands
    for argv in commands:
        parse_cli(argv)
