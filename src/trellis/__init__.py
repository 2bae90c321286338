"""Trellis: run LangGraph workflows for real — declared in YAML/JSON or written in Python,
executed durably in the background, observable while they run, safe to stop, approve and resume.
"""

from trellis._version import __version__

__all__ = ["__version__"]
