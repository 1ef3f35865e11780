"""The process's shared weights: loaded once per key, sized, never loaded twice at once."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from core.shared_models import SharedKey, SharedModels, files_nbytes, torch_nbytes

ENCODER = SharedKey("sentence-encoder", "minilm", device="cpu", threads=1, cache_dir="/c")


class Loader:
    """Counts its loads; each load returns a new object (optionally slowly)."""

    def __init__(self, *, seconds: float = 0.0, fail: bool = False) -> None:
        self.calls = 0
        self.seconds, self.fail = seconds, fail

    def __call__(self) -> object:
        self.calls += 1
        time.sleep(self.seconds)
        if self.fail:
            raise RuntimeError("weights missing")
        return object()


def test_same_key_gives_the_same_object_loaded_once() -> None:
    shared, load = SharedModels(), Loader()

    first = shared.get(ENCODER, load, size=lambda _: 100)
    second = shared.get(
        SharedKey("sentence-encoder", "minilm", device="cpu", threads=1, cache_dir="/c"),
        load,
        size=lambda _: 100,
    )

    assert first is second
    assert load.calls == 1
    assert len(shared) == 1 and ENCODER in shared


@pytest.mark.parametrize(
    "other",
    [
        replace(ENCODER, threads=2),
        replace(ENCODER, device="cuda"),
        replace(ENCODER, cache_dir="/d"),
        replace(ENCODER, variant="int8"),
        replace(ENCODER, kind="ocr-engine"),
        replace(ENCODER, name="mpnet"),
    ],
    ids=["threads", "device", "cache_dir", "variant", "kind", "name"],
)
def test_anything_that_changes_the_weights_is_another_entry(other: SharedKey) -> None:
    shared, load = SharedModels(), Loader()

    first = shared.get(ENCODER, load, size=lambda _: 100)
    second = shared.get(other, load, size=lambda _: 30)

    assert first is not second
    assert load.calls == 2
    assert [e.key for e in shared.entries()] == sorted([ENCODER, other])


def test_sizes_are_counted() -> None:
    shared = SharedModels()
    shared.get(ENCODER, Loader(), size=lambda _: 90_000_000)
    shared.get(SharedKey("ocr-engine", "rapidocr", threads=1), Loader(), size=lambda _: 15_000)
    shared.get(ENCODER, Loader(), size=lambda _: 1)  # already loaded: neither loaded nor sized

    assert shared.nbytes == 90_015_000
    assert sorted(e.nbytes for e in shared.entries()) == [15_000, 90_000_000]


def test_concurrent_callers_of_one_key_wait_for_one_load() -> None:
    shared, load = SharedModels(), Loader(seconds=0.2)
    got: list[object] = []
    threads = [
        threading.Thread(target=lambda: got.append(shared.get(ENCODER, load, size=lambda _: 1)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert load.calls == 1
    assert len(got) == 8 and all(g is got[0] for g in got)


def test_a_slow_load_does_not_hold_up_other_keys() -> None:
    shared, slow = SharedModels(), Loader(seconds=1.0)
    loading = threading.Thread(target=lambda: shared.get(ENCODER, slow, size=lambda _: 1))
    loading.start()
    try:
        time.sleep(0.1)  # the slow load is under way
        started = time.monotonic()
        shared.get(SharedKey("ocr-engine", "tesseract"), Loader(), size=lambda _: 1)
        assert time.monotonic() - started < 0.5
    finally:
        loading.join()


def test_a_failed_load_leaves_no_entry_and_the_next_caller_tries_again() -> None:
    shared = SharedModels()
    with pytest.raises(RuntimeError, match="weights missing"):
        shared.get(ENCODER, Loader(fail=True), size=lambda _: 1)
    assert len(shared) == 0 and shared.nbytes == 0

    load = Loader()
    shared.get(ENCODER, load, size=lambda _: 7)
    assert load.calls == 1 and shared.nbytes == 7


def test_torch_nbytes_counts_parameters_and_buffers_once() -> None:
    torch = pytest.importorskip("torch")
    layer = torch.nn.Linear(10, 4)  # 40 + 4 float32 parameters
    norm = torch.nn.BatchNorm1d(4)  # 4 + 4 parameters; 4 + 4 float32 buffers and an int64 count
    tied = torch.nn.Sequential(layer, norm, layer)  # the same layer twice

    assert torch_nbytes(tied) == (44 + 8 + 8) * 4 + 8


def test_files_nbytes_sums_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "a.onnx").write_bytes(b"x" * 1000)
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model").write_bytes(b"y" * 250)
    (tmp_path / "pipe" / "cfg").write_bytes(b"z" * 5)

    assert files_nbytes([tmp_path / "a.onnx", tmp_path / "pipe"]) == 1255
