"""Corral: from instruction data and an open base model to a live chat endpoint.

The import package lives under the ``platform/`` source root (which is never a
package itself: ``platform`` is a standard-library module).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
