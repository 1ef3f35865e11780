"""The ArtifactStore contract, run on LocalStore and on S3Store (an S3-compatible server):
artifacts stay below the root whatever key a caller passes, folders round-trip, deletes stay
inside their prefix, sizes add up. LocalStore-only checks (its folder on disk) use
``local_store``; S3-only behaviour (manifests, the cache, faults) is in test_s3_store.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from core.errors import InvalidInput, NotFound
from core.storage import ArtifactStore, LocalStore, check_key, sha256_dir, store_for


@pytest.fixture
def root(tmp_path: Path) -> Path:
    # two levels down, so that `..` keys would land inside tmp_path, never elsewhere
    return tmp_path / "data" / "store"


@pytest.fixture
def local_store(root: Path) -> LocalStore:
    return LocalStore(root)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest, root: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(root)
    return store_for(request.getfixturevalue("s3_settings"))


def make_model_dir(path: Path) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "head.safetensors").write_bytes(b"\x00\x01weights")
    (path / "config.json").write_text('{"labels": ["a", "b"]}')
    (path / "sub" / "vocab.txt").write_text("hello\nworld\n")
    return path


def files_under(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_put_and_get_bytes(store: ArtifactStore) -> None:
    store.put_bytes("tenants/t1/datasets/d1/source.csv", b"old")
    store.put_bytes("tenants/t1/datasets/d1/source.csv", b"text,label\nhi,greet\n")

    assert store.get_bytes("tenants/t1/datasets/d1/source.csv") == b"text,label\nhi,greet\n"
    assert store.exists("tenants/t1/datasets/d1/source.csv")
    assert not store.exists("tenants/t1/datasets/d1/other.csv")


def test_put_bytes_replaces_and_leaves_no_temp_files(local_store: LocalStore, root: Path) -> None:
    local_store.put_bytes("a/b.bin", b"one")
    local_store.put_bytes("a/b.bin", b"two")

    assert local_store.get_bytes("a/b.bin") == b"two"
    assert files_under(root) == {"a/b.bin": b"two"}


def test_missing_key_is_not_found(store: ArtifactStore) -> None:
    with pytest.raises(NotFound, match="tenants/t1/models/m1/head.safetensors"):
        store.get_bytes("tenants/t1/models/m1/head.safetensors")
    with pytest.raises(NotFound, match="tenants/t1/models/m1"):
        store.local_dir("tenants/t1/models/m1")


def test_put_dir_and_local_dir_round_trip(store: ArtifactStore, tmp_path: Path) -> None:
    source = make_model_dir(tmp_path / "trained")

    store.put_dir("tenants/t1/models/m1", source)
    local = store.local_dir("tenants/t1/models/m1")

    assert files_under(local) == files_under(source)
    assert sha256_dir(local) == sha256_dir(source)
    assert store.get_bytes("tenants/t1/models/m1/sub/vocab.txt") == b"hello\nworld\n"


def test_put_dir_replaces_what_was_there(store: ArtifactStore, tmp_path: Path) -> None:
    store.put_dir("m", make_model_dir(tmp_path / "v1"))
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "only.bin").write_bytes(b"v2")

    store.put_dir("m", v2)

    assert files_under(store.local_dir("m")) == {"only.bin": b"v2"}


def test_put_dir_leaves_no_staging_folders(
    local_store: LocalStore, root: Path, tmp_path: Path
) -> None:
    local_store.put_dir("tenants/t1/models/m1", make_model_dir(tmp_path / "trained"))

    assert [p.name for p in root.iterdir()] == ["tenants"]


def test_delete_prefix_removes_a_folder_and_nothing_else(store: ArtifactStore) -> None:
    store.put_bytes("tenants/t1/models/m1/a.bin", b"1")
    store.put_bytes("tenants/t1/models/m1/b/c.bin", b"2")
    store.put_bytes("tenants/t1/models/m10/a.bin", b"3")
    store.put_bytes("tenants/t2/models/m1/a.bin", b"4")

    store.delete_prefix("tenants/t1/models/m1")

    assert not store.exists("tenants/t1/models/m1")
    assert store.get_bytes("tenants/t1/models/m10/a.bin") == b"3"
    assert store.get_bytes("tenants/t2/models/m1/a.bin") == b"4"


def test_delete_prefix_removes_a_single_file_and_ignores_a_missing_one(
    store: ArtifactStore,
) -> None:
    store.put_bytes("x/file.bin", b"1")

    store.delete_prefix("x/file.bin")
    store.delete_prefix("x/never-written")

    assert not store.exists("x/file.bin")


TRAVERSAL_KEYS = ["../x", "a/../../b", "..", "a/..", "..\\x", "a\\b", "a\x00b", ""]


@pytest.mark.parametrize("key", [*TRAVERSAL_KEYS, "/etc/passwd"])
def test_check_key_refuses_escaping_keys(key: str) -> None:
    with pytest.raises(InvalidInput, match="invalid storage key"):
        check_key(key)


@pytest.mark.parametrize("key", ["a", "tenants/t1/models/m1/head.safetensors", "a.b/c-d_e"])
def test_check_key_accepts_ordinary_keys(key: str) -> None:
    assert check_key(key) == key


METHODS: dict[str, Callable[[ArtifactStore, str, Path], object]] = {
    "put_bytes": lambda s, k, src: s.put_bytes(k, b"pwned"),
    "put_dir": lambda s, k, src: s.put_dir(k, src),
    "delete_prefix": lambda s, k, src: s.delete_prefix(k),
    "get_bytes": lambda s, k, src: s.get_bytes(k),
    "local_dir": lambda s, k, src: s.local_dir(k),
    "exists": lambda s, k, src: s.exists(k),
    "size_of": lambda s, k, src: s.size_of(k),
}


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("key", [*TRAVERSAL_KEYS, "ABSOLUTE"])
def test_escaping_keys_are_refused_and_nothing_outside_the_root_changes(
    store: ArtifactStore, tmp_path: Path, key: str, method: str
) -> None:
    source = make_model_dir(tmp_path / "source")
    victim = tmp_path / "data" / "victim"
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("keep")
    if key == "ABSOLUTE":  # an absolute key aimed at a folder we own, not at the real /etc
        key = str(victim / "keep.txt")
    before = files_under(tmp_path)

    with pytest.raises(InvalidInput, match="invalid storage key"):
        METHODS[method](store, key, source)

    assert files_under(tmp_path) == before


@pytest.mark.parametrize("method", ["get_bytes", "exists", "local_dir"])
def test_reading_etc_passwd_is_refused(store: ArtifactStore, method: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        METHODS[method](store, "/etc/passwd", tmp_path)


@pytest.mark.parametrize("key", [".", "./", "./."])
def test_dot_keys_are_refused_and_cannot_delete_the_store(store: ArtifactStore, key: str) -> None:
    store.put_bytes("tenants/t1/models/m1/head.safetensors", b"weights")

    with pytest.raises(InvalidInput, match="invalid storage key"):
        store.delete_prefix(key)

    assert store.get_bytes("tenants/t1/models/m1/head.safetensors") == b"weights"


def test_exists_is_true_for_a_folder_with_files(store: ArtifactStore, tmp_path: Path) -> None:
    store.put_dir("tenants/t1/models/m1", make_model_dir(tmp_path / "trained"))

    assert store.exists("tenants/t1/models/m1")
    assert store.exists("tenants/t1/models/m1/sub/vocab.txt")
    assert not store.exists("tenants/t1/models/m")
    assert not store.exists("tenants/t1/models/m2")


def test_size_of_sums_the_bytes_at_and_below_a_prefix(store: ArtifactStore, tmp_path: Path) -> None:
    source = make_model_dir(tmp_path / "trained")
    folder_bytes = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    store.put_dir("tenants/t1/models/m1", source)
    store.put_bytes("tenants/t1/datasets/d1/source.csv", b"12345")
    store.put_bytes("tenants/t10/datasets/d1/source.csv", b"not t1's")

    assert store.size_of("tenants/t1") == folder_bytes + 5
    assert store.size_of("tenants/t1/models/m1") == folder_bytes
    assert store.size_of("tenants/t1/datasets/d1/source.csv") == 5
    assert store.size_of("tenants/t2") == 0


def test_sha256_dir_changes_when_one_byte_changes(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path / "m")
    digest = sha256_dir(model)
    assert sha256_dir(model) == digest

    data = bytearray((model / "head.safetensors").read_bytes())
    data[-1] ^= 0x01
    (model / "head.safetensors").write_bytes(bytes(data))

    assert sha256_dir(model) != digest


def test_sha256_dir_covers_file_names_and_added_files(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path / "m")
    digest = sha256_dir(model)

    (model / "config.json").rename(model / "config2.json")
    renamed = sha256_dir(model)
    assert renamed != digest

    (model / "extra.bin").write_bytes(b"")
    assert sha256_dir(model) != renamed


def test_sha256_dir_does_not_depend_on_where_the_folder_is(tmp_path: Path) -> None:
    assert sha256_dir(make_model_dir(tmp_path / "one")) == sha256_dir(
        make_model_dir(tmp_path / "two" / "deeper")
    )
