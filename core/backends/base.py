"""The model-backend interface (the "training SDK"), its registry and what every task shares.

A backend subclasses its task's base (``core.backends.intent``, ``entities``, ``images``,
``detection``) and turns examples into features, trains a model on features, and loads a saved
model:

    features = backend.featurize(texts, progress, config=config)  # e.g. sentence embeddings
    model = backend.train(features, labels, config, validation=..., on_epoch=..., progress=...)
    model.save(directory); backend.load(directory)          # save and load mirror each other
    model.predict_features(model.featurize(texts))           # class probabilities

The job runner (``training.jobs``) drives splitting, metrics and refitting through the task's
base (``Backend.split``, ``targets``, ``evaluate``), so a backend writes only the algorithm.
Models that name the same ``feature_key`` share one featurisation of a micro-batch at
serving time (one encoder pass for many tenants' heads).
Weights are saved as safetensors or JSON, never pickle.
"""

from __future__ import annotations

import ctypes
import functools
import json
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from core.errors import InvalidInput, ModelLoadError, UnknownPluginError
from core.evaluation import stratified_split
from core.onnx import OnnxExport
from core.registry import Registry

__all__ = [
    "JOINT_ENTITIES_DIR",
    "AnyBackend",
    "Backend",
    "BackendConfig",
    "BackendContext",
    "BuiltinModel",
    "DatasetStats",
    "EpochRecord",
    "Evaluation",
    "EvaluationOptions",
    "HeldOutPrediction",
    "JobCancelled",
    "Progress",
    "TextClassifier",
    "TextsBackend",
    "TrainedModel",
    "TrainingData",
    "backends",
    "builtin_models",
    "check_classes",
    "default_backend",
    "joint_entity_backend",
    "load_model",
    "read_artifact",
    "unreadable_model",
    "resolve_device",
    "set_torch_threads",
    "top_predictions",
]

Progress = Callable[[float], None]
"""Called with the fraction done (0..1); raises ``JobCancelled`` when the job was cancelled."""


class JobCancelled(Exception):
    """Raised from a progress callback to stop a cancelled job."""


class BackendConfig(BaseModel):
    """Base of every backend's config; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    validation_accuracy: float | None
    validation_macro_f1: float | None
    validation_entity_f1: float | None = None  # entity models: micro-F1 of exact spans
    validation_map50: float | None = None  # detectors: mean AP at IoU 0.5


@dataclass
class BackendContext:
    """What the platform hands a backend: where to cache, which device, how many threads."""

    cache_dir: Path
    device: str = "auto"
    threads: int = 1
    ocr_threads: int = 1  # pre-built OCR: threads one read uses (a latency-bound single request)


class TrainingData(Protocol):
    """A dataset's examples as a train job sees them (``training.datasets.DatasetSnapshot``);
    a task's ``targets`` reads what its backends learn from."""

    @property
    def texts(self) -> Sequence[str]: ...
    @property
    def labels(self) -> Sequence[str]: ...
    @property
    def annotations(self) -> Sequence[list[dict[str, Any]] | None]:
        """Per example, its entity spans or an image's boxes."""

    @property
    def multi_labels(self) -> Sequence[list[str] | None]: ...


@dataclass(frozen=True)
class DatasetStats:
    """What a task checks before a train job is queued (``Backend.check_dataset``)."""

    dataset_id: str
    label_counts: dict[str, int]
    annotated_examples: int  # examples with entity spans or boxes


@dataclass(frozen=True)
class EvaluationOptions:
    """Job parameters that change how a held-out split is scored."""

    out_of_scope_threshold: float | None = None  # intent: fixed threshold; None: calibrated
    out_of_scope_share: float | None = None  # intent: the share of out-of-scope messages
    # expected (the calibration's prior); None: the share in the held-out split


@dataclass(frozen=True)
class HeldOutPrediction:
    """What a classifier said of one held-out example: ``index`` is its position in the
    held-out targets, ``predicted`` the top label, ``confidence`` that label's probability."""

    index: int
    predicted: str
    confidence: float


