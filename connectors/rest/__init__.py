"""The REST channel, compatible with Rasa's: a caller posts ``{"sender", "message"}``
(optionally ``attachments``: ids of images uploaded first) and the answer holds the bot's
replies, ``[{"recipient_id", "text", "buttons", "image", ...}]``. Built in for every bot (not
created as a channel); the gateway owns the route (``POST /v1/bots/{bot_id}/webhooks/rest``)
and checks the caller's key before the connector sees the message.

One connector serves one call: ``send`` collects the replies that the answer returns
(``replies``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connectors.base import (
    Capabilities,
    Connector,
    ConnectorConfig,
    InboundMessage,
    WebhookRequest,
    WebhookResult,
)
from connectors.registry import builtin_connectors
from core.errors import InvalidInput
from core.messages import OutboundMessage

__all__ = ["MAX_TEXT_CHARS", "RestConfig", "RestConnector", "RestMessage", "rest_message"]

MAX_TEXT_CHARS = 4000
MAX_ATTACHMENTS = 4


class RestMessage(BaseModel):
    """Rasa's REST channel body."""

    model_config = ConfigDict(extra="ignore")
    sender: str = Field(min_length=1, max_length=200)
    message: str = Field(default="", max_length=MAX_TEXT_CHARS)
    attachments: list[str] = Field(default=[], max_length=MAX_ATTACHMENTS, description="upload ids")


class RestConfig(ConnectorConfig):
    """The REST channel has no settings."""


@builtin_connectors.register("rest")
class RestConnector(Connector[RestConfig]):
    """One call of the REST channel (see the module docstring)."""

    type = "rest"
    Config = RestConfig
    title = "REST (Rasa-compatible)"
    webhook_path = "/v1/bots/{bot_id}/webhooks/rest"
    docs_url = "https://rasa.com/docs/rasa/connectors/your-own-website/#rest-channels"
    setup_steps = (
        'Every bot has a REST channel: POST {"sender": ..., "message": ...} to '
        "/v1/bots/{bot_id}/webhooks/rest with an API key (or the bot's widget key) and read "
        "the replies from the answer, as Rasa's REST channel does.",
    )
    capabilities = Capabilities(
        buttons=True, images=True, cards=True, inbound_images=True
    )  # quick replies are answered as buttons, as Rasa does

    def __init__(self, config: RestConfig | None = None) -> None:
        self.config = config or RestConfig()
        self.webhook_url = ""  # the gateway's route; no provider calls it
        self.replies: list[dict[str, Any]] = []

    def verify(self, request: WebhookRequest) -> None:
        """Nothing to check here: the gateway has checked the caller's API or widget key
        (and widget session) before handing the call over."""

    def parse(self, request: WebhookRequest) -> WebhookResult:
        """The call's body as one message; ``InvalidInput`` for a body that is not one."""
        try:
            body = RestMessage.model_validate_json(request.body)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors()
            )
            raise InvalidInput(f"invalid REST message: {problems}") from e
        return WebhookResult(messages=[self.inbound(body)])

    def inbound(self, body: RestMessage) -> InboundMessage:
        """The customer message of a call: text and attached images; an empty one is refused."""
        if not body.message.strip() and not body.attachments:
            raise InvalidInput("the message is empty; send text, a payload or an image")
        return InboundMessage(
            sender_id=body.sender,
            text=body.message,
            uploads=tuple(body.attachments),
        )

    async def send(
        self, recipient: str, message: OutboundMessage, metadata: dict[str, Any]
    ) -> None:
        """Keep the reply for the call's answer."""
        self.replies.append(rest_message(recipient, message))


def rest_message(recipient: str, message: OutboundMessage) -> dict[str, Any]:
    """An outbound message in Rasa's REST channel shape (quick replies are buttons there)."""
    wire = message.to_wire()
    item: dict[str, Any] = {"recipient_id": recipient, **wire}
    if "quick_replies" in item:
        item["buttons"] = item.get("buttons", []) + item.pop("quick_replies")
    return item
