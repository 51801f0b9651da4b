"""Settling: ``recorder`` writes what the store must keep (the job log, deliveries that wait) in batches,
``settlement`` says which consumed records are settled, ``offsets`` commits up to there, and
``positions`` reads where the consumer group stands."""
