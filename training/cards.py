"""Model cards: what a model is, what it was trained on, how well it did and where it is weak.

``model_card`` reads one model row (and its dataset, when it still exists) into a typed
``ModelCard``; ``render_markdown`` writes it in the Hugging Face model-card layout: YAML front
matter (``library_name``, ``tags``, ``pipeline_tag``, ``model-index`` with the held-out
metrics), then ``# name``, ``## Model details``, ``## Intended uses & limitations``,
``## Training data``, ``## Training procedure``, ``## Evaluation results``, ``## How to use``.

Every number comes from the model row: ``metrics`` (held-out evaluation, as
``GET /v1/models/{id}`` returns it), ``learning_curve``, ``started_at`` / ``finished_at``; the
dataset's example and label counts from its row. A card is written for succeeded models only
(``NotReady`` otherwise). Remote models (served by the tenant's own server) and built-in ones
(``builtin_card``) get a card with what Parley knows of them: no dataset, no metrics, and never
a remote model's header values (secrets).
"""

from __future__ import annotations

import json
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from core.backends import builtin_models
from core.errors import NotReady
from core.evaluation import OUT_OF_SCOPE
from core.remote_models import BACKEND as REMOTE_BACKEND
from core.tables import Dataset, Model

__all__ = [
    "FEW_EXAMPLES",
    "WEAKEST_LABELS",
    "DatasetInfo",
    "LabelMetrics",
    "ModelCard",
    "OutOfScopeInfo",
    "TrainingInfo",
    "builtin_card",
    "card_json",
    "model_card",
    "parley_version",
    "render_markdown",
]

FEW_EXAMPLES = 10
"""A label with fewer examples than this in the dataset is named as a limitation."""

WEAKEST_LABELS = 3
"""How many of the lowest-F1 labels the limitations name."""

# The Hugging Face pipeline tag of each Parley task (tasks without one get none).
PIPELINE_TAGS = {
    "intent": "text-classification",
    "entities": "token-classification",
    "image-classification": "image-classification",
    "image-multi-label": "image-classification",
    "object-detection": "object-detection",
    "ocr": "image-to-text",
}

# The headline metrics a card reports, in this order, when the model's metrics have them.
HEADLINE = ("accuracy", "macro_f1", "micro_f1", "map", "map50", "exact_match", "cer", "wer")

# Keys of ``Model.params`` that are secrets (remote models' request headers): never shown.
SECRET_PARAMS = ("headers",)


def parley_version() -> str:
    """The installed Parley version (``unknown`` when run from a tree that is not installed)."""
    try:
        return version("parley")
    except PackageNotFoundError:
        return "unknown"


class DatasetInfo(BaseModel):
    """The dataset a model was trained on, as it is now (``content_hash`` tells whether it
    changed since: compare with ``ModelCard.dataset_hash``)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str | None = Field(description="None when the dataset was deleted since")
    type: str | None
    num_examples: int | None
    label_counts: dict[str, int]
    content_hash: str | None


class LabelMetrics(BaseModel):
    """One label's (or entity type's) held-out scores."""

    model_config = ConfigDict(frozen=True)

    label: str
    precision: float | None
    recall: float | None
    f1: float | None
    support: int | None
    examples: int | None = Field(description="examples of the label in the dataset")


class OutOfScopeInfo(BaseModel):
    """An intent model's out-of-scope threshold: below it, a prediction is ``out_of_scope``."""

    model_config = ConfigDict(frozen=True)

    threshold: float | None
    method: str | None
    in_scope_accuracy: float | None = None
    out_of_scope_recall: float | None = None
    in_scope_flagged: float | None = None


class TrainingInfo(BaseModel):
    """When and where the model was trained."""

    model_config = ConfigDict(frozen=True)

    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    device: str | None = Field(description="cpu, cuda, …; None when the job did not record it")
    worker: str | None
    epochs: int | None
    train_examples: int | None
    held_out_examples: int | None
    refit_on_all: bool | None


