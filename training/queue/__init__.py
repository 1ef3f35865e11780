"""Train queues behind one interface: ``local`` (embedded worker processes) and, later, Celery."""

from training.queue.base import TrainQueue, recover_interrupted, train_queues

__all__ = ["TrainQueue", "recover_interrupted", "train_queues"]
