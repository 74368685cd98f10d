"""Gradient compressors (being written)."""

__all__: list[str] = []
