"""Sending: ``ordering`` says whether a delivery may go now, ``lanes`` and ``dispatch`` run attempts per
integration within fair shares (``connections``), ``sender`` signs (``signing``) and posts (``http``) to
destinations ``ssrf`` allows, and ``retry`` says what a result means."""
