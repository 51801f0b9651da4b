"""The capture's view of its topics (``models.topics``): a topic it cannot create is a Kafka write error."""

from __future__ import annotations

from cdc.errors import KafkaWriteError
from models import topics
from models.settings import KafkaSettings
from models.topics import message_limit_of as message_limit_of
from models.topics import topic_message_limit as topic_message_limit


async def ensure_topic(settings: KafkaSettings, topic: str | None = None) -> None:
    """``models.topics.ensure_topic``, its failure a ``KafkaWriteError``."""
    try:
        await topics.ensure_topic(settings, topic)
    except topics.TopicError as exc:
        raise KafkaWriteError(str(exc)) from exc