@dataclass(frozen=True)
class Evaluation:
    """A held-out split's metrics and, for single-label classifiers, each example's
    prediction (what the Studio shows behind a confusion-matrix cell)."""

    metrics: dict[str, Any]
    predictions: list[HeldOutPrediction] | None = None


def top_predictions(probs: np.ndarray, labels: Sequence[str]) -> list[HeldOutPrediction]:
    """Each row's top label and its probability."""
    best = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
    return [
        HeldOutPrediction(i, labels[int(j)], round(float(probs[i, j]), 6))
        for i, j in enumerate(best)
    ]


class TrainedModel(Protocol):
    """What every trained model has: the labels it knows and a way to save itself."""

    labels: list[str]

    def save(self, directory: Path) -> None: ...


class TextClassifier(Protocol):
    """A trained model that scores features with class probabilities (intent and image
    classifiers); the gateway's micro-batcher calls ``featurize`` once for every model that
    shares a ``feature_key``, then ``predict_features`` per model."""

    labels: list[str]
    feature_key: str

    def featurize(self, texts: Sequence[Any]) -> Any: ...
    def predict_features(self, features: Any) -> np.ndarray: ...
    def save(self, directory: Path) -> None: ...


FeaturesT = TypeVar("FeaturesT")
TargetT = TypeVar("TargetT")
ModelT = TypeVar("ModelT")


class Backend(ABC, Generic[FeaturesT, TargetT, ModelT]):
    """Base of every model backend; subclass the base of its task (``IntentBackend``,
    ``EntityBackend``, ``ImageClassificationBackend``, ``MultiLabelImageBackend``,
    ``ObjectDetectionBackend``), which decides what the job runner and the registry used to
    decide by task name: what counts as a target (``targets``), how the held-out split is drawn
    (``split``), whether a dataset can be trained (``check_dataset``) and how a held-out split
    is scored (``evaluate``). A backend writes the algorithm: ``featurize``, ``train``, ``load``.

    ``FeaturesT`` is what ``featurize`` returns (embeddings, the texts, the images),
    ``TargetT`` one example's target (a label, entity spans, boxes), ``ModelT`` the model.
    Optional: ``warm_up(context)`` (a classmethod) loads shared weights at server start.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    task: ClassVar[str]
    Config: ClassVar[type[BackendConfig]]
    joint_entities: ClassVar[bool] = False
    """Intent backends: an intent dataset with entity spans also trains an entity model."""
    prefers_gpu: ClassVar[bool] = False
    """Training gains much from a GPU (fine-tuning, detection): the Celery queue sends its jobs
    to ``gpu`` workers first (``training.queue.celery``)."""

    def __init__(self, context: BackendContext) -> None:
        self.context = context

    @abstractmethod
    def featurize(
        self,
        inputs: Sequence[Any],
        progress: Progress | None = None,
        *,
        config: BackendConfig | None = None,
    ) -> FeaturesT:
        """The features of ``inputs`` (texts, or images); reports ``progress`` (0..1)."""

    @abstractmethod
    def train(  # ``extras``: the dataset's synonyms, regexes and lookups (Rasa)
        self,
        features: FeaturesT,
        targets: Sequence[TargetT],
        config: BackendConfig,
        *,
        seed: int,
        validation: tuple[FeaturesT, Sequence[TargetT]] | None,
        on_epoch: Callable[[EpochRecord], None] | None,
        progress: Progress,
        extras: dict[str, Any] | None = None,
    ) -> ModelT:
        """A model trained on ``features`` and ``targets``; with ``validation``, one
        ``EpochRecord`` per epoch to ``on_epoch`` (the learning curve)."""

    @abstractmethod
    def load(self, directory: Path) -> ModelT:
        """The model saved in ``directory``; ``ModelLoadError`` when it cannot be read."""

    exports_onnx: ClassVar[bool] = False
    """Whether ``export_onnx`` is written (``GET /v1/models/{id}/export?format=onnx``)."""

    def export_onnx(self, directory: Path, target: Path) -> OnnxExport:
        """Write the model saved in ``directory`` into the folder ``target`` as one ONNX graph,
        ``model.onnx``, from its raw inputs (token ids, pixels) to the probabilities the server
        returns, computed as the server computes them, plus what its preprocessing needs (a
        tokenizer); say what was written. Backends that set ``exports_onnx`` override it."""
        raise InvalidInput(f"{self.name} models are not exportable to ONNX")

    # --- what the task decides ----------------------------------------------------------

    @classmethod
    @abstractmethod
    def targets(cls, data: TrainingData) -> list[TargetT]:
        """What the backend learns to predict, one per example of ``data``."""

    @classmethod
    def split(
        cls, data: TrainingData, train_fraction: float, seed: int
    ) -> tuple[list[int], list[int]]:
        """(train, held-out) example indices: stratified by the examples' labels."""
        return stratified_split(data.labels, train_fraction, seed)

    @classmethod
    @abstractmethod
    def check_dataset(cls, stats: DatasetStats) -> None:
        """``InvalidInput`` saying what to add when the dataset cannot train this task."""

    @abstractmethod
    def evaluate(
        self,
        model: ModelT,
        features: FeaturesT,
        targets: Sequence[TargetT],
        *,
        dataset_labels: Sequence[str],
        options: EvaluationOptions,
    ) -> dict[str, Any]:
        """Metrics of ``model`` on a held-out split, in the shape the API returns;
        ``dataset_labels``: every label of the dataset, sorted."""

    def evaluate_held_out(
        self,
        model: ModelT,
        features: FeaturesT,
        targets: Sequence[TargetT],
        *,
        dataset_labels: Sequence[str],
        options: EvaluationOptions,
    ) -> Evaluation:
        """``evaluate``'s metrics and, where the task has them (single-label classifiers
        override this), each held-out example's prediction, from one pass of the model."""
        return Evaluation(
            self.evaluate(model, features, targets, dataset_labels=dataset_labels, options=options)
        )


