"""The tenant matrix: tenant B calls every id-taking route with tenant A's ids.

The routes come from the app itself, never from a list here: every operation of the OpenAPI
document with a path parameter, or with a query parameter or JSON body field that names an id
(``*_id``), plus the websocket routes and the routes left out of the schema (``/files/...``).
Path parameters (and ``*_id`` query parameters and JSON fields) are filled by NAME from
``PARAMETERS``; a route with a parameter missing there fails (add the name, and make
``build_estate`` create one such thing per tenant), so coverage cannot shrink silently when a
route is added.

Each case sends B's request (B's admin key and B's agent session cookie, or B's public widget
key) with A's ids — and, for routes with several ids, every mix of A's and B's (B's bot with
A's channel, A's bot with B's conversation, ...) — and asserts:

* the answer is 404 (or 401/403/405): never 2xx, never 5xx. A write may answer 415 or 422
  only if the same request with ids that exist nowhere answers the same (validation came
  first); writes send a body of a documented kind (JSON, else multipart), sampled from the
  schema;
* B cannot tell A's ids from ids that exist nowhere: the same request with A's ids replaced by
  random ones of the same shape gets the same status, error code and message (except on the
  provider-signed webhook routes, see ``PROVIDER_SIGNED``);
* the body holds nothing of A's that B did not send (ids, names, secrets, texts).

A's own reads of the same routes answer 2xx (so the table's ids are real), and at the end
A's resources are exactly as they were before B's requests (nothing changed or deleted).

Ids inside bodies the schema does not describe (a bot definition naming a model, a REST
message attaching an upload) are probed from ``BODY_REFERENCES``: B's request on B's own
things with one of A's ids inside must answer 404 or 422, as for an id that exists nowhere.
B's agents' socket must hear nothing while A's agent writes in A's conversation.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.probes.conftest import LiveGateway, ProbeTenant, agent_headers, wait_for
from tests.support.data import intent_csv
from tests.support.images import encode, folder_zip, shape_image

pytestmark = pytest.mark.slow

WRITES = {"POST", "PUT", "PATCH", "DELETE"}
REFUSED = {401, 403, 404, 405}

# --- the parameter table: every id a route can take, by parameter NAME ----------------------

PARAMETERS: dict[str, str] = {
    "bot_id": "the tenant's bot (NLU: its intent model)",
    "channel_id": "a Twilio channel of that bot",
    "conversation_id": "a REST-channel conversation of that bot, handed off to an agent",
    "upload_id": "an image an agent sent in that conversation (public link)",
    "token": "the public link token of that upload (/files/{upload_id}/{token})",
    "dataset_id": "an image dataset",
    "example_id": "an example of that dataset",
    "model_id": "an intent model (trained)",
    "name": "an alias of that model",
    "key_id": "a second API key",
    "agent_id": "an agent account",
    "user_id": "a user of the tenant (that agent account)",
    "invite_id": "a pending invite of a new user",
    "tenant_id": "the tenant itself",
    "target_id": "an id the tenant's audit log names (its bot)",
}
"""Each name is a key of ``Estate.ids``; ``build_estate`` makes one of each per tenant."""

PROVIDER_SIGNED = ("/webhooks/",)
"""Routes that channel providers call, signed by the provider rather than by a tenant: their
ids are in URLs given to the provider, and telling "no such channel" (404) from "bad
signature" (401) is what an operator needs when wiring a channel, so the no-oracle check
does not apply to them (the status and no-data checks do)."""

NOT_TENANT_DATA = {
    "/console/agents/static/{name}": "the agents' console's own script and style files",
    "/studio/static/{name:path}": "the Studio's own script and style files",
    "/studio/{path:path}": "the Studio's page URLs: every one serves the same index.html",
}
"""Routes with a path parameter that names nothing of a tenant's (why, for the reviewer)."""

FIXED: dict[str, str] = {
    "kind": "confusion-matrix",  # which chart of the thing the route's ids name
    "fmt": "svg",
    "version": "1",  # a bot's version number: the bot's id is what is probed
}
"""Path parameters that name nothing of a tenant's by themselves (a chart's kind and format,
a version number of the bot the route's id names): filled with these values for A and B
alike, so the probe is about the ids beside them. ``FIXED_BY_PATH`` overrides per route."""

FIXED_BY_PATH: dict[str, dict[str, str]] = {
    "/v1/analytics/plots/{kind}.{fmt}": {"kind": "rates"},
}

