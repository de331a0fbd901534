"""The API gateway: one front door (routing, merged docs, composite reads)."""
