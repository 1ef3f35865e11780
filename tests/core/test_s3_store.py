"""S3Store on an S3-compatible server (moto, standing in for MinIO): the manifest written last,
half-written or corrupted folders never handed out, the local cache reused and re-downloaded
when tampered with, the store down → ``Unavailable`` naming it within ``timeout_s`` and working
again after a restart. The contract shared with LocalStore is in test_storage.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.errors import ConfigurationError, NotFound, Unavailable
from core.s3 import MANIFEST_FORMAT, MANIFEST_NAME, S3Store
from core.settings import Settings
from core.storage import sha256_dir, store_for
from core.usage import stored_bytes
from tests.core.test_storage import files_under, make_model_dir
from tests.support.s3_server import S3_ENV, S3Server

pytestmark = pytest.mark.slow

PREFIX = "tenants/t1/models/m1"


@pytest.fixture
def store(s3_settings: Settings) -> S3Store:
    made = store_for(s3_settings)
    assert isinstance(made, S3Store)
    return made


def calls_of(store: S3Store) -> list[str]:
    """The names of the S3 operations ``store`` makes from now on (GetObject, PutObject, ...)."""
    calls: list[str] = []
    store.client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    return calls


def cached_files(cache: Path) -> list[Path]:
    """The files a store's local cache holds, but its lock files (``locks/``: empty, kept)."""
    return [p for p in cache.rglob("*") if p.is_file() and p.parent.name != "locks"]


def another_gateway(s3_settings: Settings, tmp_path: Path, name: str) -> S3Store:
    """A second store on the same bucket with its own local cache (another machine)."""
    return S3Store.from_settings(s3_settings.model_copy(update={"cache_path": tmp_path / name}))


def test_the_manifest_is_written_last_and_describes_the_folder(
    store: S3Store, tmp_path: Path
) -> None:
    source = make_model_dir(tmp_path / "trained")
    puts: list[str] = []
    store.client.meta.events.register(
        "before-parameter-build.s3.PutObject", lambda params, **_: puts.append(params["Key"])
    )

    store.put_dir(PREFIX, source)

    assert puts[-1] == f"parley/{PREFIX}/{MANIFEST_NAME}"
    assert sorted(puts[:-1]) == [
        f"parley/{PREFIX}/config.json",
        f"parley/{PREFIX}/head.safetensors",
        f"parley/{PREFIX}/sub/vocab.txt",
    ]
    manifest = json.loads(store.get_bytes(f"{PREFIX}/{MANIFEST_NAME}"))
    assert manifest["format"] == MANIFEST_FORMAT
    assert manifest["sha256"] == sha256_dir(source)
    head = next(f for f in manifest["files"] if f["path"] == "head.safetensors")
    assert head["size"] == len(b"\x00\x01weights")


def test_files_without_a_manifest_are_never_returned(store: S3Store, tmp_path: Path) -> None:
    # an upload that died before its manifest: the files are there, the folder is not
    for rel, data in files_under(make_model_dir(tmp_path / "trained")).items():
        store.put_bytes(f"{PREFIX}/{rel}", data)

    with pytest.raises(NotFound, match="no manifest"):
        store.local_dir(PREFIX)
    assert cached_files(tmp_path / "cache" / "artifacts") == []


@pytest.mark.parametrize("damage", ["corrupted", "missing"])
def test_a_folder_that_does_not_match_its_manifest_is_refused(
    store: S3Store, s3_settings: Settings, tmp_path: Path, damage: str
) -> None:
    store.put_dir(PREFIX, make_model_dir(tmp_path / "trained"))
    if damage == "corrupted":
        store.put_bytes(f"{PREFIX}/head.safetensors", b"\x00\x01weightz")
    else:
        store.client.delete_object(Bucket=store.bucket, Key=f"parley/{PREFIX}/sub/vocab.txt")
    reader = another_gateway(s3_settings, tmp_path, "reader")

    with pytest.raises(NotFound, match=f"artifact folder {PREFIX} in the object store at http"):
        reader.local_dir(PREFIX)
    assert cached_files(tmp_path / "reader") == []


def test_the_local_cache_is_reused_without_asking_the_store(
    store: S3Store, s3_settings: Settings, tmp_path: Path
) -> None:
    source = make_model_dir(tmp_path / "trained")
    store.put_dir(PREFIX, source)
    gateway = another_gateway(s3_settings, tmp_path, "gateway")
    calls = calls_of(gateway)

    first = gateway.local_dir(PREFIX)
    downloads = calls.count("GetObject")
    second = gateway.local_dir(PREFIX)

    assert downloads == 4  # the manifest and three files
    assert calls.count("GetObject") == downloads and len(calls) == downloads
    assert second == first
    assert first.is_relative_to(tmp_path / "gateway" / "artifacts")
    assert files_under(first) == files_under(source)
    assert sha256_dir(first) == sha256_dir(source)


