"""A local Ray that stays on this machine's loopback interface.

On Linux, Ray binds its control store and node manager to the machine's outward-facing address by default
(it looks the address up as if a cluster were to join). A single-machine Ray — what ``infership serve`` and
``batch-predict`` start without ``--address``, and what the tests start — has no one to talk to there, so
it is pinned to loopback: Ray then uses 127.0.0.1 for every internal connection. Joining a cluster
(``--address``) is left to Ray's own settings.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from infership.runtime.errors import BackendUnavailable

#: Ray reads this at import (also in its worker processes): "0" makes it use the loopback address.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def init_local_ray(**kwargs: Any) -> Any:
    """``ray.init(**kwargs)`` for a new single-machine Ray bound to 127.0.0.1; returns the ``ray`` module.

    Raises:
        BackendUnavailable: Ray came up on an address that is not loopback (it is shut down again).
    """
    os.environ[LOOPBACK_ENV] = "0"  # for the worker processes Ray starts
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # this process may have imported ray before the variable was set
    ray.init(**kwargs)
    address = ray.get_runtime_context().gcs_address.rsplit(":", 1)[0]
    if not ipaddress.ip_address(address.strip("[]")).is_loopback:
        ray.shutdown()
        raise BackendUnavailable(f"a local Ray must run on loopback, but it came up on {address}")
    return ray
