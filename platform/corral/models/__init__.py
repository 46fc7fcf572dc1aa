"""Base models Corral can build locally (no hub): see :mod:`corral.models.tiny`."""

__all__: list[str] = []
