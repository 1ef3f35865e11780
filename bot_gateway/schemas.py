"""The REST API's request and response shapes: ``XCreate`` in, ``XPublic`` out."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat

from core.quotas import QuotaName, RateName
from core.remote_models import BACKEND as REMOTE_BACKEND
from core.settings import Rate
from core.tables import ApiKey, Bot, Dataset, Example, Model
from core.usage import Granularity, Metric
from training.datasets.service import IMPORT_PROBLEMS

MAX_ROW = 2**31 - 1
"""The largest offset or row id the API takes: ids are 32-bit INTEGER columns (PostgreSQL)."""

RowNumber = Annotated[int, Field(ge=0, le=MAX_ROW)]
"""An offset, ``after`` cursor or integer id in a path or query: larger ones answer 422
naming the parameter (they cannot exist, and SQLite/PostgreSQL would overflow on them)."""


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)


class TenantCreated(BaseModel):
    tenant_id: str
    name: str
    api_key: str
    key_id: str


class TenantLimitsUpdate(BaseModel):
    """Operator: quotas and rate-limit overrides to set; ``null`` clears one (see core.quotas)."""

    model_config = ConfigDict(extra="forbid")
    quotas: dict[QuotaName, Annotated[int, Field(ge=0)] | None] = Field(
        default_factory=dict,
        description="predictions_per_month and train_minutes_per_day (429 when used up), "
        "models and storage_bytes (403 when full)",
    )
    rate_limits: dict[RateName, Rate | None] = Field(
        default_factory=dict,
        description="token buckets by class: {per_second, burst}; they replace the server's "
        "PARLEY_RATE_LIMITS__<NAME> for this tenant",
    )


class TenantLimitsPublic(BaseModel):
    tenant_id: str
    name: str
    quotas: dict[str, int]
    rate_limits: dict[str, Rate]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scopes: list[str] = Field(min_length=1)
    name: str = Field(default="", max_length=200)


class KeyPublic(BaseModel):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyPublic:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            scopes=list(key.scopes),
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class KeyCreated(KeyPublic):
    api_key: str = Field(description="the secret; shown once")


class LabelCount(BaseModel):
    name: str
    num_examples: int


class ImportProblem(BaseModel):
    field: str = Field(description="where: `line 17`, or a zip member's name and line")
    line: int | None = None
    message: str


class DatasetPublic(BaseModel):
    id: str
    name: str
    type: str
    status: str
    status_message: str | None
    num_examples: int
    num_labels: int
    num_duplicates: int
    labels: list[LabelCount]
    extras: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    details: list[ImportProblem] = Field(
        default=[], description="a failed import's rows at fault, each with its line"
    )

    @classmethod
    def of(cls, d: Dataset) -> DatasetPublic:
        counts = d.label_counts or {}
        extras = dict(d.extras or {})
        problems = extras.pop(IMPORT_PROBLEMS, [])
        return cls(
            id=d.id,
            name=d.name,
            type=d.type,
            status=d.status,
            status_message=d.status_message,
            num_examples=d.num_examples,
            num_labels=len(counts),
            num_duplicates=d.num_duplicates,
            labels=[LabelCount(name=k, num_examples=v) for k, v in counts.items()],
            extras=extras,
            created_at=d.created_at,
            updated_at=d.updated_at,
            details=[ImportProblem.model_validate(p) for p in problems],
        )


class ExampleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = None
    label: str | None = None
    entities: list[dict[str, Any]] | None = None


class DatasetCreate(BaseModel):
    """JSON alternative to the multipart upload."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    type: str
    examples: list[ExampleIn]