CAPABILITIES = {"token"}
"""Parameters that are themselves credentials: a request that holds all of A's, capability
included, is allowed to succeed (that is what a public link is for)."""

# --- the operations, from the app ------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    method: str  # an HTTP method, or "WS" for a websocket
    path: str
    path_params: tuple[str, ...]
    query_ids: tuple[str, ...] = ()
    body: dict[str, Any] | None = None  # the JSON schema of a JSON body (refs resolved)
    form: dict[str, Any] | None = None  # the schema of a multipart body, when it has no JSON

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


def _resolve(schema: Any, components: dict[str, Any], depth: int = 0) -> Any:
    if depth > 12:
        return {}
    if isinstance(schema, dict):
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            return _resolve(components.get(name, {}), components, depth + 1)
        return {k: _resolve(v, components, depth + 1) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_resolve(v, components, depth + 1) for v in schema]
    return schema


def _id_fields(schema: dict[str, Any]) -> list[str]:
    return [p for p in (schema.get("properties") or {}) if p.endswith("_id")]


def _flat_routes(routes: list[Any]) -> Iterator[tuple[str, Any]]:
    """(full path, route) of every route, through included routers (FastAPI >= 0.16x keeps
    them as ``_IncludedRouter`` entries instead of copying their routes into the app)."""
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is None:
            yield getattr(route, "path", ""), route
        else:
            for context in contexts():
                path = context.path or getattr(context.starlette_route, "path", "")
                yield path, context.original_route


def discover() -> tuple[list[Operation], dict[str, Any]]:
    """Every operation of the app that takes an id, and the OpenAPI document itself."""
    from starlette.routing import Route, WebSocketRoute

    from bot_gateway.app import create_app
    from core.settings import Settings

    app = create_app(Settings(data_dir=Path(tempfile.gettempdir()) / "parley-probe-schema"))
    with warnings.catch_warnings():  # duplicate operation ids are schemathesis's finding
        warnings.simplefilter("ignore")
        schema = app.openapi()
    components = schema.get("components", {}).get("schemas", {})
    found: list[Operation] = []
    for path, item in schema["paths"].items():
        for method, op in item.items():
            params = op.get("parameters", [])
            path_params = tuple(
                p["name"] for p in params if p["in"] == "path" and p["name"] not in FIXED
            )
            query_ids = tuple(
                p["name"] for p in params if p["in"] == "query" and p["name"].endswith("_id")
            )
            content = (op.get("requestBody") or {}).get("content") or {}
            body = form = None
            if "application/json" in content:
                body = _resolve(content["application/json"].get("schema", {}), components)
            elif "multipart/form-data" in content:
                form = _resolve(content["multipart/form-data"].get("schema", {}), components)
            if path_params or query_ids or (body and _id_fields(body)):
                found.append(Operation(method.upper(), path, path_params, query_ids, body, form))
    documented = set(schema["paths"])
    for path, route in _flat_routes(app.routes):
        params = tuple(p for p in re.findall(r"{(\w+)(?::\w+)?}", path) if p not in FIXED)
        if not params or path in documented or path in NOT_TENANT_DATA:
            continue
        if isinstance(route, WebSocketRoute) or type(route).__name__ == "APIWebSocketRoute":
            found.append(Operation("WS", path, params))
        elif isinstance(route, Route):
            for method in sorted((route.methods or set()) - {"HEAD"}):
                found.append(Operation(method, path, params))
    order = {"WS": 0, "GET": 1, "POST": 2, "PUT": 2, "PATCH": 2, "DELETE": 3}
    # deletes last, children before parents: a leaking delete must not hide later cases
    found.sort(key=lambda o: (order.get(o.method, 2), -len(o.path) * (o.method == "DELETE")))
    return found, schema


OPERATIONS, SCHEMA = discover()


@dataclass(frozen=True)
class Case:
    op: Operation
    owners: tuple[str, ...]  # "A" or "B" per path parameter
    credential: str  # "key" (admin key + agent session) or "widget"

    @property
    def id(self) -> str:
        mix = ",".join(f"{o}'s {p}" for o, p in zip(self.owners, self.op.path_params, strict=True))
        return f"{self.op.id} [{mix or 'ids in query/body'}] {self.credential}"


