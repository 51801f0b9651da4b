"""The delivery half: Kafka records in, signed webhooks out, straight from the log.

The folders follow a record's way through a publisher (``service`` wires them in one supervised loop):

- ``routing``: who gets this event (subscriptions, conditions, the directory of integrations);
- ``sending``: may this delivery go now (per-entity ordering, lanes, fair connections), then the signed
  attempt and what its result means;
- ``settling``: what the store keeps of it (the job log, what must wait) and how far offsets may commit;
- ``jobs``: the background loops (replay jobs, pruning the log);
- ``store``: walhook's own database.

Capture never imports this package, and this package never imports capture or the control plane
(``pyproject.toml``'s import contracts check both).
"""