class ExamplePublic(BaseModel):
    id: int
    text: str | None
    label: str | None
    labels: list[str] | None
    entities: list[dict[str, Any]] | None
    line: int | None
    boxes: list[dict[str, Any]] | None = Field(default=None, description="detection examples")
    image_url: str | None = Field(default=None, description="image examples: the image itself")
    width: int | None = None
    height: int | None = None
    file: str | None = Field(default=None, description="the name the image was uploaded under")
    source: str = Field(default="import", description="import, api or feedback")

    @classmethod
    def of(cls, ex: Example) -> ExamplePublic:
        image = ex.blob_key is not None
        return cls(
            id=ex.id,
            text=ex.text,
            label=ex.label,
            labels=ex.labels,
            entities=None if image else ex.annotations,
            boxes=ex.annotations if image else None,
            line=ex.line,
            image_url=f"/v1/datasets/{ex.dataset_id}/examples/{ex.id}/image" if image else None,
            width=ex.width,
            height=ex.height,
            file=ex.file,
            source=ex.source or "import",
        )


class ExampleUpdate(BaseModel):
    """Fields of one example to change (the others stay): ``text``, ``label`` (and
    ``entities``) for text; ``label``, ``labels`` or ``boxes`` for images, by dataset type."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = None
    label: str | None = None
    entities: list[dict[str, Any]] | None = None
    labels: list[str] | None = None
    boxes: list[dict[str, Any]] | None = None


class ExamplePage(BaseModel):
    total: int
    offset: int
    limit: int
    examples: list[ExamplePublic]


class ExamplesAdded(BaseModel):
    added: int
    duplicates: int
    dataset: DatasetPublic


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset_id: str
    name: str | None = Field(default=None, max_length=200)
    backend: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    alias: str | None = Field(
        default=None, description="point this alias at the model once it succeeds"
    )


class RemoteModelCreate(BaseModel):
    """A model served by the tenant's own Open Inference Protocol (KServe V2) server."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "intents on our MLServer",
                    "task": "text-intent",
                    "url": "https://models.example.com",
                    "model_name": "intents",
                    "labels": ["bye", "greet", "track_order"],
                    "headers": {"Authorization": "Bearer <token>"},
                }
            ]
        },
    )
    name: str = Field(min_length=1, max_length=200)
    task: str = Field(
        description="text-intent (or intent) or image (or image-classification)",
        max_length=50,
    )
    url: str = Field(
        max_length=2000, description="the server's base URL; Parley calls {url}/v2/models/..."
    )
    model_name: str = Field(min_length=1, max_length=200, description="the model's V2 name")
    labels: list[str] | None = Field(
        default=None,
        description="the label of each score column, in the model's order; default: "
        "parameters.labels of the model's metadata (needed unless it answers labels)",
    )
    headers: dict[str, str] | None = Field(
        default=None,
        description="sent with every call (e.g. Authorization); stored encrypted, never shown",
    )


class RemotePublic(BaseModel):
    """Where a remote model runs (header values are never shown)."""

    protocol: str = Field(description="v2: the Open Inference Protocol (KServe V2)")
    url: str
    model_name: str
    headers: list[str] = Field(description="the names of the headers sent with every call")


class ModelPublic(BaseModel):
    id: str
    dataset_id: str
    name: str
    backend: str
    backend_version: str | None
    task: str
    params: dict[str, Any]
    status: str
    progress: float
    queue_position: int | None
    failure_message: str | None
    labels: list[str] | None
    metrics: dict[str, Any] | None
    dataset_hash: str | None
    artifact_sha256: str | None
    alias: str | None = Field(description="alias the model takes when it succeeds")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    remote: RemotePublic | None = Field(
        default=None, description="models served elsewhere (POST /v1/models/remote)"
    )

    @classmethod
    def of(cls, m: Model, queue_position: int | None) -> ModelPublic:
        params, remote = m.params or {}, None
        if m.backend == REMOTE_BACKEND:  # header values are secrets: their names only
            params = {k: v for k, v in params.items() if k != "headers"}
            remote = RemotePublic(
                protocol=params.get("protocol", "v2"),
                url=params["url"],
                model_name=params["model_name"],
                headers=sorted(m.params.get("headers") or {}),
            )
        return cls(
            remote=remote,
            id=m.id,
            dataset_id=m.dataset_id,
            name=m.name,
            backend=m.backend,
            backend_version=m.backend_version,
            task=m.task,
            params=params,
            status=m.status,
            progress=m.progress,
            queue_position=queue_position,
            failure_message=m.failure_message,
            labels=m.labels,
            metrics=m.metrics,
            dataset_hash=m.dataset_hash,
            artifact_sha256=m.artifact_sha256,
            alias=m.promote_alias,
            created_at=m.created_at,
            started_at=m.started_at,
            finished_at=m.finished_at,
        )


