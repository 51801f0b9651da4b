"""The control plane: the management API, the portal, and the actions they share with the CLI.

It manages what capture and delivery read from the store (integrations, secrets, replay and backfill
jobs, portal sessions) and reports on both halves; it may import either of them, and neither imports it.
One function per management action lives in ``control.actions``; the API (``control.api``), the portal
(``control.portal``) and the CLI are thin adapters over it.
"""
