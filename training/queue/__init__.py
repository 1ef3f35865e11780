"""Train queues behind one interface: ``local`` (embedded worker processes) and, later, Celery.

Every queue picks the next job with ``claim_next_job`` (tenants in turn, see ``fair``)."""

from training.queue.base import TrainQueue, recover_interrupted, train_queues
from training.queue.fair import claim_next_job

__all__ = ["TrainQueue", "claim_next_job", "recover_interrupted", "train_queues"]
