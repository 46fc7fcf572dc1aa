"""A small Python client for Corral's control API (what ``corral apply/get/describe`` use).

Example:
    >>> client = CorralClient.from_context()          # written by `corral up`
    >>> client.apply_file("examples/support-bot")      # doctest: +SKIP
"""

from ._context import Context, load_context, save_context
from ._http import APIStatusError, CorralClient

__all__ = ["APIStatusError", "Context", "CorralClient", "load_context", "save_context"]
