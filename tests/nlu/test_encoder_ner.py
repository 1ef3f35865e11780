"""The ``encoder-ner`` entity backend: a fine-tuned MiniLM tagger learns two entity types
from 40 sentences and finds them in new sentences, honours the dataset's Rasa extras like
``spacy-ner`` does, round-trips through its files (safetensors + JSON, never pickle), refuses
files it cannot read, and a joint model's entity half loads with the backend that saved it."""

from __future__ import annotations

import json
import shutil
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pydantic
import pytest

from core.backends import (
    JOINT_ENTITIES_DIR,
    BackendContext,
    EpochRecord,
    backends,
    load_model,
)
from core.errors import ModelLoadError
from nlu.entities.encoder_ner import (
    EncoderNerBackend,
    EncoderNerConfig,
    EncoderNerModel,
    _decode,
)
from nlu.entities.spacy_ner import SpacyNerBackend, SpacyNerConfig, SpacyNerModel
from tests.conftest import CACHE_DIR
from tests.support.entity_data import entity_rows
from tests.support.toy_backend import ToyBowBackend, ToyBowConfig

pytestmark = pytest.mark.slow

ROWS = entity_rows()  # 40 sentences: 5 templates x 8 cities, a product and a city in each
TEXTS = [str(r["text"]) for r in ROWS]
SPANS = [list(r["entities"]) for r in ROWS]  # type: ignore[call-overload]
# sentences without entities, as real datasets have: order codes and colours are not cities
NO_ENTITIES = [
    "where is order A-1932",
    "order B-2210 has not arrived",
    "i like the red one",
    "do you have it in midnight blue",
    "what colours are there, red or blue",
    "track order C-4471 please",
    "hello there",
    "thanks, that is all",
]
EXTRAS = {
    "regexes": {"order_id": [r"\b[A-Z]-\d{4}\b"]},
    "lookups": {"colour": ["midnight blue", "red"], "city": ["Berlin"]},
    "synonyms": {"electric kettle": ["kettle"], "navy": ["midnight blue"]},
}
# 40 updates: enough for 40 templated sentences, seconds on one CPU thread
CONFIG = EncoderNerConfig(epochs=10, batch_size=10, min_steps=0)
# new sentence shapes; Lisbon, Prague and Munich never occur in training
HELD_OUT = [
    ("please ship my blender to Lisbon", {("product", "blender"), ("city", "Lisbon")}),
    ("deliver the sofa to Prague please", {("product", "sofa"), ("city", "Prague")}),
    ("i need a laptop in Munich", {("product", "laptop"), ("city", "Munich")}),
    ("can you send the mattress to Oslo", {("product", "mattress"), ("city", "Oslo")}),
]


def context() -> BackendContext:
    return BackendContext(cache_dir=CACHE_DIR, device="cpu", threads=1)


def fit(backend: Any, features: Any, labels: list[Any], config: Any, **kwargs: Any) -> Any:
    """``backend.train`` with the job runner's bookkeeping left out."""
    options = {"validation": None, "on_epoch": None, "progress": lambda _: None, **kwargs}
    return backend.train(features, labels, config, seed=0, **options)


@pytest.fixture(scope="module")
def trained() -> tuple[EncoderNerModel, list[EpochRecord]]:
    curve: list[EpochRecord] = []
    model = fit(
        EncoderNerBackend(context()),
        TEXTS[:32] + NO_ENTITIES,
        SPANS[:32] + [[] for _ in NO_ENTITIES],
        CONFIG,
        validation=(TEXTS[32:], SPANS[32:]),
        on_epoch=curve.append,
        extras=EXTRAS,
    )
    return model, curve


@pytest.fixture(scope="module")
def model(trained: tuple[EncoderNerModel, list[EpochRecord]]) -> EncoderNerModel:
    return trained[0]


