"""Dataset file formats, one module each; every module registers its importer on import.

``base`` holds what they share (the ``Importer`` protocol, the ``importers`` registry, row
errors, entity span checks); ``delimited`` (CSV, TSV), ``json_formats`` (JSON, JSONL),
``conll`` (CoNLL/BIO) and ``rasa_nlu`` (Rasa ``nlu.yml``) are the text formats. Image zips
register from ``training.datasets.image_import``. ``training.datasets.importers`` imports them
all and is the upload path (decode, pick, validate).
"""
