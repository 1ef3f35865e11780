"""Twilio as its Programmable Messaging webhook and API behave: form-encoded webhooks with the
parameters of Twilio's documented incoming-message examples (SMS, MMS, a WhatsApp quick reply
button), signed with ``X-Twilio-Signature`` the way Twilio's docs describe it, and a fake
``api.twilio.com``: the Messages API (basic auth) and media URLs that redirect to the media
store, which refuses requests carrying credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import zlib
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx

import connectors.twilio  # noqa: F401 (registers the connector this kit drives)
from connectors.base import Connector, WebhookRequest
from tests.connectors.kits import register

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "parley-test-auth-token-5f3c9a"
FROM_NUMBER = "+15005550006"
MEDIA_HOST = "s3-external-1.amazonaws.com"
API = "https://api.twilio.com/2010-04-01"


def sid(prefix: str, seed: str) -> str:
    """A Twilio SID (two letters and 32 hex digits) that is stable for ``seed``."""
    return prefix + hashlib.md5(seed.encode()).hexdigest()


def phone(sender: str) -> str:
    """A kit's ``u1`` as an E.164 number; numbers (and ``whatsapp:`` ones) stay as they are."""
    if sender.startswith(("+", "whatsapp:")):
        return sender
    return f"+1555{zlib.crc32(sender.encode()) % 10_000_000:07d}"


def twilio_signature(auth_token: str, url: str, form: dict[str, str]) -> str:
    """As Twilio's security docs describe it: the URL, then each POST parameter's name and
    value, sorted by name, HMAC-SHA1 with the auth token, base64."""
    data = url
    for name in sorted(form):
        data += name + form[name]
    digest = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), "sha1").digest()
    return base64.b64encode(digest).decode("ascii")


def inbound(sender: str, message_id: str, body: str, **extra: str) -> dict[str, str]:
    """An incoming message's parameters, as in Twilio's messaging webhook examples."""
    message_sid = sid("SM", message_id)
    return {
        "ToCountry": "US",
        "ToState": "CA",
        "SmsMessageSid": message_sid,
        "NumMedia": "0",
        "ToCity": "SAN FRANCISCO",
        "FromZip": "94105",
        "SmsSid": message_sid,
        "FromState": "CA",
        "SmsStatus": "received",
        "FromCity": "SAN FRANCISCO",
        "Body": body,
        "FromCountry": "US",
        "To": FROM_NUMBER,
        "ToZip": "94105",
        "NumSegments": "1",
        "MessageSid": message_sid,
        "AccountSid": ACCOUNT_SID,
        "From": phone(sender),
        "ApiVersion": "2010-04-01",
        **extra,
    }


