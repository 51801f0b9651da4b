"""How every process logs to stderr: the human format (the default), or one JSON object per line.

A JSON line has ``time`` (ISO 8601, UTC), ``level``, ``logger`` and ``message``, then the ids the
log call had at hand, passed with ``extra=ids(...)``: ``organization``, ``integration``, ``delivery``
(the webhook-id), ``event``, ``lsn``. The human format leaves those out, so it stays as it was; and
since only the lines that are written carry them, nothing is done per event on the hot path.
"""

from __future__ import annotations

import logging

from pythonjsonlogger.orjson import OrjsonFormatter

HUMAN = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("human", "json")

_json = False


def configure_logging(level: str, log_format: str = "human") -> None:
    """The root logger at ``level``, writing to stderr in ``log_format`` (``human`` or ``json``)."""
    global _json
    _json = log_format == "json"
    if not _json:
        logging.basicConfig(level=level, format=HUMAN)
        return
    handler = logging.StreamHandler()
    handler.setFormatter(OrjsonFormatter("{levelname}{name}{message}", style="{", timestamp="time",
                                         rename_fields={"levelname": "level", "name": "logger"}))
    logging.basicConfig(level=level, handlers=[handler])
    logging.captureWarnings(True)  # a Python warning becomes a JSON line too, not free text on stderr


def json_lines() -> bool:
    """Whether the process logs JSON lines (then libraries with their own handlers, uvicorn's, must not)."""
    return _json


def ids(organization: str | None = None, integration: int | None = None, delivery: str | None = None,
        event: str | None = None, lsn: str | None = None, **more: object) -> dict[str, object]:
    """``extra=`` for a log call: the ids it has at hand, those it has not left out."""
    given = {"organization": organization, "integration": integration, "delivery": delivery, "event": event,
             "lsn": lsn, **more}
    return {name: value for name, value in given.items() if value is not None}
