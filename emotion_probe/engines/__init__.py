"""Where probing runs: in this process, chunk by chunk and resumably (local), or over Ray workers (ray)."""