def cases() -> Iterator[Case]:
    for op in OPERATIONS:
        for owners in itertools.product("AB", repeat=len(op.path_params)):
            if owners and "A" not in owners:
                continue  # B's own ids only: not a probe
            if all(o == "A" for o in owners) and CAPABILITIES & set(op.path_params):
                continue  # A's link with A's token works for anyone: it is the credential
            for credential in ("key", "widget"):
                yield Case(op, owners, credential)


CASES = list(cases())

# --- the two tenants' estates -----------------------------------------------------------------


@dataclass
class Estate:
    tenant: ProbeTenant
    ids: dict[str, str]  # by PARAMETERS name
    widget_key: str
    agent_cookie: str
    sender: str  # the REST channel customer of the conversation
    secrets: set[str] = field(default_factory=set)  # everything of this tenant another must not see


def _ok(r: httpx.Response, *codes: int) -> Any:
    assert r.status_code in codes, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r.json() if r.content else None


def build_estate(gateway: LiveGateway, tenant: ProbeTenant, tag: str) -> Estate:
    """One of each thing in ``PARAMETERS``, made the way a user makes them."""
    mark = f"{tag}-{secrets.token_hex(4)}"
    h = tenant.headers
    with gateway.client(timeout=60) as c:
        text_ds = _ok(
            c.post(
                "/v1/datasets",
                files={"file": ("intents.csv", intent_csv())},
                data={"name": f"{mark}-intents", "type": "text-intent"},
                headers=h,
            ),
            201,
        )
        model = _ok(c.post("/v1/models", json={"dataset_id": text_ds["id"]}, headers=h), 202)
        image_ds = _ok(
            c.post(
                "/v1/datasets",
                files={"file": ("shapes.zip", folder_zip(2))},
                data={"name": f"{mark}-shapes", "type": "image"},
                headers=h,
            ),
            201,
        )
        wait_for(
            lambda: c.get(f"/v1/datasets/{image_ds['id']}", headers=h).json()["status"] == "ready",
            "the image dataset",
        )
        example = _ok(c.get(f"/v1/datasets/{image_ds['id']}/examples", headers=h), 200)
        example_id = str(example["examples"][0]["id"])
        wait_for(
            lambda: (
                c.get(f"/v1/models/{model['id']}", headers=h).json()["status"]
                in ("succeeded", "failed")
            ),
            "the intent model",
        )
        alias = f"{mark}-alias"
        _ok(c.put(f"/v1/aliases/{alias}", json={"model_id": model["id"]}, headers=h), 200)
        bot = _ok(
            c.post(
                "/v1/bots",
                json={
                    "name": f"{mark}-bot",
                    "nlu": {"model": model["id"]},
                    "responses": {"utter_greet": [{"text": f"{mark} greets you"}]},
                    "flows": {"greet": {"intents": ["greet"], "steps": [{"reply": "utter_greet"}]}},
                },
                headers=h,
            ),
            201,
        )
        auth_token = f"{mark}-twilio-secret"
        channel = _ok(
            c.post(
                f"/v1/bots/{bot['id']}/channels",
                json={
                    "type": "twilio",
                    "config": {
                        "account_sid": "AC" + secrets.token_hex(16),
                        "auth_token": auth_token,
                        "from_number": "+1555" + str(secrets.randbelow(10**7)).zfill(7),
                    },
                },
                headers=h,
            ),
            201,
        )
        sender = f"{mark}-customer"
        _ok(
            c.post(
                f"/v1/bots/{bot['id']}/webhooks/rest",
                json={"sender": sender, "message": f"hello, I am {mark}"},
                headers=h,
            ),
            200,
        )
        page = _ok(c.get("/v1/conversations", params={"bot_id": bot["id"]}, headers=h), 200)
        (conversation,) = page["conversations"] if "conversations" in page else page["items"]
        key = _ok(
            c.post("/v1/keys", json={"scopes": ["predict"], "name": f"{mark}-key"}, headers=h), 201
        )
        username = f"{mark}-agent"
        agent_id = gateway.add_agent(tenant, username)
        cookie = gateway.agent_cookie(tenant, username)
        agent = agent_headers(cookie)
        _ok(c.post(f"/v1/conversations/{conversation['id']}/handoff", headers=h), 200)
        _ok(c.post(f"/v1/agent/conversations/{conversation['id']}/claim", headers=agent), 200)
        sent = _ok(
            c.post(
                f"/v1/agent/conversations/{conversation['id']}/messages",
                files={"file": ("photo.png", encode(shape_image("circle", 1), "PNG"))},
                data={"text": f"{mark} photo"},
                headers=agent,
            ),
            200,
        )
        link = re.search(r"/files/([^/]+)/([^/\"]+)$", sent["turn"]["image"])
        assert link, sent
        invite = _ok(
            c.post(
                "/v1/users/invites",
                json={"username": f"{mark}-invitee", "role": "builder"},
                headers=h,
            ),
            201,
        )
    ids = {
        "bot_id": bot["id"],
        "channel_id": channel["id"],
        "conversation_id": conversation["id"],
        "upload_id": link.group(1),
        "token": link.group(2),
        "dataset_id": image_ds["id"],
        "example_id": example_id,
        "model_id": model["id"],
        "name": alias,
        "key_id": key["id"],
        "agent_id": agent_id,
        "user_id": agent_id,
        "invite_id": invite["invite"]["id"],
        "tenant_id": tenant.id,
        "target_id": bot["id"],
    }
    assert set(ids) == set(PARAMETERS)
    marks = {
        mark,
        tenant.id,
        tenant.key,
        tenant.name,
        text_ds["id"],
        key["api_key"],
        bot["widget_key"],
        cookie,
        auth_token,
        sender,
        *(v for v in ids.values() if not v.isdigit()),  # a small number is in any text
    }
    return Estate(tenant, ids, bot["widget_key"], cookie, sender, marks)