AnyBackend = Backend[Any, Any, Any]


class TextsBackend:
    """Mixin of backends that learn from the texts themselves (fine-tuning, spaCy): their
    features are the texts, so featurising is the identity. List it before the task base."""

    def featurize(
        self,
        texts: Sequence[str],
        progress: Progress | None = None,
        *,
        config: BackendConfig | None = None,
    ) -> list[str]:
        if progress is not None:
            progress(1.0)
        return list(texts)


def check_classes(stats: DatasetStats) -> None:
    """A classifier needs at least two labels with examples."""
    labels = stats.label_counts
    if len(labels) < 2:
        only = f" (only {next(iter(labels))!r})" if labels else ""
        raise InvalidInput(
            f"dataset {stats.dataset_id} has {len(labels)} label{only}; a classifier needs at "
            "least 2 labels with examples: add examples of other labels and train again"
        )


backends: Registry[type[AnyBackend]] = Registry("model backend")

_DEFAULTS = {
    "intent": "embedding-head",
    "entities": "encoder-ner",
    "image-classification": "lite0-head",
    "image-multi-label": "lite0-multi-label",
    "object-detection": "faster-rcnn-lite0",
}
"""The backend each task trains when a request names none. ``encoder-ner`` for entities:
SNIPS test slot F1 0.943 against ``spacy-ner``'s 0.902 (``bench/entities.py``)."""


JOINT_ENTITIES_DIR = "entities"
"""Sub-folder of an intent model's artifact holding its entity model (joint models)."""


