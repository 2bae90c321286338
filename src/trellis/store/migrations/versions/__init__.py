"""Alembic revision scripts, named ``r<rev>_<slug>.py``."""