class ModelCard(BaseModel):
    """Everything a model card says, as data (``GET /v1/models/{id}/card`` with
    ``Accept: application/json``)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    task: str
    pipeline_tag: str | None
    backend: str
    backend_version: str | None
    params: dict[str, Any]
    remote: bool = Field(description="served by the tenant's own model server")
    builtin: bool = Field(default=False, description="a built-in model (``prebuilt-*``)")
    labels: list[str]
    dataset: DatasetInfo | None
    dataset_hash: str | None
    artifact_sha256: str | None
    training: TrainingInfo
    metrics: dict[str, float] = Field(description="headline held-out metrics")
    per_label: list[LabelMetrics]
    out_of_scope: OutOfScopeInfo | None
    limitations: list[str]
    parley_version: str


def model_card(session: Session, model: Model) -> ModelCard:
    """The card of a succeeded model (``NotReady`` for any other status). The caller has
    already checked the model is the tenant's."""
    if model.status != "succeeded":
        raise NotReady(
            f"model {model.id} is {model.status}; its model card comes when it succeeds",
            status=model.status,
        )
    remote = model.backend == REMOTE_BACKEND
    metrics: dict[str, Any] = dict(model.metrics or {})
    dataset = _dataset_info(session, model) if not remote else None
    counts = dataset.label_counts if dataset is not None else {}
    per_label = _per_label(metrics, counts)
    oos = metrics.get("out_of_scope")
    out_of_scope = (
        OutOfScopeInfo(
            threshold=oos.get("threshold"),
            method=oos.get("method"),
            in_scope_accuracy=oos.get("in_scope_accuracy"),
            out_of_scope_recall=oos.get("out_of_scope_recall"),
            in_scope_flagged=oos.get("in_scope_flagged"),
        )
        if isinstance(oos, dict)
        else None
    )
    training = _training_info(model, metrics)
    card = ModelCard(
        id=model.id,
        name=model.name,
        task=model.task,
        pipeline_tag=PIPELINE_TAGS.get(model.task),
        backend=model.backend,
        backend_version=model.backend_version,
        params={k: v for k, v in (model.params or {}).items() if k not in SECRET_PARAMS},
        remote=remote,
        labels=[str(x) for x in model.labels or []],
        dataset=dataset,
        dataset_hash=model.dataset_hash,
        artifact_sha256=model.artifact_sha256,
        training=training,
        metrics=_headline(metrics),
        per_label=per_label,
        out_of_scope=out_of_scope,
        limitations=[],
        parley_version=parley_version(),
    )
    return card.model_copy(update={"limitations": _limitations(card)})


def builtin_card(name: str) -> ModelCard:
    """The card of a built-in model (``prebuilt-entities``, …): what Parley knows of it (no
    dataset, no evaluation); ``UnknownPluginError`` for a name that is not built in."""
    builtin = builtin_models.get(name)
    card = ModelCard(
        id=builtin.name,
        name=builtin.description,
        task=builtin.task,
        pipeline_tag=PIPELINE_TAGS.get(builtin.task),
        backend=builtin.backend,
        backend_version=None,
        params={},
        remote=False,
        builtin=True,
        labels=[],
        dataset=None,
        dataset_hash=None,
        artifact_sha256=None,
        training=TrainingInfo(
            created_at=None,
            started_at=None,
            finished_at=None,
            duration_seconds=None,
            device=None,
            worker=None,
            epochs=None,
            train_examples=None,
            held_out_examples=None,
            refit_on_all=None,
        ),
        metrics={},
        per_label=[],
        out_of_scope=None,
        limitations=[],
        parley_version=parley_version(),
    )
    return card.model_copy(update={"limitations": _limitations(card)})


def card_json(card: ModelCard) -> str:
    """The card as JSON text (what the API returns and MLflow stores as ``model_card.json``)."""
    return card.model_dump_json(indent=2)


