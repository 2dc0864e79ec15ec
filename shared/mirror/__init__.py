"""Mirror's core library: models, the judge, the state store. No I/O at import time."""

from __future__ import annotations

__version__ = "0.1.0"
