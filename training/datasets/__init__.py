"""Datasets: one uniform record for every task type, importers, and the dataset service."""
