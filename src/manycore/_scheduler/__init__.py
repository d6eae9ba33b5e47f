"""Policy, with no I/O: chunking, ordering, back-pressure on lazy input,
timeouts, retries, ``on_error``, checkpoints. Reached through one door."""
