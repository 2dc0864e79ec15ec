"""Mirror's bridge: terminates Plivo's bidirectional audio stream, relays it to the team's agent
and lets a per-call session supervise (and intervene in) the call.

Nothing here does I/O at import; `create_app(settings)` in `mirror_bridge.app` builds the service.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
