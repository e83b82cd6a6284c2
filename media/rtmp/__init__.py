"""RTMP protocol core: handshake, chunk stream, messages, server connection (sans-I/O)."""
