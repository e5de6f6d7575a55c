"""The bundled CloudPOS API simulator: generated shop data served over HTTP like the real API."""

from __future__ import annotations

from syncer.simulator.data import Dataset, generate
from syncer.simulator.server import Simulator, live

__all__ = ["Dataset", "Simulator", "generate", "live"]
