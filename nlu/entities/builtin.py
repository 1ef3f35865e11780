"""Registers ``prebuilt-entities``: spaCy's English NER plus pattern entities, for every tenant."""

from __future__ import annotations

from typing import Any

from core.backends import BackendContext, BuiltinModel, builtin_models
from nlu.entities.prebuilt import get_prebuilt_extractor


def _load(context: BackendContext) -> Any:
    return get_prebuilt_extractor()


PREBUILT_ENTITIES = builtin_models.register("prebuilt-entities")(
    BuiltinModel(
        name="prebuilt-entities",
        task="entities",
        backend="spacy-en_core_web_sm-3.8.0+patterns",
        description="PERSON, ORG, GPE, DATE, MONEY and the other OntoNotes entities (spaCy "
        "en_core_web_sm), plus email, phone_number, url and number patterns; no training",
        load=_load,
    )
)
