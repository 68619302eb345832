"""Telemetry ingest: a FastAPI service on uvicorn + uvloop (corpus 2, service B)."""