class TwilioKit:
    type = "twilio"
    secret_fields = ("auth_token",)

    def config(self) -> dict[str, Any]:
        return {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM_NUMBER}

    def signed(
        self,
        connector: Connector[Any],
        form: dict[str, str],
        *,
        url: str | None = None,
        token: str = AUTH_TOKEN,
    ) -> WebhookRequest:
        """A webhook POST of ``form`` as Twilio makes it, signed for ``url`` (default: the
        channel's webhook URL; its query string, if any, becomes the request's query)."""
        url = url or connector.webhook_url
        headers = {
            "content-type": "application/x-www-form-urlencoded",
            "x-twilio-signature": twilio_signature(token, url, form),
            "i-twilio-idempotency-token": sid("", json.dumps(form, sort_keys=True)),
            "user-agent": "TwilioProxy/1.1",
        }
        query = dict(parse_qsl(httpx.URL(url).query.decode()))
        return WebhookRequest("POST", url, headers, query, urlencode(form).encode())

    def text_webhook(
        self, connector: Connector[Any], text: str, *, sender: str, message_id: str
    ) -> WebhookRequest:
        return self.signed(connector, inbound(sender, message_id, text))

    def button_webhook(
        self, connector: Connector[Any], payload: str, *, sender: str, message_id: str
    ) -> WebhookRequest:
        title = "Track my order"  # WhatsApp: Body and ButtonText carry the title
        form = inbound(sender, message_id, title, ButtonText=title, ButtonPayload=payload)
        return self.signed(connector, form)

    def image_webhook(
        self, connector: Connector[Any], *, sender: str, message_id: str
    ) -> WebhookRequest:
        message_sid = sid("MM", message_id)
        form = inbound(
            sender,
            message_id,
            "",
            MessageSid=message_sid,
            SmsMessageSid=message_sid,
            SmsSid=message_sid,
            NumMedia="1",
            MediaContentType0="image/jpeg",
            MediaUrl0=f"{API}/Accounts/{ACCOUNT_SID}/Messages/{message_sid}/Media/"
            + sid("ME", message_id),
        )
        return self.signed(connector, form)

    def unknown_webhook(self, connector: Connector[Any]) -> WebhookRequest:
        status = {  # a status callback for a message Parley sent
            "SmsSid": sid("SM", "out"),
            "SmsStatus": "delivered",
            "MessageStatus": "delivered",
            "To": "+15558675310",
            "MessageSid": sid("SM", "out"),
            "AccountSid": ACCOUNT_SID,
            "From": FROM_NUMBER,
            "ApiVersion": "2010-04-01",
        }
        return self.signed(connector, status)

    def tamper(self, request: WebhookRequest) -> WebhookRequest:
        body = request.body.replace(b"Body=", b"Body=PWNED+", 1)
        if body == request.body:
            body += b"&Injected=1"
        return WebhookRequest(request.method, request.url, request.headers, request.query, body)

    def stale(self, connector: Connector[Any], text: str) -> WebhookRequest | None:
        return None  # Twilio stamps no timestamp to check

    def provider(self, image: bytes, calls: list[httpx.Request]) -> httpx.MockTransport:
        expected_auth = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()

        def handle(request: httpx.Request) -> httpx.Response:
            calls.append(request)
            url = request.url
            if url.host == MEDIA_HOST:  # the media store: a signed URL, no credentials
                if "authorization" in request.headers:
                    return httpx.Response(400, text="<Error>Only one auth mechanism</Error>")
                return httpx.Response(200, content=image, headers={"content-type": "image/jpeg"})
            if url.host != "api.twilio.com":
                return httpx.Response(404)
            if request.headers.get("authorization") != expected_auth:
                return httpx.Response(
                    401, json={"code": 20003, "message": "Authenticate", "status": 401}
                )
            if "/Media/" in url.path and request.method == "GET":
                where = (
                    f"https://{MEDIA_HOST}/media.twiliocdn.com/{ACCOUNT_SID}/{sid('', url.path)}"
                )
                return httpx.Response(307, headers={"location": where})
            if url.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json":
                form = dict(parse_qsl(request.content.decode()))
                message = {
                    "sid": sid("SM", str(len(calls))),
                    "status": "queued",
                    "to": form.get("To"),
                    "from": form.get("From"),
                    "body": form.get("Body"),
                    "num_media": "1" if "MediaUrl" in form else "0",
                }
                return httpx.Response(201, json=message)
            return httpx.Response(404, json={"code": 20404, "message": "Not found"})

        return httpx.MockTransport(handle)

    def sent(self, calls: list[httpx.Request]) -> list[dict[str, Any]]:
        out = []
        for request in calls:
            if request.method != "POST" or not request.url.path.endswith("/Messages.json"):
                continue
            form = parse_qsl(request.content.decode())
            fields = dict(form)
            out.append(
                {
                    "to": fields["To"],
                    "from": fields["From"],
                    "text": fields.get("Body", ""),
                    "buttons": [],
                    "media": [value for name, value in form if name == "MediaUrl"],
                }
            )
        return out


KIT = register(TwilioKit())
