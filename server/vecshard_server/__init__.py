"""vecshard server: coordinator, shard worker, index engine, merge and CLI (`vecshard --help`)."""
