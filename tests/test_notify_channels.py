"""``notification`` channels email (a real SMTP server, aiosmtpd, on loopback) and slack (the target)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.worker import Worker

from core.settings import Settings
from tests.support.outcome import completes, fails, history_text
from tests.support.run import start
from tests.support.target import Target, free_port
from workflows.definition import DefinitionInvalid, parse

# The test server wants a login over plain text, which aiosmtpd warns about: fine on loopback.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

FAST_RETRY = {"max_attempts": 2, "initial_interval": "100ms", "backoff": 1.0}
SMTP_USER = "conveyor"
SMTP_PASSWORD = "smtp-pa55"
REFUSED = "nobody@shop.example"


class Inbox:
    """An aiosmtpd handler keeping what it receives; refuses ``REFUSED`` for good."""

    def __init__(self) -> None:
        self.received: list[tuple[Envelope, Message]] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address == REFUSED:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.received.append((envelope, message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"


def _authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok)


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def inbox(smtp_port: int) -> Iterator[Inbox]:
    """A real SMTP server on loopback that wants a login (over plain text: it is loopback)."""
    handler = Inbox()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=smtp_port,
        authenticator=_authenticate,
        auth_require_tls=False,
        auth_required=True,
    )
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()


@pytest.fixture
def settings(task_queue: str, smtp_port: int, target: Target) -> Settings:
    return Settings(
        task_queue=task_queue,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_username=SMTP_USER,
        smtp_password=SecretStr(SMTP_PASSWORD),
        smtp_from="conveyor@shop.example",
        secrets={"SLACK_WEBHOOK": SecretStr(f"{target.url}/hook/slack-secret")},
    )


def notify(step_id: str, with_: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "notification", "with": with_, **fields}


def definition(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"name": "notify", "steps": list(steps)}


async def test_email_reaches_the_smtp_server(client: Client, worker: Worker, inbox: Inbox) -> None:
    result = await completes(
        client,
        worker.task_queue,
        definition(
            notify(
                "mail",
                {
                    "channel": "email",
                    "to": ["ops@shop.example", "{{ input.owner }}"],
                    "subject": "Import of {{ input.count }} products",
                    "message": "Imported {{ input.count }} products for {{ input.owner }}.",
                },
            )
        ),
        {"count": 42, "owner": "ada@shop.example"},
    )
    [(envelope, message)] = inbox.received
    assert envelope.mail_from == "conveyor@shop.example"
    assert envelope.rcpt_tos == ["ops@shop.example", "ada@shop.example"]
    assert message["Subject"] == "Import of 42 products"
    assert message["To"] == "ops@shop.example, ada@shop.example"
    assert message.get_payload(decode=True).decode().strip() == "Imported 42 products for ada@shop.example."
    output = result.output
    assert output["channel"] == "email" and output["to"] == ["ops@shop.example", "ada@shop.example"]
    assert output["message_id"] == message["Message-ID"]
    assert output["refused"] == []


async def test_email_to_a_comma_separated_string(client: Client, worker: Worker, inbox: Inbox) -> None:
    await completes(
        client,
        worker.task_queue,
        definition(
            notify("mail", {"channel": "email", "to": "a@shop.example, b@shop.example", "message": "hi"})
        ),
    )
    [(envelope, message)] = inbox.received
    assert envelope.rcpt_tos == ["a@shop.example", "b@shop.example"]
    assert message["Subject"] == "Conveyor: mail"


async def test_a_refused_recipient_fails_without_retry(client: Client, worker: Worker, inbox: Inbox) -> None:
    failure = await fails(
        client,
        worker.task_queue,
        definition(notify("mail", {"channel": "email", "to": [REFUSED], "message": "hi"}, retry=FAST_RETRY)),
    )
    assert failure.type == "EmailRejected"
    assert failure.step("mail")["attempts"] == 1
    assert inbox.received == []


async def test_no_smtp_server_is_retried(client: Client, worker: Worker, smtp_port: int) -> None:
    failure = await fails(  # the inbox fixture is not used: nobody listens on the port
        client,
        worker.task_queue,
        definition(
            notify("mail", {"channel": "email", "to": "a@shop.example", "message": "hi"}, retry=FAST_RETRY)
        ),
    )
    assert failure.type == "SmtpError"
    assert failure.step("mail")["attempts"] == 2


async def test_slack_posts_text_to_the_webhook(client: Client, worker: Worker, target: Target) -> None:
    key = uuid.uuid4().hex
    handle = await start(
        client,
        worker.task_queue,
        definition(
            notify(
                "direct",
                {"channel": "slack", "url": f"{target.url}/hook/slack-{key}", "message": "done: {{ 1 + 1 }}"},
            ),
            notify(
                "secret",
                {"channel": "slack", "webhook_url": "{{ secrets.SLACK_WEBHOOK }}", "message": "hidden"},
            ),
        ),
    )
    result = await handle.result()
    assert result.output == {"channel": "slack", "status": 200}
    assert {"path": f"/hook/slack-{key}", "json": {"text": "done: 2"}} in target.requests
    assert {"path": "/hook/slack-secret", "json": {"text": "hidden"}} in target.requests
    assert "slack-secret" not in history_text(await handle.fetch_history())


def test_channel_fields_are_checked_at_validation() -> None:
    document = definition(
        notify("no_to", {"channel": "email", "message": "hi"}),
        notify("no_message", {"channel": "email", "to": "a@b.c"}),
        notify("no_url", {"channel": "slack", "message": "hi"}),
        notify("ok", {"channel": "slack", "webhook_url": "{{ secrets.SLACK_WEBHOOK }}", "message": "hi"}),
        notify("sms", {"channel": "sms", "message": "hi"}),
    )
    with pytest.raises(DefinitionInvalid) as caught:
        parse(document)
    problems = {p.path: p.message for p in caught.value.problems}
    assert "'to'" in problems["$.steps[0].with"]
    assert "'message'" in problems["$.steps[1].with"]
    assert "webhook_url" in problems["$.steps[2].with"]
    assert "$.steps[4].with.channel" in problems
    assert not any(path.startswith("$.steps[3]") for path in problems)
