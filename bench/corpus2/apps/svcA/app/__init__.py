"""Inventory service: a Flask API over SQLAlchemy (corpus 2, service A)."""

from .factory import create_app

__all__ = ["create_app"]
