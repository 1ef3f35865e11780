"""Train queues behind one interface: ``local`` (embedded worker processes that poll the
database) and ``celery`` (Celery workers on Redis, ``training.queue.celery``).

Both are in the ``train_queues`` registry and built the same way,
``train_queues.get(settings.queue.backend).from_settings(settings, engine)``; the celery one
is imported on its first look-up only, so the embedded mode never imports Celery.

Embedded workers pick the next job with ``claim_next_job`` (tenants in turn, see ``fair``);
a Celery message names a job, and ``claim_job`` claims the oldest queued job of its tenant.
Either way the database row is the job.
"""

import training.queue.local  # noqa: F401 - registers "local"
from training.queue.base import TrainQueue, recover_interrupted, train_queues
from training.queue.fair import Claim, claim_job, claim_next_job

train_queues.register_lazy("celery", "training.queue.celery")

__all__ = [
    "Claim",
    "TrainQueue",
    "claim_job",
    "claim_next_job",
    "recover_interrupted",
    "train_queues",
]
