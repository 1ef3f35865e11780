"""Bots: create from YAML or JSON (versioned on every change), read, update, enable/disable,
delete; read one version or the diff of two; check a definition without saving it; import a
Rasa project; run story tests against a bot."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import UploadFile

from bot_gateway.conversations import bots as service
from bot_gateway.conversations.definition import (
    parse_definition,
    read_definition_text,
)
from bot_gateway.conversations.rasa_import import import_rasa
from bot_gateway.conversations.storytest import load_cases
from bot_gateway.deps import AdminDep, GatewayDep, PredictDep, SessionDep, TrainDep
from bot_gateway.requests import check_length, form_file, read_form, read_limited
from bot_gateway.schemas import (
    BotDiff,
    BotPatch,
    BotPublic,
    BotValidate,
    BotValidation,
    BotVersionPublic,
    DefinitionProblem,
    RowNumber,
    StoryTestReport,
)
from bot_gateway.services import bots as bots_service
from core.documents import document_limits
from core.errors import InvalidInput
from core.settings import LimitSettings

router = APIRouter(prefix="/bots", tags=["bots"])

MAX_DEFINITION_BYTES = 1024 * 1024
UPLOADS = "max_upload_bytes"  # files of a form: bounded like uploads (definitions: max_json_bytes)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")


async def read_definition(request: Request, limits: LimitSettings) -> dict[str, Any]:
    """The bot definition in the request: JSON, YAML, or a multipart ``file``, read within
    the document limits."""
    check_length(request, MAX_DEFINITION_BYTES)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await read_form(request, limit=MAX_DEFINITION_BYTES, max_fields=10)
        upload = form_file(form, "file", "the bot definition")
        raw = await read_limited(upload, MAX_DEFINITION_BYTES)
    elif kind == "application/json" or kind in YAML_TYPES or not kind:
        raw = await request.body()
    else:
        raise InvalidInput(
            f"unsupported content type {kind!r}; send application/json, application/yaml or "
            "a multipart `file`"
        )
    if len(raw) > MAX_DEFINITION_BYTES:
        raise InvalidInput(f"the bot definition is over {MAX_DEFINITION_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput("the bot definition is not UTF-8 text") from e
    data = read_definition_text(text, document_limits(limits))
    if not isinstance(data, dict):
        parse_definition(data)  # raises with a clear message
    return data


@router.post("", status_code=201, response_model=BotPublic)
async def create_bot(request: Request, principal: TrainDep, gateway: GatewayDep) -> BotPublic:
    """Create a bot from its definition (YAML or JSON; see the README). Inline NLU examples
    (``nlu.intents``) or a ``nlu.dataset`` are trained first: ``status`` is ``training`` until
    the model is ready."""
    data = await read_definition(request, gateway.settings.limits)
    return BotPublic.of(await bots_service.create_bot(gateway, principal.tenant_id, data))


@router.post("/import/rasa", status_code=201, response_model=BotPublic)
async def import_rasa_project(
    request: Request, principal: TrainDep, gateway: GatewayDep
) -> BotPublic:
    """A Rasa 3 project as a bot (multipart: ``name``, ``domain``, ``nlu``, optional ``rules``,
    ``stories``, ``endpoints``). Its NLU trains at once; ``unsupported`` lists what could not
    be imported."""
    form = await read_form(request, limit=8 * MAX_DEFINITION_BYTES, max_files=6, max_fields=10)
    files: dict[str, str | None] = {}
    for field in ("domain", "nlu", "rules", "stories", "endpoints"):
        value = form.get(field)
        if isinstance(value, UploadFile):
            raw = await read_limited(value, 4 * MAX_DEFINITION_BYTES)
        elif isinstance(value, str) and value:
            raw = value.encode()
        else:
            files[field] = None
            continue
        try:
            files[field] = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidInput(f"{field}: the file is not UTF-8 text") from e
    name = form.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("missing form field `name` (the bot's name)")
    if files["domain"] is None:
        raise InvalidInput("missing `domain` (domain.yml)")
    if files["nlu"] is None:
        raise InvalidInput("missing `nlu` (nlu.yml): the bot needs training data")
    result = import_rasa(
        name=name.strip(),
        domain=files["domain"],
        nlu=files["nlu"],
        rules=files["rules"],
        stories=files["stories"],
        endpoints=files["endpoints"],
        limits=document_limits(gateway.settings.limits, bytes_setting=UPLOADS),
    )
    bot = await bots_service.create_bot(
        gateway,
        principal.tenant_id,
        result.definition,
        nlu_yaml=result.nlu_yaml,
        unsupported=result.unsupported,
    )
    return BotPublic.of(bot)


@router.post("/validate", response_model=BotValidation)
async def validate_bot(
    body: BotValidate, principal: TrainDep, gateway: GatewayDep
) -> BotValidation:
    """Check a definition (an object, or YAML/JSON text) as creating or replacing a bot would,
    without saving it: ``errors`` lists each problem with its path (``flows.order.steps[2].if``),
    the paths a 422 from ``PUT /v1/bots/{id}`` gives in ``details``."""
    problems = await bots_service.validate_definition(gateway, principal.tenant_id, body.definition)
    return BotValidation(
        valid=not problems,
        errors=[DefinitionProblem(path=p.path, message=p.message) for p in problems],
    )


@router.get("", response_model=list[BotPublic])
def list_bots(principal: PredictDep, session: SessionDep) -> list[BotPublic]:
    return [BotPublic.of(bot) for bot in bots_service.list_bots(session, principal.tenant_id)]


@router.get("/{bot_id}", response_model=BotPublic)
def get_bot(bot_id: str, principal: PredictDep, session: SessionDep) -> BotPublic:
    return BotPublic.of(service.get_bot(session, principal.tenant_id, bot_id))


@router.put("/{bot_id}", response_model=BotPublic)
async def update_bot(
    bot_id: str, request: Request, principal: TrainDep, gateway: GatewayDep
) -> BotPublic:
    """Replace the definition: a new version (the old ones stay readable)."""
    data = await read_definition(request, gateway.settings.limits)
    return BotPublic.of(await bots_service.update_bot(gateway, principal.tenant_id, bot_id, data))


@router.patch("/{bot_id}", response_model=BotPublic)
def patch_bot(bot_id: str, body: BotPatch, principal: TrainDep, session: SessionDep) -> BotPublic:
    """Enable or disable a bot: a disabled bot answers no channel."""
    bot = bots_service.set_enabled(session, principal.tenant_id, bot_id, body.enabled)
    return BotPublic.of(bot)


@router.get("/{bot_id}/versions", response_model=list[BotVersionPublic])
def list_versions(
    bot_id: str, principal: PredictDep, session: SessionDep
) -> list[BotVersionPublic]:
    return [
        BotVersionPublic(version=v.version, definition=v.definition, created_at=v.created_at)
        for v in bots_service.versions(session, principal.tenant_id, bot_id)
    ]


@router.get("/{bot_id}/versions/{version}", response_model=BotVersionPublic)
def get_version(
    bot_id: str, version: RowNumber, principal: PredictDep, session: SessionDep
) -> BotVersionPublic:
    """One version of the bot's definition."""
    v = bots_service.version(session, principal.tenant_id, bot_id, version)
    return BotVersionPublic(version=v.version, definition=v.definition, created_at=v.created_at)


