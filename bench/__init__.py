"""`make bench`: the load benchmark of the stack against its baseline (see bench/README.md)."""
