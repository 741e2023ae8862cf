"""Images: pysup's local store of root filesystems (`store.py`). Registry pulls come later (issue 9).

Kept import-light: `pysup run IMAGE` resolves images through here.
"""
