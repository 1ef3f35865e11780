"""Training: datasets and importers, train jobs and their queue, the model registry."""
