"""Image catalog (add, verify, rm), hashing with progress, and streaming bookkeeping."""
