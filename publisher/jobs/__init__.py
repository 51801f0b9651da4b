"""Background jobs of a publisher: ``replay`` (replay jobs read back from Kafka, with the checks of their
input in ``replay_input``) and ``pruning`` (dropping the delivery log's old day partitions)."""
