"""Text backends: the shared sentence encoder and intent models."""
