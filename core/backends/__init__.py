"""Model backends: the contracts every backend implements, one typed base per task, and the
registries (``backends`` for trainable ones, ``builtin_models`` for pre-built ones).

To add a backend, subclass the base of its task and register it::

    @backends.register("my-intent")
    class MyIntentBackend(IntentBackend[np.ndarray]):
        name = "my-intent"; version = "1"; Config = MyConfig
        def featurize(self, texts, progress=None, *, config=None) -> np.ndarray: ...
        def train(self, features, targets, config, *, seed, validation, on_epoch,
                  progress, extras=None) -> MyModel: ...
        def load(self, directory) -> MyModel: ...

The task's base decides what the job runner needs to know about the task (targets, the
held-out split, dataset checks, metrics); the contract suite (``tests/contracts``) runs
against every registered backend.

| task                     | base                         | target per example  | model           |
|--------------------------|------------------------------|---------------------|-----------------|
| ``intent``               | ``IntentBackend``            | label               | TextClassifier  |
| ``entities``             | ``EntityBackend``            | EntityAnnotation-s  | EntityModel     |
| ``image-classification`` | ``ImageClassificationBackend`` | label             | ImageClassifier |
| ``image-multi-label``    | ``MultiLabelImageBackend``   | labels              | ImageClassifier |
| ``object-detection``     | ``ObjectDetectionBackend``   | BoxAnnotation-s     | Detector        |
"""

from core.backends.base import (
    JOINT_ENTITIES_DIR,
    AnyBackend,
    Backend,
    BackendConfig,
    BackendContext,
    BuiltinModel,
    DatasetStats,
    EpochRecord,
    Evaluation,
    EvaluationOptions,
    HeldOutPrediction,
    JobCancelled,
    Progress,
    TextClassifier,
    TextsBackend,
    TrainedModel,
    TrainingData,
    backends,
    builtin_models,
    check_classes,
    default_backend,
    joint_entity_backend,
    load_model,
    read_artifact,
    resolve_device,
    set_torch_threads,
    unreadable_model,
)
from core.backends.detection import (
    OBJECT_DETECTION,
    Box,
    BoxAnnotation,
    Detection,
    Detector,
    ObjectDetectionBackend,
)
from core.backends.entities import ENTITIES, Entity, EntityAnnotation, EntityBackend, EntityModel
from core.backends.images import (
    IMAGE_CLASSIFICATION,
    IMAGE_MULTI_LABEL,
    ImageClassificationBackend,
    ImageClassifier,
    MultiLabelImageBackend,
)
from core.backends.intent import INTENT, IntentBackend

__all__ = [
    "ENTITIES",
    "IMAGE_CLASSIFICATION",
    "IMAGE_MULTI_LABEL",
    "INTENT",
    "JOINT_ENTITIES_DIR",
    "OBJECT_DETECTION",
    "AnyBackend",
    "Backend",
    "BackendConfig",
    "BackendContext",
    "Box",
    "BoxAnnotation",
    "BuiltinModel",
    "DatasetStats",
    "Detection",
    "Detector",
    "Entity",
    "EntityAnnotation",
    "EntityBackend",
    "EntityModel",
    "EpochRecord",
    "Evaluation",
    "EvaluationOptions",
    "HeldOutPrediction",
    "ImageClassificationBackend",
    "ImageClassifier",
    "IntentBackend",
    "JobCancelled",
    "MultiLabelImageBackend",
    "ObjectDetectionBackend",
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
]
