"""Relays: storage that runs no syncd, through which peers that are never online together
exchange encrypted batches of node states and content chunks (docs/protocol.md, "Relays")."""
