"""The control API of a running `pysup up` (specs/control-api.md): `server.py` (trio, in `up`'s
root nursery), `client.py` (synchronous, for the CLI), `protocol.py` (what both agree on)."""
