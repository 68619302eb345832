import threading
from collections import deque


class RingStore:
    """Keeps the last N points per device in memory."""

    def __init__(self, size):
        self._size = size
        self._data = {}
        self._lock = threading.Lock()

    def __len__(self):
        with self._lock:
            return sum(len(d) for d in self._data.values())

    def extend(self, device, points):
        with self._lock:
            ring = self._data.setdefault(device, deque(maxlen=self._size))
            ring.extend(points)

    def for_device(self, device):
        with self._lock:
            return list(self._data.get(device, ()))

    def snapshot(self):
        with self._lock:
            data = self._data.items()
            return {dev: [p.model_dump(mode="json") for p in ring] for dev, ring in data}