def test_threads_asking_for_one_folder_download_it_once(
    store: S3Store, s3_settings: Settings, tmp_path: Path
) -> None:
    source = make_model_dir(tmp_path / "trained")
    store.put_dir(PREFIX, source)
    gateway = another_gateway(s3_settings, tmp_path, "gateway")
    calls = calls_of(gateway)

    with ThreadPoolExecutor(8) as pool:
        folders = list(pool.map(lambda _: gateway.local_dir(PREFIX), range(8)))

    assert len(set(folders)) == 1
    assert files_under(folders[0]) == files_under(source)
    assert calls.count("GetObject") == 4


@pytest.mark.parametrize("tamper", ["edit", "add", "remove"])
def test_a_tampered_cache_is_downloaded_again(store: S3Store, tmp_path: Path, tamper: str) -> None:
    source = make_model_dir(tmp_path / "trained")
    store.put_dir(PREFIX, source)
    local = store.local_dir(PREFIX)
    if tamper == "edit":
        (local / "head.safetensors").write_bytes(b"\x00\x01weightz")
    elif tamper == "add":
        (local / "extra.bin").write_bytes(b"")
    else:
        (local / "sub" / "vocab.txt").unlink()
    calls = calls_of(store)

    again = store.local_dir(PREFIX)

    assert calls.count("GetObject") == 4
    assert files_under(again) == files_under(source)


def test_put_dir_and_delete_prefix_drop_the_local_cache(store: S3Store, tmp_path: Path) -> None:
    store.put_dir(PREFIX, make_model_dir(tmp_path / "v1"))
    store.local_dir(PREFIX)
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "only.bin").write_bytes(b"v2")

    store.put_dir(PREFIX, v2)
    assert files_under(store.local_dir(PREFIX)) == {"only.bin": b"v2"}

    store.delete_prefix(PREFIX)
    assert not store.exists(PREFIX)
    with pytest.raises(NotFound):
        store.local_dir(PREFIX)


def test_delete_prefix_pages_through_more_than_one_listing(store: S3Store) -> None:
    store.page_size = 10
    for i in range(25):
        store.client.put_object(Bucket=store.bucket, Key=f"parley/uploads/t1/b1/{i}.bin", Body=b"x")
    store.put_bytes("uploads/t1/b2/keep.bin", b"keep")

    store.delete_prefix("uploads/t1/b1")

    assert not store.exists("uploads/t1/b1")
    assert store.size_of("uploads/t1") == 4


def test_stored_bytes_lists_sizes_without_downloading(store: S3Store, tmp_path: Path) -> None:
    source = make_model_dir(tmp_path / "trained")
    store.put_dir("tenants/t1/models/m1", source)
    store.put_bytes("uploads/t1/b1/photo.png", b"12345678")
    store.put_bytes("uploads/t2/b1/photo.png", b"not t1's")
    calls = calls_of(store)

    total = stored_bytes(store, "t1")

    assert total == sum(p.stat().st_size for p in source.rglob("*") if p.is_file()) + 8
    assert set(calls) == {"ListObjectsV2"}


