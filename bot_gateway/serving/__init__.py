"""Prediction serving: the model cache and the micro-batcher."""
