"""Entity extraction: the pre-built extractor (patterns + spaCy NER) and trainable backends."""