class ModelUpdate(BaseModel):
    """What a trained model lets you change without retraining."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"out_of_scope_threshold": 0.42}, {"out_of_scope_threshold": None}]
        },
    )
    # strict: JSON true is not a threshold of 1 (it would turn every message away)
    out_of_scope_threshold: StrictFloat | None = Field(
        ge=0,
        le=1,
        description="intent models: below this top confidence a message is out_of_scope "
        "(0: never); null restores the calibrated threshold. metrics.out_of_scope.curve shows "
        "the trade-off",
    )


class LearningCurvePoint(BaseModel):
    epoch: int
    train_loss: float
    validation_accuracy: float | None
    validation_macro_f1: float | None
    validation_entity_f1: float | None = None
    validation_map50: float | None = None


class LearningCurve(BaseModel):
    model_id: str
    points: list[LearningCurvePoint]


class HeldOutExamplePublic(BaseModel):
    """A held-out example and what the model predicted for it; ``text`` and ``image_url``
    are null for an example deleted from the dataset since."""

    example_id: int
    text: str | None
    label: str
    predicted: str
    confidence: float
    image_url: str | None = None


class HeldOutPage(BaseModel):
    total: int
    offset: int
    limit: int
    examples: list[HeldOutExamplePublic]


class AliasSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_id: str


class AliasPublic(BaseModel):
    name: str
    model_id: str
    updated_at: datetime


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = None
    texts: list[str] | None = None
    image: str | None = Field(default=None, description="image models: one image, base64")
    images: list[str] | None = Field(default=None, description="image models: base64 images")
    url: str | None = Field(
        default=None, description="image models: an image URL (only if the operator allows)"
    )
    urls: list[str] | None = None
    num_results: int = Field(default=5, ge=1, le=1000)
    entity_labels: list[str] | None = Field(
        default=None,
        description="entity and joint models: return only entities of these types "
        "(each must be a type the model knows)",
    )
    engine: str | None = Field(
        default=None,
        description="prebuilt-ocr: auto (the default: each line read by the engine that reads "
        "it best), rapidocr or tesseract",
    )
    task: str | None = Field(default=None, description="prebuilt-ocr: `contact` adds entities")
    min_score: float | None = Field(
        default=None, ge=0, le=1, description="detection models: the lowest box probability"
    )

    def image_count(self) -> int:
        return sum(
            len(v) if isinstance(v, list) else 1
            for v in (self.image, self.images, self.url, self.urls)
            if v is not None
        )


class Prediction(BaseModel):
    label: str
    probability: float


class EntityPublic(BaseModel):
    entity: str
    value: str
    start: int
    end: int
    confidence: float
    extractor: str


class BoxPublic(BaseModel):
    x_min: float
    y_min: float
    x_max: float
    y_max: float


class ImagePrediction(BaseModel):
    label: str
    probability: float
    box: BoxPublic | None = Field(default=None, description="detection: in input pixels")


class ImageInfo(BaseModel):
    width: int
    height: int
    sha256: str


class OcrLinePublic(BaseModel):
    text: str
    confidence: float
    box: BoxPublic
    engine: str | None = Field(
        default=None, description="the engine that read this line (rapidocr or tesseract)"
    )


class ImageResult(BaseModel):
    image: ImageInfo
    probabilities: list[ImagePrediction] | None = Field(
        default=None, description="classification: labels, most probable first; detection: boxes"
    )
    labels: list[str] | None = Field(
        default=None, description="multi-label: the labels over their tuned thresholds"
    )
    text: str | None = Field(default=None, description="OCR: the lines joined by newlines")
    lines: list[OcrLinePublic] | None = Field(default=None, description="OCR: in reading order")
    engine: str | None = None
    entities: list[EntityPublic] | None = Field(
        default=None, description="OCR with task=contact: entities found in `text`"
    )


class PredictResponse(BaseModel):
    model_id: str
    predictions: list[Prediction] | list[list[Prediction]] | None = Field(
        default=None, description="classification models: labels, most probable first"
    )
    entities: list[EntityPublic] | list[list[EntityPublic]] | None = Field(
        default=None, description="entity models: spans with character offsets"
    )
    out_of_scope: bool | list[bool] | None = Field(
        default=None,
        description="intent models: the input matches no intent (explicit out_of_scope label, "
        "or top probability under the model's calibrated threshold); then the top prediction "
        "is out_of_scope",
    )
    label: str | list[str] | None = Field(
        default=None,
        description="prebuilt-sentiment: positive, neutral or negative (one per text for `texts`)",
    )
    score: float | list[float] | None = Field(
        default=None, description="prebuilt-sentiment: the confidence in `label`, 0 to 1"
    )
    image: ImageInfo | None = Field(default=None, description="one image sent: its size")
    probabilities: list[ImagePrediction] | None = None
    labels: list[str] | None = None
    text: str | None = None
    lines: list[OcrLinePublic] | None = None
    engine: str | None = None
    results: list[ImageResult] | None = Field(
        default=None, description="several images sent: one result each, in order"
    )


class ParseRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # Rasa clients may send message_id and more
    text: str
    entity_labels: list[str] | None = None


class IntentPublic(BaseModel):
    name: str
    confidence: float


class ParseResponse(BaseModel):
    """Rasa's ``/model/parse`` shape."""

    text: str
    intent: IntentPublic
    intent_ranking: list[IntentPublic]
    entities: list[EntityPublic]
    out_of_scope: bool
    model_id: str


