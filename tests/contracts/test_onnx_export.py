"""The ONNX export contract, run against every backend that says it exports
(``Backend.exports_onnx``): the model trained by the backend suite (``test_backends``), saved
and loaded back as the server loads it, exported with ``export_onnx``, then run with ONNX
Runtime alone (``tokenizers`` for text, Pillow and numpy for images, preprocessing written here
from what the export says) gives the loaded model's probabilities to 1e-4. Backends that do not
export refuse with ``InvalidInput``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from tokenizers import Tokenizer

from core.backends import backends
from core.errors import InvalidInput
from core.onnx import EXPORT_GRAPH, ImagePreprocessing, OnnxExport, TextPreprocessing
from tests.contracts.test_backends import NAMES, _context, trained_backend

pytestmark = pytest.mark.slow

EXPORTING = [n for n in NAMES if backends.get(n).exports_onnx]
NOT_EXPORTING = [n for n in NAMES if not backends.get(n).exports_onnx]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backend-contracts")


def test_the_exporting_backends_are_the_intent_and_image_classifiers() -> None:
    assert set(EXPORTING) == {
        "embedding-head",
        "setfit",
        "lite0-head",
        "lite0-multi-label",
        "lite0-finetune",
    }


def text_rows(folder: Path, export: OnnxExport, texts: list[str]) -> np.ndarray:
    prep = export.preprocessing
    assert isinstance(prep, TextPreprocessing)
    tokenizer = Tokenizer.from_file(str(folder / prep.tokenizer_file))
    session = ort.InferenceSession(str(folder / EXPORT_GRAPH), providers=["CPUExecutionProvider"])
    rows = []
    for text in texts:  # one per run, as the export says (int8) and as the server does
        enc = tokenizer.encode(text)
        feeds = {
            "input_ids": np.array([enc.ids], dtype=np.int64),
            "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([enc.type_ids], dtype=np.int64),
        }
        rows.append(session.run([export.output], {n: feeds[n] for n in prep.inputs})[0][0])
    return np.stack(rows)


def image_rows(folder: Path, export: OnnxExport, images: list[Image.Image]) -> np.ndarray:
    prep = export.preprocessing
    assert isinstance(prep, ImagePreprocessing)
    batch = []
    for image in images:
        image = image.convert("RGB")
        w, h = image.size
        scale = prep.resize_shorter_side / min(w, h)
        nw, nh = max(prep.size, round(w * scale)), max(prep.size, round(h * scale))
        image = image.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - prep.size) // 2, (nh - prep.size) // 2
        image = image.crop((left, top, left + prep.size, top + prep.size))
        x = (np.asarray(image, dtype=np.float32) - prep.mean) / prep.std
        batch.append(x.transpose(2, 0, 1))
    session = ort.InferenceSession(str(folder / EXPORT_GRAPH), providers=["CPUExecutionProvider"])
    return session.run([export.output], {prep.input: np.stack(batch)})[0]


@pytest.mark.parametrize("name", EXPORTING)
def test_an_export_runs_with_onnxruntime_alone_and_matches_the_model(
    name: str, artifacts: Path, tmp_path: Path
) -> None:
    trained = trained_backend(name, artifacts)
    backend = backends.get(name)(_context())
    loaded: Any = backend.load(trained.saved)
    export = backend.export_onnx(trained.saved, tmp_path)
    assert export.labels == list(loaded.labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([EXPORT_GRAPH, *export.files])
    probe = list(trained.probe)
    expected = np.asarray(loaded.predict_features(loaded.featurize(probe)))
    if isinstance(export.preprocessing, TextPreprocessing):
        rows = text_rows(tmp_path, export, probe)
    else:
        rows = image_rows(tmp_path, export, probe)
    assert rows.shape == expected.shape == (len(probe), len(export.labels))
    np.testing.assert_allclose(rows, expected, atol=1e-4)
    assert export.multi_label == bool(getattr(loaded, "multi_label", False))
    if export.multi_label:
        assert export.thresholds == list(loaded.thresholds)


@pytest.mark.parametrize("name", NOT_EXPORTING)
def test_backends_that_do_not_export_refuse(name: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not exportable"):
        backends.get(name)(_context()).export_onnx(tmp_path, tmp_path)
