"""Secrets at rest: channel secrets and action headers, encrypted with ``PARLEY_SECRET_KEY``.

The key: ``PARLEY_SECRET_KEY`` holds one or more keys, comma-separated; the first encrypts,
every one decrypts (rotation: put the new key first, keep the old one after it, run
``parley secrets rotate``, then drop the old one). A key is any string of at least
``MIN_KEY_CHARS`` characters; the Fernet key is derived from it with HKDF-SHA256 (no salt,
info ``parley secrets at rest v1``), so use a long random one, e.g. ``python -c "import
secrets; print(secrets.token_urlsafe(32))"``. Lose it and the secrets are gone with it.

The format: a stored secret is the string ``enc:v1:<Fernet token>`` (AES-128-CBC with
HMAC-SHA256). Where secrets live — the only places the marker means anything:

- ``channels.config``: the connector's ``SecretStr`` fields (top-level values); a non-secret
  value that starts with the marker is refused when stored (``seal_config``);
- ``bots.definition`` and ``bot_versions.definition``: the values of ``action_server.headers``
  and of ``actions.<name>.headers`` (``DEFINITION_SECRETS``). The API shows them as stored
  (encrypted): they are write-only, and a definition sent back unchanged keeps them;
- ``models.params`` of remote models (``core.remote_models``): the values of ``headers``
  (the API shows their names only).

Without a key, secrets are stored in clear (the embedded default on a laptop) and the
gateway logs ``secrets.unencrypted`` once; once a row holds an encrypted value, the gateway
refuses to start without a key that decrypts every one (``open_box``).
"""

from __future__ import annotations

import base64
import copy
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar, get_args

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, SecretStr
from sqlalchemy import Engine, String, cast, event, select
from sqlalchemy.orm import Session

from core.db import session_scope
from core.errors import ConfigurationError, InvalidInput
from core.logging import log_event
from core.remote_models import BACKEND as REMOTE_BACKEND
from core.settings import Settings
from core.tables import Bot, BotVersion, Channel, Model

__all__ = [
    "MARKER",
    "SecretBox",
    "check",
    "decrypt_value",
    "encrypt_value",
    "has_encrypted_rows",
    "is_encrypted",
    "open_box",
    "open_config",
    "rotate",
    "seal_config",
    "seal_definition",
    "secret_fields",
]

MARKER = "enc:v1:"
MIN_KEY_CHARS = 16
HKDF_INFO = b"parley secrets at rest v1"
ENV = "PARLEY_SECRET_KEY"
DEFINITION_SECRETS = ("action_server.headers.*", "actions.*.headers.*")
ROTATE_HINT = (
    f"set {ENV} to the key that encrypted them (to rotate: {ENV}=<new key>,<old key>, then "
    "`parley secrets rotate`)"
)


def _fernet_key(secret: str) -> bytes:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(
        secret.encode()
    )
    return base64.urlsafe_b64encode(derived)


