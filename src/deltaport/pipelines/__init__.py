"""Pipelines: image-to-device (deploy), manifest-to-device (activate), status events."""
