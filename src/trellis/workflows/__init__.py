"""Workflows that ship with Trellis (the performance agent: :mod:`trellis.workflows.performance`)."""
