"""Intent classification backends."""