# --- bots and conversations -------------------------------------------------------------------


class BotPublic(BaseModel):
    id: str
    name: str
    version: int
    status: str = Field(description="training (its NLU), ready, or failed")
    status_message: str | None
    enabled: bool
    nlu_model_id: str | None
    widget_key: str = Field(description="public key of the web chat widget (this bot only)")
    allowed_origins: list[str]
    unsupported: list[str] | None = Field(
        default=None, description="Rasa import: what could not be imported"
    )
    definition: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, bot: Bot) -> BotPublic:
        return cls(
            id=bot.id,
            name=bot.name,
            version=bot.version,
            status=bot.status,
            status_message=bot.status_message,
            enabled=bot.enabled,
            nlu_model_id=bot.nlu_model_id,
            widget_key=bot.widget_key,
            allowed_origins=list(bot.definition.get("allowed_origins") or []),
            unsupported=bot.unsupported,
            definition=bot.definition,
            created_at=bot.created_at,
            updated_at=bot.updated_at,
        )


class BotPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool


class BotVersionPublic(BaseModel):
    version: int
    definition: dict[str, Any]
    created_at: datetime


class BotValidate(BaseModel):
    """A bot definition to check without saving it: an object, or YAML/JSON text."""

    model_config = ConfigDict(extra="forbid")
    definition: dict[str, Any] | str


class DefinitionProblem(BaseModel):
    path: str = Field(description="where, e.g. flows.order.steps[2].if; (top): the whole")
    message: str


class BotValidation(BaseModel):
    valid: bool
    errors: list[DefinitionProblem]


