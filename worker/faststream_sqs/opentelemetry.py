"""FastStream's OpenTelemetry middleware, told how to read SQS messages."""

from __future__ import annotations

from typing import Any

from faststream.message import StreamMessage
from faststream.opentelemetry import TelemetryMiddleware
from faststream.response import PublishCommand
from opentelemetry.metrics import Meter, MeterProvider
from opentelemetry.trace import TracerProvider

MESSAGING_SYSTEM = "aws_sqs"


class SQSTelemetrySettingsProvider:
    __slots__ = ("messaging_system",)

    def __init__(self) -> None:
        self.messaging_system = MESSAGING_SYSTEM

    def get_consume_attrs_from_message(self, msg: StreamMessage[Any]) -> dict[str, Any]:
        return {
            "messaging.system": self.messaging_system,
            "messaging.message.id": msg.message_id,
            "messaging.message.conversation_id": msg.correlation_id,
            "messaging.message.body.size": len(msg.body),
            "messaging.destination.name": self.get_consume_destination_name(msg),
        }

    def get_consume_destination_name(self, msg: StreamMessage[Any]) -> str:
        return str(msg.raw_message.queue_url).rstrip("/").rsplit("/", 1)[-1]

    def get_publish_attrs_from_cmd(self, cmd: PublishCommand) -> dict[str, Any]:
        return {
            "messaging.system": self.messaging_system,
            "messaging.destination.name": cmd.destination,
            "messaging.message.conversation_id": cmd.correlation_id,
        }

    def get_publish_destination_name(self, cmd: PublishCommand) -> str:
        return cmd.destination


class SQSTelemetryMiddleware(TelemetryMiddleware[PublishCommand]):
    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        meter: Meter | None = None,
        include_messages_counters: bool = True,
    ) -> None:
        super().__init__(
            settings_provider_factory=lambda _: SQSTelemetrySettingsProvider(),
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            meter=meter,
            include_messages_counters=include_messages_counters,
        )