def load_model(name: str, directory: Path, context: BackendContext) -> Any:
    """A saved model with its backend; a joint intent model gets ``entity_model`` attached,
    loaded with the backend its ``entities.json`` names."""
    model = backends.get(name)(context).load(directory)
    joint = directory / JOINT_ENTITIES_DIR
    entity_model = None
    if joint.is_dir():
        entity_backend = joint_entity_backend(joint)
        try:
            backend_cls = backends.get(entity_backend)
        except UnknownPluginError as e:
            raise unreadable_model(
                f"the joint model's entities were saved by backend {entity_backend!r}, which "
                f"this server does not have: {e}"
            ) from e
        entity_model = backend_cls(context).load(joint)
    model.entity_model = entity_model
    return model


LEGACY_ENTITY_BACKEND = "spacy-ner"
"""The entity backend of joint models saved before ``entities.json`` named its backend."""


def joint_entity_backend(directory: Path) -> str:
    """The backend that saved the entity model in ``directory`` (a joint model's sub-folder):
    the ``backend`` its ``entities.json`` records, ``spacy-ner`` for older artifacts."""
    try:
        meta = json.loads((directory / "entities.json").read_text())
    except (OSError, ValueError) as e:
        raise unreadable_model(
            f"cannot read the joint model's entity metadata in {directory}: {e}"
        ) from e
    name = meta.get("backend") if isinstance(meta, dict) else None
    if name is None:
        return LEGACY_ENTITY_BACKEND
    if not isinstance(name, str):
        raise unreadable_model(f"the joint model's entities.json names no backend: {name!r}")
    return name


RETRAIN = (
    "retrain the model (its saved files are damaged, or were written by another backend or "
    "version of Parley)"
)


def unreadable_model(message: str) -> ModelLoadError:
    """The error for a saved model a backend cannot use, saying what to do about it."""
    return ModelLoadError(f"{message}; {RETRAIN}")


def read_artifact(
    directory: Path, *, meta_file: str, tensors_file: str, backend: str, format_version: int
) -> tuple[dict[str, Any], list[str], dict[str, np.ndarray]]:
    """A saved model's JSON metadata, its label list and its safetensors tensors, checked to
    be readable and written by ``backend`` in ``format_version`` (``ModelLoadError``)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        meta = json.loads((directory / meta_file).read_text())
        tensors = load_file(str(directory / tensors_file))
    except (OSError, ValueError, SafetensorError) as e:
        raise unreadable_model(f"cannot read the model in {directory.name}: {e}") from e
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ModelLoadError(f"the model in {directory.name} has no label list; retrain it")
    if meta.get("format_version") != format_version or meta.get("backend") != backend:
        raise ModelLoadError(
            f"model format {meta.get('backend')}/{meta.get('format_version')} is not "
            f"{backend}/{format_version}; retrain the model"
        )
    return meta, labels, tensors


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` where a CUDA device is present, else ``cpu``; other names as given.

    Where no CUDA driver can be loaded the answer is ``cpu`` without importing torch (about
    470 MB resident): a gateway serving ONNX models never loads it."""
    if device != "auto":
        return device
    if "torch" not in sys.modules and not _cuda_driver_present():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.cache
def _cuda_driver_present() -> bool:
    """Whether the CUDA driver library loads and reports a device (torch asks the same)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return (
        cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    )


def set_torch_threads(threads: int, *, if_imported: bool = False) -> None:
    """Set torch's intra-op threads (on a 2-core machine two threads fighting for two cores
    made encoding 5-10x slower). ``if_imported``: only where torch is already imported, so that
    a process that has not needed torch does not load it for this."""
    if if_imported and "torch" not in sys.modules:
        return
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.set_num_threads(threads)


def default_backend(task: str) -> str | None:
    """The backend used for ``task`` when a train request names none."""
    return _DEFAULTS.get(task)


@dataclass(frozen=True)
class BuiltinModel:
    """A model every tenant can call by name without training (``prebuilt-entities``).

    ``load(context)`` returns an object with ``labels`` and ``extract(texts)`` (entity models:
    one list of entities, each with ``to_dict()``, per text); loaded once per process.
    """

    name: str
    task: str
    backend: str
    description: str
    load: Callable[[BackendContext], Any]


builtin_models: Registry[BuiltinModel] = Registry("built-in model")
