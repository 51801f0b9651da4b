"""The root of walhook's exception tree.

Each package keeps its own branch (``cdc.errors``, ``publisher.errors``, ``walhook.errors``);
foreign errors (psycopg, aiokafka, aiohttp, pydantic) are translated once, at the boundary
where they are caught, with ``raise ... from exc`` so the cause stays visible.
"""


class WalhookError(Exception):
    """Base of every error walhook raises on purpose. The message is meant for a person."""