@router.get("/{bot_id}/diff", response_model=BotDiff)
def diff_versions(
    bot_id: str,
    principal: PredictDep,
    session: SessionDep,
    old: Annotated[
        RowNumber | None,
        Query(alias="from", description="the older version (default: the one before `to`)"),
    ] = None,
    new: Annotated[
        RowNumber | None, Query(alias="to", description="the newer version (default: the latest)")
    ] = None,
) -> BotDiff:
    """The unified diff of two versions' definitions, as YAML; by default the latest change."""
    old, new, diff = bots_service.diff_versions(
        session, principal.tenant_id, bot_id, old=old, new=new
    )
    return BotDiff.model_validate({"from": old, "to": new, "diff": diff})


@router.delete("/{bot_id}", status_code=204, response_class=Response)
def delete_bot(
    bot_id: str, principal: AdminDep, session: SessionDep, gateway: GatewayDep
) -> Response:
    """Delete a bot with its conversations and uploads."""
    bots_service.delete_bot(gateway, session, principal.tenant_id, bot_id)
    return Response(status_code=204)


MAX_STORY_BYTES = 512 * 1024
MAX_STORY_FILES = 20


@router.post("/{bot_id}/test", response_model=StoryTestReport)
async def test_bot(
    bot_id: str, request: Request, principal: TrainDep, gateway: GatewayDep
) -> dict[str, Any]:
    """Run story tests (multipart: ``stories`` = the YAML file, ``files`` = the images it
    names) against the bot with its real NLU, vision and actions; each story is a fresh
    conversation on channel ``test``, forgotten afterwards. ``parley test-bot`` calls this."""
    image_limit = gateway.settings.limits.max_image_bytes
    form = await read_form(
        request,
        limit=MAX_STORY_BYTES + MAX_STORY_FILES * image_limit,
        max_files=MAX_STORY_FILES + 1,
        max_fields=5,
    )
    stories = form_file(form, "stories", "the stories YAML")
    try:
        text = (await read_limited(stories, MAX_STORY_BYTES)).decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput("the stories file is not UTF-8 text") from e
    files = {
        f.filename or "": await read_limited(f, image_limit, setting="max_image_bytes")
        for f in form.getlist("files")
        if isinstance(f, UploadFile)
    }
    cases = load_cases(text, document_limits(gateway.settings.limits, bytes_setting=UPLOADS))
    report = await bots_service.run_story_tests(
        gateway, principal.tenant_id, bot_id, cases, files=files
    )
    return report.to_dict()