def test_worker_processes_get_the_same_store(
    s3_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LocalQueue`` starts its workers with ``worker_env()``: the same bucket, endpoint and
    timeout."""
    for name, value in s3_settings.worker_env().items():
        monkeypatch.setenv(name, value)

    worker = Settings()

    assert worker.storage == s3_settings.storage
    assert worker.artifacts_dir == s3_settings.artifacts_dir


def test_a_missing_bucket_says_to_create_it(s3_settings: Settings) -> None:
    settings = s3_settings.model_copy(
        update={"storage": s3_settings.storage.model_copy(update={"url": "s3://no-such-bucket/p"})}
    )
    store = store_for(settings)

    with pytest.raises(ConfigurationError, match="no bucket 'no-such-bucket'; create it"):
        store.put_bytes("a.bin", b"1")


class _ErrorBody:
    def __init__(self, code: str) -> None:
        self.code = code

    def stream(self, **_: object) -> Iterator[bytes]:
        yield f"<Error><Code>{self.code}</Code><Message>as told</Message></Error>".encode()


@pytest.mark.parametrize(
    ("status", "code", "error", "message"),
    [
        (503, "ServiceUnavailable", Unavailable, "is unreachable .*ServiceUnavailable"),
        (500, "InternalError", Unavailable, "is unreachable .*InternalError"),
        (403, "AccessDenied", ConfigurationError, "refused Parley's credentials"),
        (403, "RequestTimeTooSkewed", ConfigurationError, "clock .*set the clock right"),
    ],
)
def test_error_answers_become_errors_that_say_what_to_do(
    store: S3Store, status: int, code: str, error: type[Exception], message: str
) -> None:
    from botocore.awsrequest import AWSResponse

    store.client.meta.events.register(
        "before-send.s3",
        lambda request, **_: AWSResponse(request.url, status, {}, _ErrorBody(code)),
    )

    with pytest.raises(error, match=f"the object store at http.*{message}"):
        store.put_bytes("a.bin", b"1")


# --- faults: a server of our own, stopped and frozen --------------------------------------------

TIMEOUT_S = 2.0


@pytest.fixture
def own_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    with S3Server() as server:
        server.create_bucket("parley-faults")
        yield server


@pytest.fixture
def fault_store(own_server: S3Server, tmp_path: Path) -> S3Store:
    return S3Store(
        "parley-faults",
        "parley",
        cache_dir=tmp_path / "cache",
        endpoint_url=own_server.endpoint_url,
        region="us-east-1",
        timeout_s=TIMEOUT_S,
    )


def test_a_stopped_store_is_unavailable_and_works_again_after_a_restart(
    own_server: S3Server, fault_store: S3Store, tmp_path: Path
) -> None:
    fault_store.put_dir(PREFIX, make_model_dir(tmp_path / "trained"))
    cached = fault_store.local_dir(PREFIX)
    own_server.stop()

    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        fault_store.put_bytes("a.bin", b"1")
    elapsed = time.monotonic() - started

    assert elapsed < TIMEOUT_S
    where = f"the object store at {own_server.endpoint_url} (bucket parley-faults) is unreachable"
    assert where in caught.value.message
    assert caught.value.details["service"] == "object store"
    for call in (lambda: fault_store.get_bytes("a.bin"), lambda: fault_store.local_dir("x/y")):
        with pytest.raises(Unavailable, match="is unreachable"):
            call()
    assert fault_store.local_dir(PREFIX) == cached  # a verified cached folder needs no store

    own_server.start()  # moto forgets its objects; the bucket is there again, empty
    fault_store.put_bytes("a.bin", b"back")
    assert fault_store.get_bytes("a.bin") == b"back"


def test_a_hung_store_is_unavailable_within_the_timeout(
    own_server: S3Server, fault_store: S3Store
) -> None:
    fault_store.put_bytes("a.bin", b"1")
    own_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="the object store at http://127.0.0.1"):
            fault_store.get_bytes("a.bin")
        elapsed = time.monotonic() - started
    finally:
        own_server.resume()

    assert elapsed < TIMEOUT_S + 0.5
    assert fault_store.get_bytes("a.bin") == b"1"


def test_two_processes_sharing_a_cache_never_move_a_placed_folder_away(
    store: S3Store, s3_settings: Settings, tmp_path: Path
) -> None:
    import threading

    store.put_dir(PREFIX, make_model_dir(tmp_path / "trained"))
    # two gateway processes on one machine: one cache dir, no lock in common but the file's
    first, second = S3Store.from_settings(s3_settings), S3Store.from_settings(s3_settings)
    downloading, go_on = threading.Event(), threading.Event()

    def stall(params: dict[str, str], **_: object) -> None:
        if not params["Key"].endswith(MANIFEST_NAME) and not downloading.is_set():
            downloading.set()
            go_on.wait(timeout=30)

    second.client.meta.events.register("before-parameter-build.s3.GetObject", stall)
    placed: dict[str, tuple[Path, int]] = {}

    def load(name: str, which: S3Store) -> None:
        folder = which.local_dir(PREFIX)
        placed[name] = (folder, folder.stat().st_ino)

    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(load, "second", second)  # downloading, stalled mid-way
        assert downloading.wait(timeout=30)
        fast = pool.submit(load, "first", first)  # the first process wants it too
        time.sleep(1.0)  # unlocked, it would have downloaded and placed its own copy by now
        go_on.set()
        slow.result(timeout=30)
        fast.result(timeout=30)

    folder, inode = placed["first"]
    assert folder == placed["second"][0]
    # the folder the first process was handed is still the one on disk (not moved away and
    # replaced by the second's download while it was loading it)
    assert folder.stat().st_ino == inode
    assert files_under(folder) == files_under(tmp_path / "trained")


@pytest.mark.parametrize(
    ("raised", "message"),
    [
        ("partial", "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        ("none", "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        ("region", "set PARLEY_STORAGE__REGION"),
    ],
)
def test_missing_credentials_or_region_say_what_to_set(
    store: S3Store, raised: str, message: str
) -> None:
    from botocore.exceptions import NoCredentialsError, NoRegionError, PartialCredentialsError

    error = {
        "partial": PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
        "none": NoCredentialsError(),
        "region": NoRegionError(),
    }[raised]

    def fail(**_: object) -> None:
        raise error

    store.client.meta.events.register("before-call.s3", fail)

    with pytest.raises(ConfigurationError, match=message):
        store.put_bytes("a.bin", b"1")