def snapshot(gateway: LiveGateway, estate: Estate) -> dict[str, Any]:
    """What A sees of its own things (to compare before and after B's requests)."""
    h = estate.tenant.headers
    ids = estate.ids
    agent = agent_headers(estate.agent_cookie)
    reads = {
        "bot": f"/v1/bots/{ids['bot_id']}",
        "versions": f"/v1/bots/{ids['bot_id']}/versions",
        "channels": f"/v1/bots/{ids['bot_id']}/channels",
        "conversation": f"/v1/conversations/{ids['conversation_id']}",
        "dataset": f"/v1/datasets/{ids['dataset_id']}",
        "examples": f"/v1/datasets/{ids['dataset_id']}/examples",
        "model": f"/v1/models/{ids['model_id']}",
        "aliases": "/v1/aliases",
        "keys": "/v1/keys",
        "users": "/v1/users",
        "invites": "/v1/users/invites",
        "conversations": "/v1/conversations",
        "bots": "/v1/bots",
        "datasets": "/v1/datasets",
        "models": "/v1/models",
    }
    out: dict[str, Any] = {}
    with gateway.client() as c:
        for name, path in reads.items():
            r = c.get(path, headers=h)
            out[name] = (r.status_code, r.json())
        r = c.get(f"/v1/agent/conversations/{ids['conversation_id']}", headers=agent)
        out["agent view"] = (r.status_code, r.json())
        r = c.get(f"/files/{ids['upload_id']}/{ids['token']}")
        out["public file"] = (r.status_code, len(r.content))
    return out


@dataclass
class World:
    gateway: LiveGateway
    a: Estate
    b: Estate
    before: dict[str, Any]


@pytest.fixture(scope="module")
def world(live_gateway: LiveGateway) -> World:
    a = build_estate(live_gateway, live_gateway.tenants["a"], "tenant-a")
    b = build_estate(live_gateway, live_gateway.tenants["b"], "tenant-b")
    return World(live_gateway, a, b, snapshot(live_gateway, a))


# --- making and checking one request ----------------------------------------------------------