class BotDiff(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: int = Field(alias="from")
    to: int
    diff: str = Field(description="unified diff of the two versions' YAML; empty if the same")


class ConversationPublic(BaseModel):
    id: str
    bot_id: str
    channel: str
    sender_id: str
    status: str = Field(
        description="bot; waiting_for_agent after a handoff; with_agent once an agent claims "
        "it; closed by an agent (the next message starts a new session with the bot)"
    )
    slots: dict[str, Any]
    active_flows: list[str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: Any) -> ConversationPublic:
        return cls(
            id=record.id,
            bot_id=record.bot_id,
            channel=record.channel,
            sender_id=record.sender_id,
            status=record.status,
            slots=record.state.get("slots") or {},
            active_flows=[f["flow"] for f in record.state.get("stack") or []],
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


class ConversationPage(BaseModel):
    items: list[ConversationPublic]
    total: int
    limit: int
    offset: int


class ConversationDetail(ConversationPublic):
    events: list[dict[str, Any]]


class ConversationTurn(BaseModel):
    conversation_id: str
    status: str
    messages: list[dict[str, Any]]


class UploadPublic(BaseModel):
    upload_id: str
    url: str
    media_type: str
    width: int
    height: int
    public_url: str | None = Field(default=None, description="agents' images only")


class UsageEntryPublic(BaseModel):
    """One metric of one hour or day; the dimension split into its parts."""

    start: datetime = Field(description="the hour or day (UTC) the entry covers")
    metric: Metric
    value: float = Field(description="a count; seconds for train_seconds")
    model_id: str | None = Field(default=None, description="predictions")
    kind: str | None = Field(
        default=None, description="predictions: intent, entities, image, detect or builtin"
    )
    device: str | None = Field(default=None, description="train_seconds: cpu or cuda")
    channel: str | None = Field(
        default=None, description="conversations, messages: webchat, rest, test or a channel id"
    )


class UsagePublic(BaseModel):
    tenant_id: str
    start: datetime = Field(alias="from", description="the first hour or day included")
    end: datetime = Field(alias="to", description="the end of the range (exclusive)")
    granularity: Granularity
    entries: list[UsageEntryPublic]
    totals: dict[str, float] = Field(description="per metric, over the range")
    storage_bytes: int = Field(description="stored datasets, models and uploads, now")

    model_config = ConfigDict(populate_by_name=True)


# --- the agents' service console (/v1/agent) ----------------------------------------------------


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: str = Field(min_length=1, max_length=200)
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=500)


class AgentPublic(BaseModel):
    id: str
    username: str
    name: str
    role: str = Field(description="agent, supervisor or admin (an admin supervises too)")
    tenant_id: str

    @classmethod
    def of(cls, agent: Any) -> AgentPublic:
        return cls(
            id=agent.id,
            username=agent.username,
            name=agent.name,
            role=agent.role,
            tenant_id=agent.tenant_id,
        )


class AgentSessionPublic(BaseModel):
    """The agent a session cookie belongs to (login, ``/me``)."""

    agent: AgentPublic
    csrf_token: str = Field(description="send it in X-CSRF-Token on every write")


UserRole = Literal["admin", "builder", "agent", "supervisor"]


class StudioUser(BaseModel):
    id: str
    username: str
    name: str
    role: UserRole
    tenant_id: str
    tenant_name: str

    @classmethod
    def of(cls, user: Any) -> StudioUser:
        return cls(
            id=user.id,
            username=user.username,
            name=user.name,
            role=user.role,
            tenant_id=user.tenant_id,
            tenant_name=user.tenant_name,
        )


class StudioSession(BaseModel):
    """The signed-in user of a session cookie (login, ``/v1/auth/me``, accepting an invite)."""

    user: StudioUser
    scopes: list[str] = Field(description="what the session may do on /v1 (admin holds all)")
    csrf_token: str = Field(description="send it in X-CSRF-Token on every write")


class AcceptInvite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=8, max_length=500)
    name: str | None = Field(default=None, max_length=200)


class UserPublic(BaseModel):
    id: str
    username: str
    name: str
    role: UserRole
    created_at: datetime
    disabled: bool

    @classmethod
    def of(cls, user: Any) -> UserPublic:
        return cls(
            id=user.id,
            username=user.username,
            name=user.name,
            role=user.role,
            created_at=user.created_at,
            disabled=user.disabled_at is not None,
        )


class UserList(BaseModel):
    users: list[UserPublic]


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: UserRole | None = None
    disabled: bool | None = Field(default=None, description="true ends the user's sessions")


class InviteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=100)
    name: str | None = Field(default=None, max_length=200)
    role: UserRole


