"""Train queues behind one interface: ``local`` (embedded worker processes that poll the
database) and ``celery`` (Celery workers on Redis, ``training.queue.celery``).

Embedded workers pick the next job with ``claim_next_job`` (tenants in turn, see ``fair``);
Celery messages name a job, claimed with ``claim_job``. Either way the database row is the job.
"""

from training.queue.base import TrainQueue, recover_interrupted, train_queues
from training.queue.fair import Claim, claim_job, claim_next_job

__all__ = [
    "Claim",
    "TrainQueue",
    "claim_job",
    "claim_next_job",
    "recover_interrupted",
    "train_queues",
]
