"""SMS and WhatsApp through Twilio's Programmable Messaging.

A ``from_number`` written ``whatsapp:+1…`` makes the channel WhatsApp; a plain number (or a
short code) makes it SMS/MMS. Both speak the same webhook and API.

Inbound
    ``X-Twilio-Signature`` is base64(HMAC-SHA1(auth_token, URL + every POST parameter's name and
    value, sorted by name)) over the full URL Twilio called, query string included. Twilio's
    own validators accept the URL with and without its port; so does this one, and it also
    tries the channel's public ``webhook_url`` (with the request's query) in case a proxy
    changed the URL the gateway saw. Messages: ``Body`` as text, ``MessageSid`` as
    ``message_id``, images among ``MediaUrl0..N`` / ``MediaContentType0..N`` (other media, such
    as voice notes, are logged and left out), and a WhatsApp quick reply button's
    ``ButtonPayload`` as payload. Status callbacks and other shapes are ``InvalidInput``.
    Twilio is answered with an empty TwiML ``<Response/>``: replies go out through the API.

Outbound
    ``POST /2010-04-01/Accounts/{sid}/Messages.json`` with ``To``, ``From``, ``Body`` and, for an
    image, ``MediaUrl``; basic auth with the account SID and auth token. Buttons, quick replies
    and cards degrade to numbered text (``as_text``); a body longer than Twilio's 1,600
    characters goes out in several messages.

Media
    Fetched with basic auth from Twilio's API host only (credentials never go elsewhere),
    following Twilio's redirect to its media store, within ``max_bytes``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from typing import Any, ClassVar, NoReturn
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import ConfigDict, Field, SecretStr

from connectors._download import download
from connectors.base import (
    Capabilities,
    Connector,
    ConnectorConfig,
    InboundMessage,
    Media,
    OutboundMessage,
    WebhookReply,
    WebhookRequest,
    WebhookResult,
    as_text,
)
from connectors.delivery import request_with_retries
from connectors.registry import connectors
from core.errors import InvalidInput, Unauthenticated
from core.logging import log_event

__all__ = ["TwilioConfig", "TwilioConnector", "signature"]

SIGNATURE_HEADER = "X-Twilio-Signature"
BODY_MAX = 1600  # characters in one message's Body
MEDIA_MAX = 10  # media in one inbound message
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
_DEFAULT_PORTS = {"https": 443, "http": 80}


class TwilioConfig(ConnectorConfig):
    """The account's SID and auth token (Console > Account info) and the number customers
    write to: ``+15551234567`` for SMS, ``whatsapp:+15551234567`` for WhatsApp."""

    model_config = ConfigDict(hide_input_in_errors=True)  # errors never echo a secret

    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: SecretStr
    from_number: str = Field(pattern=r"^(whatsapp:)?\+?[0-9]{3,15}$")


def signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """Twilio's ``X-Twilio-Signature`` for a POST of form ``params`` to ``url``."""
    signed = url + "".join(name + value for name, value in sorted(params))
    mac = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def _with_and_without_port(url: str) -> set[str]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    variants = {url, urlunsplit(parts._replace(netloc=prefix + host))}
    if port:
        variants.add(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{port}")))
    return variants


@connectors.register("twilio")
class TwilioConnector(Connector[TwilioConfig]):
    """Twilio SMS and WhatsApp (see the module docstring)."""

    type: ClassVar[str] = "twilio"
    Config = TwilioConfig
    capabilities: ClassVar[Capabilities] = Capabilities(images=True, inbound_images=True)
    api_base: ClassVar[str] = "https://api.twilio.com"
    title: ClassVar[str] = "SMS and WhatsApp (Twilio)"
    docs_url: ClassVar[str | None] = "https://www.twilio.com/docs/messaging/guides/webhook-request"
    setup_steps: ClassVar[tuple[str, ...]] = (
        "In the Twilio Console (Account info), copy the Account SID into account_sid and the "
        "Auth Token into auth_token.",
        "Put the number customers write to in from_number: +15551234567 for SMS, or "
        "whatsapp:+15551234567 for WhatsApp (a WhatsApp sender or the WhatsApp Sandbox).",
        "Save the channel, then under Phone Numbers > Manage > Active numbers (or the WhatsApp "
        "sender's or Sandbox's settings) set 'A message comes in' to Webhook, {webhook_url}, "
        "HTTP POST.",
        "Send a message to the number.",
    )

    @property
    def whatsapp(self) -> bool:
        return self.config.from_number.startswith("whatsapp:")

    # -- inbound --

    def verify(self, request: WebhookRequest) -> None:
        given = request.header(SIGNATURE_HEADER)
        if not given:
            self._refuse(f"the {SIGNATURE_HEADER} header is missing")
        try:
            params = _form(request.body)
        except InvalidInput:
            self._refuse("the body is not a URL-encoded form")
        token = self.config.auth_token.get_secret_value()
        for url in self._signed_urls(request):
            if hmac.compare_digest(signature(token, url, params).encode(), given.encode()):
                return
        self._refuse(
            f"the {SIGNATURE_HEADER} header does not match this channel's auth_token and "
            "webhook URL; check the auth_token and that Twilio calls exactly the webhook_url"
        )

    def _refuse(self, reason: str) -> NoReturn:
        log_event("connector.twilio.verify_failed", reason=reason.split(";")[0])
        raise Unauthenticated(f"{reason}; only Twilio may call this webhook")

    def _signed_urls(self, request: WebhookRequest) -> set[str]:
        """The URLs Twilio may have signed: the one the gateway saw, and the channel's public
        ``webhook_url`` with the same query string."""
        public = urlsplit(self.webhook_url)
        if not public.query:
            public = public._replace(query=urlsplit(request.url).query)
        return _with_and_without_port(request.url) | _with_and_without_port(urlunsplit(public))

    def parse(self, request: WebhookRequest) -> WebhookResult:
        form = dict(_form(request.body))
        sid = form.get("MessageSid") or form.get("SmsMessageSid")
        if "Body" not in form and "NumMedia" not in form:
            status = form.get("MessageStatus") or form.get("SmsStatus")
            raise InvalidInput(
                f"a Twilio {'status callback (' + status + ')' if status else 'request'} with "
                "no message in it; only incoming messages are handled here"
            )
        if not sid or not form.get("From"):
            raise InvalidInput("a Twilio message without MessageSid or From")
        media = self._media(form)
        payload = form.get("ButtonPayload") or None
        text = form.get("Body") or form.get("ButtonText") or ""
        if not text and not media and payload is None:
            raise InvalidInput(
                f"Twilio message {sid} has no text, image or button press (a voice note, a "
                "location, a file?); nothing to answer"
            )
        metadata: dict[str, Any] = {"channel": "whatsapp" if self.whatsapp else "sms"}
        if form.get("ProfileName"):
            metadata["name"] = form["ProfileName"]
        message = InboundMessage(
            sender_id=form["From"],
            text=text,
            payload=payload,
            media=media,
            message_id=sid,
            metadata=metadata,
        )
        return WebhookResult(
            messages=[message], reply=WebhookReply(body=EMPTY_TWIML, media_type="text/xml")
        )

    def _media(self, form: dict[str, str]) -> tuple[Media, ...]:
        try:
            count = min(int(form.get("NumMedia") or 0), MEDIA_MAX)
        except ValueError as e:
            raise InvalidInput(f"NumMedia {form.get('NumMedia')!r} is not a number") from e
        media, skipped = [], []
        for i in range(count):
            url, kind = form.get(f"MediaUrl{i}"), form.get(f"MediaContentType{i}") or ""
            if url and kind.startswith("image/"):
                media.append(Media(url=url, media_type=kind))
            elif url:
                skipped.append(kind or "unknown")
        if skipped:
            log_event("connector.twilio.media_skipped", content_types=skipped)
        return tuple(media)

    # -- media --

    async def fetch(self, media: Media, *, max_bytes: int) -> bytes:
        url = media.url or ""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme != "https" or not (host == "twilio.com" or host.endswith(".twilio.com")):
            raise InvalidInput(
                "Twilio media is fetched from Twilio's API over HTTPS only; "
                f"refusing a media URL on {host or 'no host'!r}"
            )
        return await download(
            self.client,
            url,
            max_bytes=max_bytes,
            what="the Twilio media",
            auth=(self.config.account_sid, self.config.auth_token.get_secret_value()),
            follow_redirects=True,
        )

    # -- outbound --

    async def send(
        self, recipient: str, message: OutboundMessage, metadata: dict[str, Any]
    ) -> None:
        to = recipient
        if self.whatsapp and not to.startswith("whatsapp:"):
            to = "whatsapp:" + to
        image = message.image
        text = as_text(message.model_copy(update={"image": None}))
        if not text and not image:
            log_event("connector.twilio.nothing_to_send", kinds=sorted(message.to_wire()))
            return
        parts = [text[i : i + BODY_MAX] for i in range(0, len(text), BODY_MAX)] or [""]
        url = f"{self.api_base}/2010-04-01/Accounts/{self.config.account_sid}/Messages.json"
        for n, body in enumerate(parts):
            form = {"To": to, "From": self.config.from_number}
            if body:
                form["Body"] = body
            if image and n == 0:
                form["MediaUrl"] = str(image)
            await request_with_retries(
                self.client,
                "POST",
                url,
                what="twilio message",
                sleep=self._sleep,
                data=form,
                auth=(self.config.account_sid, self.config.auth_token.get_secret_value()),
            )


def _form(body: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidInput("the body is not a URL-encoded form (Twilio posts one)") from e