class InvitePublic(BaseModel):
    id: str
    username: str
    name: str | None
    role: UserRole
    expires_at: datetime

    @classmethod
    def of(cls, invite: Any) -> InvitePublic:
        return cls(
            id=invite.id,
            username=invite.username,
            name=invite.name,
            role=invite.role,
            expires_at=invite.expires_at,
        )


class InviteCreated(BaseModel):
    invite: InvitePublic
    token: str = Field(description="the invite link's secret; shown once")
    url: str = Field(description="the link to give the new user: /studio/accept-invite?token=...")


class InviteList(BaseModel):
    invites: list[InvitePublic] = Field(description="pending invites (not accepted, not expired)")


class AgentInboxItem(BaseModel):
    """A handed-off conversation as the console lists it."""

    id: str
    bot_id: str
    bot_name: str | None
    channel: str = Field(description="webchat, rest, or the channel's type (slack, telegram...)")
    sender_id: str
    customer_name: Any = Field(description="the name the channel gives, when it gives one")
    status: str
    handoff_reason: str | None
    sentiment: str | None = Field(
        default=None,
        description="the sentiment of the customer's last typed message: positive, neutral "
        "or negative (prebuilt-sentiment)",
    )
    waiting_since: float | None = Field(description="Unix time of the handoff")
    assigned_agent_id: str | None
    assigned_agent_name: str | None
    last_message: str | None


class AgentInbox(BaseModel):
    waiting: list[AgentInboxItem] = Field(description="waiting for an agent, oldest first")
    mine: list[AgentInboxItem] = Field(description="held by the calling agent")
    others: list[AgentInboxItem] | None = Field(
        default=None, description="held by other agents (supervisors only; absent otherwise)"
    )


class AgentAttachment(BaseModel):
    upload_id: str | None
    url: str


class AgentSentiment(BaseModel):
    label: str = Field(description="positive, neutral or negative")
    score: float = Field(description="the confidence in the label, 0 to 1")


class AgentTurn(BaseModel):
    """A transcript line; keys that do not apply are absent."""

    model_config = ConfigDict(populate_by_name=True)
    id: int | None = None
    timestamp: float | None = None
    from_: str = Field(alias="from", description="customer, bot, agent, note or system")
    text: str | None = None
    attachments: list[AgentAttachment] | None = None
    buttons: list[dict[str, Any]] | None = None
    quick_replies: list[dict[str, Any]] | None = None
    image: Any = Field(default=None, description="the image's URL")
    cards: list[dict[str, Any]] | None = None
    agent_name: str | None = None
    sentiment: AgentSentiment | None = Field(
        default=None, description="customer lines: the text's sentiment (prebuilt-sentiment)"
    )


class AgentLastParse(BaseModel):
    intent: dict[str, Any] | None
    entities: list[dict[str, Any]]


class AgentConversation(BaseModel):
    conversation: AgentInboxItem
    slots: dict[str, Any]
    last_parse: AgentLastParse | None = Field(description="the last customer message the bot read")
    transcript: list[AgentTurn]


class AgentMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(default="", max_length=4000)
    quick_replies: list[dict[str, str]] = Field(default=[], max_length=10)


class AgentMessageSent(BaseModel):
    turn: AgentTurn
    delivered: bool = Field(description="false when the channel refused the message")


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=4000)


class AgentNoteAdded(BaseModel):
    turn: AgentTurn | None


class Handback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reset_flow: bool = False