def _dataset_info(session: Session, model: Model) -> DatasetInfo:
    dataset = session.get(Dataset, model.dataset_id)
    if dataset is None or dataset.tenant_id != model.tenant_id:  # deleted since training
        return DatasetInfo(
            id=model.dataset_id,
            name=None,
            type=None,
            num_examples=None,
            label_counts={},
            content_hash=None,
        )
    return DatasetInfo(
        id=dataset.id,
        name=dataset.name,
        type=dataset.type,
        num_examples=dataset.num_examples,
        label_counts={str(k): int(v) for k, v in (dataset.label_counts or {}).items()},
        content_hash=dataset.content_hash,
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _headline(metrics: dict[str, Any]) -> dict[str, float]:
    found = {k: _number(metrics.get(k)) for k in HEADLINE}
    entities = metrics.get("micro") if "per_entity" in metrics else None
    if isinstance(entities, dict):  # an entity model: micro-averaged exact spans
        for k in ("precision", "recall", "f1"):
            found[f"micro_{k}"] = _number(entities.get(k))
    joint = metrics.get("entities")
    if isinstance(joint, dict) and isinstance(joint.get("micro"), dict):  # intent + entities
        found["entity_micro_f1"] = _number(joint["micro"].get("f1"))
    return {k: v for k, v in found.items() if v is not None}


def _per_label(metrics: dict[str, Any], counts: dict[str, int]) -> list[LabelMetrics]:
    table = metrics.get("per_label") or metrics.get("per_entity") or {}
    if not isinstance(table, dict):
        return []
    return [
        LabelMetrics(
            label=str(label),
            precision=_number(row.get("precision")),
            recall=_number(row.get("recall")),
            f1=_number(row.get("f1")),
            support=int(row["support"]) if isinstance(row.get("support"), int) else None,
            examples=counts.get(str(label)),
        )
        for label, row in table.items()
        if isinstance(row, dict)
    ]


def _training_info(model: Model, metrics: dict[str, Any]) -> TrainingInfo:
    duration = None
    if model.started_at is not None and model.finished_at is not None:
        duration = round((model.finished_at - model.started_at).total_seconds(), 3)
    evaluated = metrics.get("num_evaluated")
    train_examples = metrics.get("train_examples")
    device = metrics.get("device")
    return TrainingInfo(
        created_at=model.created_at,
        started_at=model.started_at,
        finished_at=model.finished_at,
        duration_seconds=duration,
        device=device if isinstance(device, str) else None,
        worker=model.worker,
        epochs=len(model.learning_curve) if model.learning_curve else None,
        train_examples=train_examples if isinstance(train_examples, int) else None,
        held_out_examples=evaluated if isinstance(evaluated, int) else None,
        refit_on_all=metrics.get("refit_on_all") if "refit_on_all" in metrics else None,
    )


def _limitations(card: ModelCard) -> list[str]:
    notes: list[str] = []
    if card.builtin:
        notes.append(
            "A built-in model shipped with Parley, the same for every tenant: not trained on "
            "your data, and Parley holds no evaluation of it on your messages."
        )
        return notes
    if card.remote:
        notes.append(
            "Served by the tenant's own model server: Parley did not train it and holds no "
            "evaluation of it; its quality is what that server's owner measured."
        )
        return notes
    few = sorted(
        (label, n)
        for label, n in (card.dataset.label_counts if card.dataset else {}).items()
        if n < FEW_EXAMPLES
    )
    if few:
        notes.append(
            f"Labels with fewer than {FEW_EXAMPLES} examples (expect weak predictions): "
            + ", ".join(f"{label} ({n})" for label, n in few)
            + "."
        )
    scored = [row for row in card.per_label if row.f1 is not None and (row.support or 0) > 0]
    if scored:
        weakest = sorted(scored, key=lambda row: (row.f1 or 0.0, row.label))[:WEAKEST_LABELS]
        notes.append(
            "Weakest labels by held-out F1: "
            + ", ".join(f"{row.label} ({row.f1:.3f})" for row in weakest)
            + "."
        )
    held = card.training.held_out_examples
    if held is None:
        notes.append(
            "No held-out evaluation: the model was trained on every example (too few to split), "
            "so its accuracy on new messages is unknown."
        )
    elif held < 50:
        notes.append(
            f"The held-out split has only {held} examples: the metrics below are rough "
            "estimates; add examples for firmer numbers."
        )
    if card.task == "intent":
        if card.out_of_scope is not None and card.out_of_scope.threshold:
            notes.append(
                f"Predictions with confidence below {card.out_of_scope.threshold:.3f} are "
                f"returned as `{OUT_OF_SCOPE}`; messages unlike every training example may "
                "still get a confident in-scope label."
            )
        else:
            notes.append(
                "No out-of-scope threshold: every message gets one of the trained labels, "
                "however unlike the training examples it is."
            )
    return notes


def _cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell (labels may hold ``|``)."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _front_matter(card: ModelCard) -> dict[str, Any]:
    tags = ["parley", card.task, card.backend]
    matter: dict[str, Any] = {"library_name": "parley", "tags": tags}
    if card.pipeline_tag:
        matter["pipeline_tag"] = card.pipeline_tag
    if card.dataset is not None and card.dataset.name:
        matter["datasets"] = [card.dataset.name]
    if card.metrics:
        task: dict[str, Any] = {"type": card.pipeline_tag or card.task}
        result: dict[str, Any] = {
            "task": task,
            "metrics": [
                {"type": name, "value": value, "name": name.replace("_", " ")}
                for name, value in card.metrics.items()
            ],
        }
        if card.dataset is not None:
            result["dataset"] = {
                "type": card.dataset.type or "parley-dataset",
                "name": card.dataset.name or card.dataset.id,
                "split": "held-out",
            }
        matter["model-index"] = [{"name": card.name, "results": [result]}]
    return matter


def _article(word: str) -> str:
    return "An" if word[:1].lower() in "aeiou" else "A"


def _curl(card: ModelCard, base_url: str) -> str:
    head = (
        f"curl -s -X POST {base_url}/v1/models/{card.id}/predict \\\n"
        '  -H "Authorization: Bearer $PARLEY_API_KEY" -H "Content-Type: application/json" \\\n'
    )
    if card.task in ("intent", "entities"):
        return head + "  -d '" + json.dumps({"texts": ["hello"]}) + "'"
    return head + '  -d "{\\"image\\": \\"$(base64 -w0 photo.jpg)\\"}"'


def render_markdown(card: ModelCard, *, base_url: str = "https://parley.example.com") -> str:
    """The card as Markdown in the Hugging Face model-card layout (YAML front matter first);
    ``base_url``: the server the ``How to use`` example calls."""
    front = yaml.safe_dump(_front_matter(card), sort_keys=False, allow_unicode=True)
    out: list[str] = ["---", front.rstrip("\n"), "---", "", f"# {card.name}", ""]

    out += ["## Model details", ""]
    out.append(f"- **Model id:** `{card.id}`")
    out.append(f"- **Task:** {card.task}")
    out.append(
        f"- **Backend:** {card.backend}"
        + (f" (version {card.backend_version})" if card.backend_version else "")
    )
    if card.params:
        out.append(f"- **Parameters:** `{json.dumps(card.params, sort_keys=True)}`")
    else:
        out.append("- **Parameters:** backend defaults")
    if card.labels:
        out.append(f"- **Labels ({len(card.labels)}):** " + ", ".join(card.labels))
    if card.artifact_sha256:
        out.append(f"- **Artifact sha256:** `{card.artifact_sha256}`")
    out.append(f"- **Parley version:** {card.parley_version}")
    out.append("")

    out += ["## Intended uses & limitations", ""]
    if card.builtin:
        out.append(f"A built-in {card.task} model every tenant can call by name.")
    elif card.remote:
        out.append("A model served by the tenant's own server, called by Parley over the network.")
    else:
        out.append(
            f"{_article(card.task)} {card.task} model trained by Parley on one tenant's "
            "dataset, for that tenant's bots and API clients; it knows only the labels listed "
            "above."
        )
    out.append("")
    out += [f"- {note}" for note in card.limitations]
    out.append("")

    out += ["## Training data", ""]
    if card.dataset is None:
        out.append("None recorded: Parley did not train this model.")
    elif card.dataset.name is None:
        out.append(f"Dataset `{card.dataset.id}` (deleted since training).")
    else:
        out.append(
            f"Dataset **{card.dataset.name}** (`{card.dataset.id}`, type {card.dataset.type}): "
            f"{card.dataset.num_examples} examples."
        )
        if card.dataset.label_counts:
            out += ["", "| label | examples |", "|---|---:|"]
            out += [f"| {_cell(k)} | {v} |" for k, v in sorted(card.dataset.label_counts.items())]
    out.append("")

    t = card.training
    out += ["## Training procedure", ""]
    if card.builtin or card.remote:
        out.append("Not trained by Parley.")
    else:
        out.append(f"- **Started:** {t.started_at.isoformat() if t.started_at else '–'}")
        out.append(f"- **Finished:** {t.finished_at.isoformat() if t.finished_at else '–'}")
        worker = f" (worker {t.worker})" if t.worker else ""
        out.append(f"- **Hardware:** {t.device or 'not recorded'}{worker}")
    if t.duration_seconds is not None:
        out.append(f"- **Duration:** {t.duration_seconds:.1f} s")
    if t.epochs is not None:
        out.append(f"- **Epochs:** {t.epochs}")
    if t.train_examples is not None:
        out.append(f"- **Training split (evaluated on the held-out rest):** {t.train_examples}")
    if t.held_out_examples is not None:
        out.append(f"- **Held-out examples:** {t.held_out_examples}")
    if t.refit_on_all is not None:
        out.append(
            "- **Refit on all examples after evaluation:** " + ("yes" if t.refit_on_all else "no")
        )
    out.append("")

    out += ["## Evaluation results", ""]
    if not card.metrics:
        out.append("No held-out evaluation recorded.")
    else:
        out += ["| metric | value |", "|---|---:|"]
        out += [f"| {k} | {_fmt(v, 4)} |" for k, v in card.metrics.items()]
    if card.out_of_scope is not None:
        o = card.out_of_scope
        out += [
            "",
            f"Out-of-scope threshold: **{_fmt(o.threshold, 4)}** ({o.method}); held-out "
            f"in-scope accuracy {_fmt(o.in_scope_accuracy)}, out-of-scope recall "
            f"{_fmt(o.out_of_scope_recall)}, in-scope flagged {_fmt(o.in_scope_flagged)}.",
        ]
    if card.per_label:
        out += [
            "",
            "| label | precision | recall | F1 | support | examples |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        out += [
            f"| {_cell(r.label)} | {_fmt(r.precision)} | {_fmt(r.recall)} | {_fmt(r.f1)} | "
            f"{'–' if r.support is None else r.support} | "
            f"{'–' if r.examples is None else r.examples} |"
            for r in card.per_label
        ]
    out.append("")

    out += ["## How to use", "", "```bash", _curl(card, base_url.rstrip("/")), "```", ""]
    return "\n".join(out)