def fake_of(value: str) -> str:
    """An id of the same shape as ``value`` that exists nowhere."""
    if value.isdigit():  # example ids are integers
        return str(900_000_000 + secrets.randbelow(99_999_999))
    match = re.fullmatch(r"([a-z]+_)([0-9a-f]+)", value)
    if match:
        return (
            match.group(1) + secrets.token_hex(len(match.group(2)) // 2 + 1)[: len(match.group(2))]
        )
    return "zz" + secrets.token_hex(max(4, len(value) // 2))[: max(8, len(value) - 2)]


def sample(schema: dict[str, Any], ids: dict[str, str], name: str = "") -> Any:
    """A small value that satisfies ``schema``; ``*_id`` fields get the ids given."""
    if name.endswith("_id") and name in ids:
        return ids[name]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return sample(options[0], ids, name)
    if "allOf" in schema:
        return sample(schema["allOf"][0], ids, name)
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        wanted = set(schema.get("required") or []) | set(_id_fields(schema))
        return {p: sample(s, ids, p) for p, s in props.items() if p in wanted}
    if kind == "array":
        item = sample(schema.get("items") or {}, ids)
        return [item] * max(1, int(schema.get("minItems", 1)))
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return max(1.0, float(schema.get("minimum", 1.0)))
    if kind == "boolean":
        return False
    return "probe text" if "password" not in name else "probe-password"


PNG = encode(shape_image("triangle", 3, (32, 32)), "PNG")


def form_sample(schema: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    """A multipart body for ``schema``: a small PNG for each file, a sample for each field."""
    data, files = {}, []
    for name, prop in (schema.get("properties") or {}).items():
        if name not in set(schema.get("required") or []) and not name.endswith("_id"):
            continue
        binary = prop.get("format") == "binary" or (prop.get("items") or {}).get("format")
        if binary:
            files.append((name, (f"{name}.png", PNG, "image/png")))
        else:
            data[name] = str(sample(prop, ids, name))
    return {"data": data, "files": files or None}


@dataclass
class Sent:
    status: int
    body: Any  # JSON, or text
    text: str


def fill(op: Operation, values: dict[str, str]) -> str:
    path = op.path
    for p in op.path_params:
        path = re.sub("{" + p + r"(:\w+)?}", values[p], path)
    for p, value in {**FIXED, **FIXED_BY_PATH.get(op.path, {})}.items():
        path = path.replace("{" + p + "}", value)
    return path


def send(
    world: World, op: Operation, values: dict[str, str], body_ids: dict[str, str], credential: str
) -> Sent:
    """B's request of ``op`` with ``values`` in its path and ``body_ids`` in its query/body."""
    b = world.b
    path = fill(op, values)
    if credential == "key":
        headers = {**b.tenant.headers, **agent_headers(b.agent_cookie)}
        params: dict[str, str] = {}
    else:
        headers = {"X-Parley-Widget-Key": b.widget_key}
        params = {"key": b.widget_key}
    params.update({q: body_ids[q] for q in op.query_ids if q in body_ids})
    if op.method == "WS":
        return send_ws(world, path, params, headers)
    kwargs: dict[str, Any] = {}
    if op.method in WRITES - {"DELETE"}:
        if op.form:
            kwargs = form_sample(op.form, body_ids)
        else:
            kwargs = {"json": sample(op.body, body_ids) if op.body else {}}
    with world.gateway.client(timeout=60) as c:
        r = c.request(op.method, path, params=params, headers=headers, **kwargs)
    try:
        parsed: Any = r.json()
    except ValueError:
        parsed = r.text
    return Sent(r.status_code, parsed, r.text)


def send_ws(world: World, path: str, params: dict[str, str], headers: dict[str, str]) -> Sent:
    """A websocket's answer as a Sent: the close code (4xxx -> xxx) and the first frame."""
    query = str(httpx.QueryParams(params))
    url = world.gateway.url.replace("http://", "ws://") + path + (f"?{query}" if query else "")
    frames: list[Any] = []
    code = 0
    try:
        with connect(url, additional_headers=headers, open_timeout=20, close_timeout=5) as ws:
            while len(frames) < 5:
                frames.append(json.loads(ws.recv(timeout=20)))
                if frames[-1].get("type") == "welcome":
                    break
    except ConnectionClosed as e:
        code = e.rcvd.code if e.rcvd else 1006
    except TimeoutError:
        code = 0
    if any(f.get("type") == "welcome" for f in frames):
        status = 200
    else:
        status = code - 4000 if 4000 <= code < 5000 else (code or 599)
    body = frames[0] if frames else {}
    return Sent(status, body, json.dumps(frames))


def normal(sent: Sent, replaced: dict[str, str]) -> tuple[int, str, str]:
    """Status, error code and message with the ids sent replaced by ``<id>``."""
    text = sent.text
    for value in sorted(replaced, key=len, reverse=True):
        text = text.replace(value, "<id>")
    body = sent.body if isinstance(sent.body, dict) else {}
    message = str(body.get("message", text))
    for value in sorted(replaced, key=len, reverse=True):
        message = message.replace(value, "<id>")
    return sent.status, str(body.get("error", "")), message if sent.status >= 400 else text


def repro(case: Case, values: dict[str, str], credential: str) -> str:
    auth = "B's admin key" if credential == "key" else "B's widget key"
    return f"{case.op.method} {fill(case.op, values)} with {auth}"


# --- the matrix -------------------------------------------------------------------------------


def test_every_path_parameter_is_in_the_table() -> None:
    named = {
        p
        for op in OPERATIONS
        for p in (*op.path_params, *op.query_ids, *(_id_fields(op.body) if op.body else ()))
    }
    missing = sorted(named - set(PARAMETERS))
    assert not missing, (
        f"routes take ids the tenant matrix does not know: {missing}; add each to "
        "PARAMETERS in tests/probes/test_tenant_matrix.py and make build_estate create one "
        "such thing per tenant, so another tenant's is probed"
    )


def test_the_matrix_covers_the_served_schema(world: World) -> None:
    """The operations generated at collection are those the live server documents."""
    live = httpx.get(f"{world.gateway.url}/openapi.json", timeout=30).json()
    served = {(m.upper(), p) for p, item in live["paths"].items() for m in item}
    collected = {(m.upper(), p) for p, item in SCHEMA["paths"].items() for m in item}
    assert served == collected
    assert len(CASES) > 50, [c.id for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_another_tenant_gets_nothing(world: World, case: Case) -> None:
    op = case.op
    named = (*op.path_params, *op.query_ids, *(_id_fields(op.body) if op.body else ()))
    missing = [p for p in named if p not in PARAMETERS]
    if missing:
        pytest.fail(
            f"{op.id}: no value for id parameter(s) {missing}; add them to PARAMETERS "
            "in tests/probes/test_tenant_matrix.py (and build_estate)"
        )
    a, b = world.a, world.b
    values = {
        p: (a if owner == "A" else b).ids[p]
        for p, owner in zip(op.path_params, case.owners, strict=True)
    }
    body_ids = {k: v for k, v in a.ids.items()}  # ids in the query or body: A's
    real = send(world, op, values, body_ids, case.credential)
    a_sent = {v for p, v in values.items() if v == a.ids[p]} | {
        body_ids[f]
        for f in (*op.query_ids, *(_id_fields(op.body) if op.body else ()))
        if f in body_ids
    }
    fakes = {v: fake_of(v) for v in a_sent}
    fake_values = {p: fakes.get(v, v) for p, v in values.items()}
    fake_ids = {k: fakes.get(v, v) for k, v in body_ids.items()}
    fake = send(world, op, fake_values, fake_ids, case.credential)
    where = repro(case, values, case.credential)

    assert real.status < 500, f"{where}: {real.status} {real.text[:300]}"
    a_in_path = any(o == "A" for o in case.owners)
    if a_in_path or op.method in WRITES:
        allowed = REFUSED | ({415, 422} if op.method in WRITES else set())
        assert real.status in allowed, (
            f"{where}: {real.status} — another tenant's id must answer 404 (or 401/403/405); "
            f"body: {real.text[:300]}"
        )
    echoed = [m for m in a.secrets if any(m in v for v in a_sent)]  # B sent it itself
    leaked = sorted(m for m in a.secrets - set(echoed) if m and m in real.text)
    assert not leaked, f"{where}: the answer holds A's {leaked}: {real.text[:300]}"
    if op.path.startswith(PROVIDER_SIGNED):
        return
    replaced_real = {v: "<id>" for v in a_sent}
    replaced_fake = {fakes[v]: "<id>" for v in a_sent}
    assert normal(real, replaced_real) == normal(fake, replaced_fake), (
        f"{where}: B can tell A's ids from ids that exist nowhere: {real.status} "
        f"{real.text[:200]!r} vs {fake.status} {fake.text[:200]!r}"
    )


# --- ids inside bodies that the schema does not describe (bot definitions, REST messages) ----


@dataclass(frozen=True)
class BodyReference:
    """B's request on B's own things, with one of A's ids inside the body."""

    id: str
    method: str
    path: str  # formatted with B's ids
    body: Any  # formatted with A's ids: str values "{model_id}" etc.


BODY_REFERENCES = [
    BodyReference(
        "a bot whose NLU is A's model",
        "POST",
        "/v1/bots",
        {"name": "b-borrows-model", "nlu": {"model": "{model_id}"}},
    ),
    BodyReference(
        "a bot whose NLU is A's alias",
        "POST",
        "/v1/bots",
        {"name": "b-borrows-alias", "nlu": {"model": "{name}"}},
    ),
    BodyReference(
        "a bot trained on A's dataset",
        "POST",
        "/v1/bots",
        {"name": "b-borrows-dataset", "nlu": {"dataset": "{dataset_id}"}},
    ),
    BodyReference(
        "a bot whose vision step is A's model",
        "POST",
        "/v1/bots",
        {
            "name": "b-borrows-vision",
            "nlu": {"model": "B:{model_id}"},
            "vision": [{"name": "look", "model": "{model_id}"}],
        },
    ),
    BodyReference(
        "B's bot's new version on A's model",
        "PUT",
        "/v1/bots/{bot_id}",
        {"name": "b-bot", "nlu": {"model": "{model_id}"}},
    ),
    BodyReference(
        "B's alias pointing at A's model",
        "PUT",
        "/v1/aliases/b-borrowed",
        {"model_id": "{model_id}"},
    ),
    BodyReference(
        "a message to B's bot attaching A's upload",
        "POST",
        "/v1/bots/{bot_id}/webhooks/rest",
        {"sender": "b-prober", "message": "look", "attachments": ["{upload_id}"]},
    ),
]


def _format(value: Any, ids: dict[str, str], own: dict[str, str]) -> Any:
    if isinstance(value, str):
        if value.startswith("B:"):
            return value[2:].format(**own)
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: _format(v, ids, own) for k, v in value.items()}
    if isinstance(value, list):
        return [_format(v, ids, own) for v in value]
    return value


@pytest.mark.parametrize("ref", BODY_REFERENCES, ids=[r.id for r in BODY_REFERENCES])
def test_another_tenant_cannot_refer_to_a_in_a_body(world: World, ref: BodyReference) -> None:
    a, b = world.a, world.b
    path = ref.path.format(**b.ids)
    headers = {**b.tenant.headers, **agent_headers(b.agent_cookie)}
    fakes = {k: fake_of(v) for k, v in a.ids.items()}
    answers = []
    with world.gateway.client(timeout=60) as c:
        for ids in (a.ids, fakes):
            body = _format(ref.body, ids, b.ids)
            r = c.request(ref.method, path, json=body, headers=headers)
            answers.append(Sent(r.status_code, r.json() if r.content else None, r.text))
    real, fake = answers
    sent = [v for v in a.ids.values() if v in json.dumps(_format(ref.body, a.ids, b.ids))]
    where = f"{ref.method} {path} with {sent} in the body, B's admin key"
    assert real.status < 500, f"{where}: {real.status} {real.text[:300]}"
    assert real.status in {404, 422}, (
        f"{where}: {real.status} — A's things must not be usable by B: {real.text[:300]}"
    )
    echoed = [m for m in a.secrets if any(m in v for v in sent)]
    leaked = sorted(m for m in a.secrets - set(echoed) if m in real.text)
    assert not leaked, f"{where}: the answer holds A's {leaked}: {real.text[:300]}"
    replaced = {v: "<id>" for v in sent} | {fakes[k]: "<id>" for k, v in a.ids.items() if v in sent}
    assert normal(real, replaced)[:2] == normal(fake, replaced)[:2], (
        f"{where}: B can tell A's ids from ids that exist nowhere: {real.status} "
        f"{real.text[:200]!r} vs {fake.status} {fake.text[:200]!r}"
    )


def test_a_reads_its_own(world: World) -> None:
    """The table's ids are real: A's own reads of every GET route answer 2xx."""
    a = world.a
    failures = []
    for op in OPERATIONS:
        if op.method != "GET" or not op.path_params or op.path.startswith("/webhooks/"):
            continue  # webhooks are signed by the provider, not by a tenant's credential
        headers = {**a.tenant.headers, **agent_headers(a.agent_cookie)}
        r = httpx.get(world.gateway.url + fill(op, a.ids), headers=headers, timeout=60)
        if not 200 <= r.status_code < 300:
            failures.append(f"{op.id}: {r.status_code} {r.text[:200]}")
    assert not failures, "A's own ids do not reach these routes:\n" + "\n".join(failures)


def test_b_changed_nothing_of_a(world: World) -> None:
    """After every case above, A's things are exactly as they were."""
    after = snapshot(world.gateway, world.a)
    changed = [k for k in world.before if world.before[k] != after[k]]
    assert not changed, {k: (world.before[k], after[k]) for k in changed}


def test_b_agents_socket_hears_nothing_of_a(world: World) -> None:
    """B's agents' socket stays silent while A's agent writes in A's conversation, which A's
    own socket hears (runs last: it adds a note to A's conversation)."""
    base = world.gateway.url.replace("http://", "ws://") + "/v1/agent/ws"
    a, b = world.a, world.b
    with (
        connect(base, additional_headers=agent_headers(a.agent_cookie)) as wa,
        connect(base, additional_headers=agent_headers(b.agent_cookie)) as wb,
    ):
        for ws in (wa, wb):  # both subscribed before A writes
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.recv(timeout=20))["type"] == "pong"
        note = f"{a.ids['conversation_id']} private note"
        r = httpx.post(
            f"{world.gateway.url}/v1/agent/conversations/{a.ids['conversation_id']}/notes",
            json={"text": note},
            headers=agent_headers(a.agent_cookie),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        heard_a = []
        while not any(note in f for f in heard_a):
            heard_a.append(wa.recv(timeout=20))
        heard_b = []
        try:
            while True:
                heard_b.append(wb.recv(timeout=2))
        except TimeoutError:
            pass
    leaked = [f for f in heard_b if any(m in f for m in a.secrets | {note})]
    assert not leaked, f"B's agents' socket heard A's conversation: {leaked}"


def test_the_public_widget_key_reaches_no_other_customer(world: World) -> None:
    """Anyone can read a bot's widget key from the page that embeds it: with it alone, a
    stranger opens a conversation of their own, and reaches neither another customer's web
    chat (its history, its images) nor the REST conversation of another sender."""
    a = world.a
    bot, key = a.ids["bot_id"], a.widget_key
    socket_url = world.gateway.url.replace("http://", "ws://") + f"/v1/bots/{bot}/ws"
    secret, session = f"customer-one-{secrets.token_hex(4)}", "s" + secrets.token_hex(8)
    with connect(f"{socket_url}?key={key}&session={session}", open_timeout=20) as ws:
        welcome = json.loads(ws.recv(timeout=20))
        assert welcome["type"] == "welcome", welcome
        ws.send(json.dumps({"type": "message", "text": f"hello {secret}"}))
        while json.loads(ws.recv(timeout=30))["type"] != "message":
            pass
    first = {"key": key}
    if welcome.get("session_token"):
        first["session_token"] = welcome["session_token"]
    photo = {"file": ("photo.png", encode(shape_image("square", 2), "PNG"))}
    with world.gateway.client() as c:
        r = c.post(f"/v1/bots/{bot}/uploads", params=first, files=photo)
        assert r.status_code == 201, r.text
        their_upload = r.json()["upload_id"]

    # the stranger: the widget key, customer one's session id, no session token
    with connect(f"{socket_url}?key={key}&session={session}", open_timeout=20) as ws:
        frame = json.loads(ws.recv(timeout=20))
    seen = json.dumps(frame)
    assert frame.get("conversation_id") != welcome["conversation_id"] and secret not in seen, (
        f"a stranger with the widget key resumed customer one's web chat: {seen[:300]}"
    )
    stranger = {"key": key}
    if frame.get("session_token"):
        stranger["session_token"] = frame["session_token"]
    attempts = {
        "customer one's image, widget key alone": ("GET", their_upload, {"key": key}, None),
        "customer one's image, the stranger's token": ("GET", their_upload, stranger, None),
        "the agent's image in A's REST conversation": ("GET", a.ids["upload_id"], stranger, None),
        "writing as A's REST customer, widget key alone": (
            "POST", None, {"key": key}, {"sender": a.sender, "message": f"it is me {secret}"}
        ),
        "writing as A's REST customer, the stranger's token": (
            "POST", None, stranger, {"sender": a.sender, "message": f"it is me {secret}"}
        ),
    }  # fmt: skip
    got = {}
    with world.gateway.client() as c:
        for name, (method, upload, params, body) in attempts.items():
            if method == "GET":
                r = c.get(f"/v1/bots/{bot}/uploads/{upload}", params=params)
            else:
                r = c.post(f"/v1/bots/{bot}/webhooks/rest", params=params, json=body)
            got[name] = (r.status_code, r.text[:160])
        transcript = c.get(
            f"/v1/conversations/{a.ids['conversation_id']}", headers=a.tenant.headers
        ).text
    reached = {k: v for k, v in got.items() if v[0] < 400 or v[0] >= 500}
    assert not reached, f"the public widget key reached another customer: {reached}"
    assert f"it is me {secret}" not in transcript, "the stranger wrote into A's conversation"