@pytest.fixture(scope="module")
def saved(model: EncoderNerModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("encoder-ner")
    model.save(directory)
    return directory


def found(model: EncoderNerModel, text: str) -> set[tuple[str, str]]:
    return {(e.entity, text[e.start : e.end]) for e in model.extract([text])[0]}


def test_it_is_registered_and_has_an_entry_point() -> None:
    assert backends.get("encoder-ner") is EncoderNerBackend
    plugins = {ep.name: ep.value for ep in entry_points(group="parley.plugins")}
    assert plugins["entities-encoder-ner"] == "nlu.entities.encoder_ner"


def test_it_learns_both_entity_types_and_finds_them_in_new_sentences(
    trained: tuple[EncoderNerModel, list[EpochRecord]],
) -> None:
    model, curve = trained
    assert model.labels == ["city", "product"] and model.task == "entities"
    for text, expected in HELD_OUT:
        assert found(model, text) >= expected, text
    rows = model.extract([text for text, _ in HELD_OUT])
    for (text, _), row in zip(HELD_OUT, rows, strict=True):
        model_entities = [e for e in row if e.extractor == "encoder-ner"]
        assert {(e.entity, text[e.start : e.end]) for e in model_entities} <= dict(HELD_OUT)[
            text
        ] | {("city", "Berlin")}
        assert all(0.5 < e.confidence <= 1.0 for e in model_entities)
    assert [r.epoch for r in curve] == list(range(1, 11))
    assert curve[-1].train_loss < curve[0].train_loss / 5
    assert curve[-1].validation_entity_f1 is not None and curve[-1].validation_entity_f1 >= 0.75


def test_batches_and_single_texts_agree(model: EncoderNerModel) -> None:
    texts = [text for text, _ in HELD_OUT] + ["", "ship it"]
    one_by_one = [model.extract([t])[0] for t in texts]
    together = model.extract(texts)
    assert [[(e.entity, e.start, e.end) for e in row] for row in together] == [
        [(e.entity, e.start, e.end) for e in row] for row in one_by_one
    ]
    assert together[-2] == []


def test_rasa_extras_regexes_lookups_and_synonyms(model: EncoderNerModel) -> None:
    def extract(text: str) -> list[tuple[str, str, str, str]]:
        return [
            (e.entity, text[e.start : e.end], e.value, e.extractor)
            for e in model.extract([text])[0]
        ]

    # the model's own entity, its value mapped through a synonym
    assert ("product", "kettle", "electric kettle", "encoder-ner") in extract(
        "ship my kettle to Vienna"
    )
    # a regex and a lookup find types the model never learned; synonyms apply to them too
    assert ("order_id", "Z-4242", "Z-4242", "regex") in extract("where is order Z-4242")
    assert ("colour", "midnight blue", "navy", "lookup") in extract("i want the midnight blue one")
    assert all(
        e.confidence == 1.0
        for e in model.extract(["where is order Z-4242"])[0]
        if e.extractor == "regex"
    )
    # a lookup never overlaps what the model found: one entity on "Berlin", the model's
    assert [e for e in extract("is the sofa available in Berlin") if e[1] == "Berlin"] == [
        ("city", "Berlin", "Berlin", "encoder-ner")
    ]
    # lookups match whole words only: no "red" inside "bored"
    row = extract("i like the red one, i am bored")
    assert ("colour", "red", "red", "lookup") in row
    assert [e for e in row if e[0] == "colour"] == [("colour", "red", "red", "lookup")]


def test_save_and_load_round_trip(model: EncoderNerModel, saved: Path) -> None:
    assert {p.name for p in saved.iterdir()} == {"entities.json", "entities.safetensors"}
    meta = json.loads((saved / "entities.json").read_text())
    assert meta["backend"] == "encoder-ner" and meta["format_version"] == 1
    assert meta["labels"] == ["city", "product"] and meta["extras"] == EXTRAS
    loaded = EncoderNerBackend(context()).load(saved)
    texts = [text for text, _ in HELD_OUT] + ["ship my kettle to Vienna", "order Z-4242"]
    assert loaded.extract(texts) == model.extract(texts)  # spans, values and confidences
    assert loaded.labels == model.labels and loaded.feature_key == model.feature_key
    # the shared word-embedding table is not counted; the fine-tuned layers are (~44 MB)
    assert 30e6 < loaded.nbytes < 60e6


def test_broken_or_foreign_files_are_refused(saved: Path, tmp_path: Path) -> None:
    backend = EncoderNerBackend(context())

    def broken(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(saved, target)
        return target

    with pytest.raises(ModelLoadError, match="cannot read"):
        backend.load(tmp_path / "missing")
    truncated = broken("truncated")
    weights = truncated / "entities.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="weights"):
        backend.load(truncated)
    no_weights = broken("no-weights")
    (no_weights / "entities.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="weights"):
        backend.load(no_weights)
    for name, change, message in [
        ("spacy", {"backend": "spacy-ner"}, "saved by backend 'spacy-ner'"),
        ("future", {"format_version": 99}, "format version 99"),
        ("other-encoder", {"encoder_sha256": "0" * 64}, "another encoder"),
        ("tags", {"tags": ["B-city"]}, "tag list"),
        ("more-tags", {"tags": ["O", "B-city", "I-city"]}, "wrong shapes"),
    ]:
        target = broken(name)
        meta = json.loads((target / "entities.json").read_text())
        (target / "entities.json").write_text(json.dumps({**meta, **change}))
        with pytest.raises(ModelLoadError, match=message):
            backend.load(target)
    not_json = broken("not-json")
    (not_json / "entities.json").write_text("{")
    with pytest.raises(ModelLoadError, match="cannot read"):
        backend.load(not_json)


def test_a_joint_model_loads_its_entities_with_the_backend_that_saved_them(
    saved: Path, tmp_path: Path
) -> None:
    toy = ToyBowBackend(context())
    intents = fit(
        toy,
        toy.featurize(TEXTS),
        ["shipping" if "ship" in t or "send" in t else "stock" for t in TEXTS],
        ToyBowConfig(),
    )
    joint = tmp_path / "joint"
    intents.save(joint)
    shutil.copytree(saved, joint / JOINT_ENTITIES_DIR)
    loaded = load_model("toy-bow", joint, context())
    assert isinstance(loaded.entity_model, EncoderNerModel)
    assert ("city", "Paris") in found(loaded.entity_model, "ship my sofa to Paris")

    # an older artifact: spacy-ner's entities.json without a "backend" key
    spacy = fit(SpacyNerBackend(context()), TEXTS, SPANS, SpacyNerConfig(epochs=2))
    old = tmp_path / "old"
    intents.save(old)
    spacy.save(old / JOINT_ENTITIES_DIR)
    meta_path = old / JOINT_ENTITIES_DIR / "entities.json"
    meta = json.loads(meta_path.read_text())
    del meta["backend"]
    meta_path.write_text(json.dumps(meta))
    assert isinstance(load_model("toy-bow", old, context()).entity_model, SpacyNerModel)

    meta_path.write_text(json.dumps({**meta, "backend": "no-such-backend"}))
    with pytest.raises(ModelLoadError, match="no-such-backend"):
        load_model("toy-bow", old, context())


def test_decoding_repairs_invalid_tag_sequences() -> None:
    words = [(1, 0, 4), (2, 5, 8), (3, 9, 12), (4, 13, 17), (5, 18, 21)]
    probs = [0.9, 0.8, 0.6, 1.0, 0.5]
    # a stray I- after O opens an entity; I- of another type opens a new one
    assert _decode(words, ["O", "I-city", "I-city", "I-product", "O"], probs) == [
        ("city", 5, 12, pytest.approx(0.7)),
        ("product", 13, 17, 1.0),
    ]
    # B- right after an entity of the same type starts a second entity
    assert _decode(words, ["B-city", "B-city", "O", "O", "B-x"], probs) == [
        ("city", 0, 4, 0.9),
        ("city", 5, 8, 0.8),
        ("x", 18, 21, 0.5),
    ]


def test_config_bounds_and_no_annotations() -> None:
    with pytest.raises(pydantic.ValidationError):
        EncoderNerConfig(epochs=0)
    with pytest.raises(pydantic.ValidationError):
        EncoderNerConfig(learning_rate=1.0)
    with pytest.raises(pydantic.ValidationError):
        EncoderNerConfig(layers=3)  # type: ignore[call-arg]
    from core.errors import InvalidInput

    with pytest.raises(InvalidInput, match="no entity annotations"):
        fit(EncoderNerBackend(context()), ["hello"], [[]], CONFIG)