class Assign(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent_id: str


class AgentLoad(BaseModel):
    """An agent of the tenant and the number of conversations they hold."""

    id: str
    username: str
    name: str
    role: str
    claimed: int


# --- story tests and the system routes ----------------------------------------------------------


class StoryCasePublic(BaseModel):
    name: str
    passed: bool
    failures: list[str] = Field(description="what the bot did differently, one line each")
    transcript: list[str]


class StoryTestReport(BaseModel):
    passed: int = Field(description="stories that passed")
    failed: int = Field(description="stories that failed")
    cases: list[StoryCasePublic]


class Health(BaseModel):
    status: str = Field(description="ok")
    models_loaded: int = Field(description="models in the serving cache")


class BackendPublic(BaseModel):
    name: str
    version: str
    task: str
    params: dict[str, Any] = Field(description="the training parameters' JSON schemas, by name")


class BuiltinModelPublic(BaseModel):
    name: str
    task: str
    backend: str
    description: str


class DatasetTypePublic(BaseModel):
    name: str
    task: str
    description: str


class BackendsPublic(BaseModel):
    backends: list[BackendPublic]
    builtin_models: list[BuiltinModelPublic]
    dataset_types: list[DatasetTypePublic]


class RestReply(BaseModel):
    """A bot message in Rasa's REST channel shape; parts the message lacks are absent."""

    model_config = ConfigDict(extra="allow")  # what a message carries beyond these, as sent
    recipient_id: str
    text: str | None = None
    buttons: list[dict[str, Any]] | None = Field(default=None, description="quick replies too")
    image: str | None = Field(default=None, description="the image's URL")
    cards: list[dict[str, Any]] | None = None
    custom: Any = Field(default=None, description="a custom payload, as the bot defines it")


# --- analytics and the improve inbox ---------------------------------------------------------


class AnalyticsCounts(BaseModel):
    conversations: int
    messages: int = Field(description="customers' messages")
    contained: int = Field(description="conversations never handed to a person")
    handoffs: int = Field(description="conversations handed to a person")
    fallbacks: int = Field(description="messages the bot did not understand")
    bot_messages: int
    agent_messages: int
    containment_rate: float | None = Field(description="contained / conversations")
    handoff_rate: float | None = Field(description="handoffs / conversations")
    fallback_rate: float | None = Field(description="fallbacks / messages")


class AnalyticsTotals(AnalyticsCounts):
    average_confidence: float | None = Field(
        description="mean NLU confidence of the customers' typed messages"
    )


class AnalyticsPeriod(AnalyticsCounts):
    period: str = Field(description="start of the period: 2026-11-30, or 2026-11-30T14:00:00Z")


class IntentCount(BaseModel):
    intent: str
    count: int


class ChannelAnalytics(AnalyticsCounts):
    channel: str


class AnalyticsPublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    bot_id: str | None
    start: str = Field(alias="from", description="first instant counted (UTC)")
    end: str = Field(alias="to", description="end of the window, excluded (UTC)")
    timezone: str = "UTC"
    granularity: str
    totals: AnalyticsTotals
    series: list[AnalyticsPeriod]
    top_intents: list[IntentCount]
    channels: list[ChannelAnalytics]


MAX_IMPROVE_ITEMS = 500
ItemIds = Annotated[list[RowNumber], Field(min_length=1, max_length=MAX_IMPROVE_ITEMS)]
"""The items one label or dismiss call takes."""


class ImproveItemPublic(BaseModel):
    id: int = Field(description="the customer message's event id")
    text: str
    reason: Literal["fallback", "low_confidence", "corrected"]
    intent: str | None = Field(description="what NLU made of it; for labelled items, the label")
    confidence: float | None
    conversation_id: str
    channel: str
    at: datetime
    status: Literal["open", "labelled", "dismissed"]

    model_config = ConfigDict(from_attributes=True)


class ImproveGroup(BaseModel):
    id: str
    size: int
    suggested_intent: str | None = Field(description="the intent NLU gave most of its messages")
    items: list[ImproveItemPublic]


class ImproveInbox(BaseModel):
    bot_id: str
    model_id: str
    dataset_id: str
    alias: str | None = Field(description="the alias the bot's NLU follows, if any")
    intents: list[str] = Field(description="the intents an item can be labelled with")
    low_confidence_below: float = Field(
        description="messages understood with a confidence under this are low_confidence items"
    )
    groups: list[ImproveGroup]


class ImproveLabel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_ids: ItemIds
    intent: str | None = Field(default=None, min_length=1, max_length=200)
    out_of_scope: bool = False


class ImproveLabelled(BaseModel):
    added: int = Field(description="feedback examples added (a text already there is not)")
    labelled: int
    dataset_id: str


class ImproveDismiss(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_ids: ItemIds


class ImproveDismissed(BaseModel):
    dismissed: int
