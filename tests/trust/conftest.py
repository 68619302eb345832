"""The agent tests' session world (cloud registry, images) and device registry, reused."""

from tests.agent.conftest import device_registry, world

__all__ = ["device_registry", "world"]