def is_encrypted(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(MARKER)


class SecretBox:
    """Encrypts with the first key, decrypts with any; no keys: secrets stay in clear."""

    def __init__(self, keys: Sequence[str] = ()) -> None:
        self._fernet = MultiFernet([Fernet(_fernet_key(k)) for k in keys]) if keys else None

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        raw = settings.secret_key.get_secret_value() if settings.secret_key else ""
        keys = [k.strip() for k in raw.split(",") if k.strip()]
        if any(len(k) < MIN_KEY_CHARS for k in keys):
            raise ConfigurationError(
                f"{ENV} holds a key shorter than {MIN_KEY_CHARS} characters; use long random "
                'keys (python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    def encrypt(self, plaintext: str) -> str:
        if self._fernet is None:
            raise ConfigurationError(f"no key to encrypt secrets with; set {ENV}")
        return MARKER + self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, value: str) -> str:
        """The plaintext of a stored value (a value in clear comes back as it is)."""
        if not is_encrypted(value):
            return value
        if self._fernet is None:
            raise ConfigurationError(f"secrets in the database are encrypted; {ROTATE_HINT}")
        try:
            return self._fernet.decrypt(value[len(MARKER) :].encode()).decode()
        except InvalidToken as e:
            raise ConfigurationError(
                f"a stored secret does not decrypt with any key in {ENV}; {ROTATE_HINT}"
            ) from e

    def can_decrypt(self, value: str) -> bool:
        try:
            self.decrypt(value)
        except ConfigurationError:
            return False
        return True

    def rotated(self, value: str) -> str:
        """``value`` encrypted with the first key."""
        if self._fernet is None:
            raise ConfigurationError(f"no key to rotate to; set {ENV}")
        try:
            return MARKER + self._fernet.rotate(value[len(MARKER) :].encode()).decode()
        except InvalidToken as e:
            raise ConfigurationError(
                f"a stored secret does not decrypt with any key in {ENV}; {ROTATE_HINT}"
            ) from e


def encrypt_value(box: SecretBox, value: str, *, where: str = "a secret") -> str:
    """``value`` as it is stored: encrypted when the box has a key, else in clear. A value that
    already carries the marker is kept if this server can decrypt it (a definition sent back
    as it was read) and refused otherwise."""
    if is_encrypted(value):
        if box.enabled and box.can_decrypt(value):
            return value
        raise InvalidInput(
            f"{where} starts with {MARKER!r}, which marks a secret this server encrypted, but "
            "it cannot be decrypted here; send the secret in clear"
        )
    return box.encrypt(value) if box.enabled else value


def decrypt_value(box: SecretBox, value: str) -> str:
    """The plaintext of a stored value; ``ConfigurationError`` naming the key when it cannot
    be decrypted (never garbage)."""
    return box.decrypt(value)


# --- where secrets live -----------------------------------------------------------------------


def secret_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of a pydantic model typed ``SecretStr`` (or ``SecretStr | None``)."""
    return frozenset(
        name
        for name, info in model.model_fields.items()
        if info.annotation is SecretStr or SecretStr in get_args(info.annotation)
    )


def seal_config(box: SecretBox, config: dict[str, Any], secrets: Iterable[str]) -> dict[str, Any]:
    """A channel config as stored: the ``secrets`` fields encrypted."""
    names = set(secrets)
    out = {}
    for name, value in config.items():
        if name in names and isinstance(value, str):
            out[name] = encrypt_value(box, value, where=f"config.{name}")
        elif is_encrypted(value):
            raise InvalidInput(f"config.{name} may not start with {MARKER!r}")
        else:
            out[name] = value
    return out


def open_config(box: SecretBox, stored: dict[str, Any]) -> dict[str, Any]:
    """A stored channel config with its secrets decrypted."""
    return {k: box.decrypt(v) if is_encrypted(v) else v for k, v in stored.items()}


def _header_maps(definition: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """The ``headers`` mappings of a bot definition that hold secrets, with their paths."""
    if not isinstance(definition, dict):
        return
    server = definition.get("action_server")
    if isinstance(server, dict) and isinstance(server.get("headers"), dict):
        yield "action_server.headers", server["headers"]
    actions = definition.get("actions")
    if isinstance(actions, dict):
        for name, action in actions.items():
            if isinstance(action, dict) and isinstance(action.get("headers"), dict):
                yield f"actions.{name}.headers", action["headers"]


def seal_definition(box: SecretBox, definition: dict[str, Any]) -> dict[str, Any]:
    """A bot definition as stored: its header values encrypted (``DEFINITION_SECRETS``).
    Returns ``definition`` itself when nothing changes, else a changed copy."""
    changes = {
        (path, key): sealed
        for path, headers in _header_maps(definition)
        for key, value in headers.items()
        if isinstance(value, str)
        and (sealed := encrypt_value(box, value, where=f"{path}.{key}")) != value
    }
    if not changes:
        return definition
    out = copy.deepcopy(definition)
    for path, headers in _header_maps(out):
        for key in headers:
            if (path, key) in changes:
                headers[key] = changes[(path, key)]
    return out


def _rotate_definition(box: SecretBox, definition: dict[str, Any]) -> tuple[dict[str, Any], int]:
    out, count = copy.deepcopy(definition), 0
    for _, headers in _header_maps(out):
        for key, value in headers.items():
            if isinstance(value, str):
                headers[key] = box.rotated(value) if is_encrypted(value) else box.encrypt(value)
                count += 1
    return out, count


def _stored_secrets(session: Session) -> Iterator[str]:
    """Every encrypted value in the database (rows are pre-filtered in SQL)."""
    for (config,) in session.execute(
        select(Channel.config).where(cast(Channel.config, String).like(f"%{MARKER}%"))
    ):
        yield from (v for v in (config or {}).values() if is_encrypted(v))
    for table in (Bot, BotVersion):
        for (definition,) in session.execute(
            select(table.definition).where(cast(table.definition, String).like(f"%{MARKER}%"))
        ):
            for _, headers in _header_maps(definition):
                yield from (v for v in headers.values() if is_encrypted(v))
    for (params,) in session.execute(_remote_models(Model.params).where(_holds(MARKER))):
        yield from (v for v in ((params or {}).get("headers") or {}).values() if is_encrypted(v))


def _remote_models(*what: Any) -> Any:
    return select(*what).where(Model.backend == REMOTE_BACKEND)


def _holds(text: str) -> Any:
    return cast(Model.params, String).like(f"%{text}%")


def has_encrypted_rows(session: Session) -> bool:
    return next(_stored_secrets(session), None) is not None


def check(session: Session, box: SecretBox) -> int:
    """How many encrypted values are stored; ``ConfigurationError`` (saying what to set)
    unless ``box`` decrypts every one."""
    count = 0
    for value in _stored_secrets(session):
        box.decrypt(value)
        count += 1
    return count


def rotate(
    session: Session,
    box: SecretBox,
    *,
    channel_secrets: Callable[[str], Iterable[str]],
) -> int:
    """Encrypt every stored secret with the first key: those encrypted with an older key and
    those still in clear (``channel_secrets(type)`` names a channel type's secret fields).
    Returns how many values were written."""
    if not box.enabled:
        raise ConfigurationError(f"no key to rotate to; set {ENV}")
    check(session, box)  # nothing is rewritten unless every value decrypts
    count = 0
    for channel in session.scalars(select(Channel)):
        config = dict(channel.config or {})
        names = set(channel_secrets(channel.type)) | {
            k for k, v in config.items() if is_encrypted(v)
        }
        for name in names & set(config):
            value = config[name]
            if isinstance(value, str):
                config[name] = box.rotated(value) if is_encrypted(value) else box.encrypt(value)
                count += 1
        channel.config = config
    count += _rotate_definitions(session, box, Bot) + _rotate_definitions(session, box, BotVersion)
    for model in session.scalars(_remote_models(Model).where(_holds("headers"))):
        params = copy.deepcopy(model.params)
        headers = params.get("headers") or {}
        for name, value in headers.items():
            headers[name] = box.rotated(value) if is_encrypted(value) else box.encrypt(value)
            count += 1
        model.params = params  # a new dict: the JSON column is written
    session.flush()
    return count


_Definitions = TypeVar("_Definitions", Bot, BotVersion)


def _rotate_definitions(session: Session, box: SecretBox, table: type[_Definitions]) -> int:
    """Rotate or encrypt the header secrets of every ``table`` row whose definition has headers."""
    count = 0
    rows = session.scalars(select(table).where(cast(table.definition, String).like("%headers%")))
    for row in rows:
        row.definition, n = _rotate_definition(box, row.definition)
        count += n
    return count


# --- the gateway's box ------------------------------------------------------------------------

_boxes: dict[int, SecretBox] = {}  # by id(engine): bot definitions are sealed on flush
_warned: set[str] = set()


def _seal_bot_row(_mapper: Any, connection: Any, target: Any) -> None:
    box = _boxes.get(id(connection.engine))
    if box is not None and isinstance(target.definition, dict):
        sealed = seal_definition(box, target.definition)
        if sealed is not target.definition:
            target.definition = sealed


def _listen() -> None:
    for table in (Bot, BotVersion):
        for name in ("before_insert", "before_update"):
            if not event.contains(table, name, _seal_bot_row):
                event.listen(table, name, _seal_bot_row)


def open_box(settings: Settings, engine: Engine) -> SecretBox:
    """The gateway's box, after checking that it decrypts every stored secret
    (``ConfigurationError`` naming ``PARLEY_SECRET_KEY`` otherwise); bot definitions written
    through ``engine`` are sealed from now on."""
    box = SecretBox.from_settings(settings)
    with session_scope(engine) as session:
        check(session, box)
    if not box.enabled and settings.database_url not in _warned:
        _warned.add(settings.database_url)
        log_event(
            "secrets.unencrypted",
            level=logging.WARNING,
            message=f"channel secrets and action headers are stored in clear; set {ENV} to "
            "encrypt them",
        )
    _boxes[id(engine)] = box
    _listen()
    return box
