"""Before ``ray.init(address=...)``: ask the cluster once, within a bound, and
name why it cannot be used. Left to itself, ``ray.init`` fails after ~21 s with
a bare ``ConnectionError`` when the cluster wants a token this process does not
send, waits minutes on a stale ``ray_current_cluster`` file (``address="auto"``),
and 30 s on a Ray Client port that refuses it.

The probe is one gRPC call, on a channel made the way Ray makes its own (with
Ray's token when this process would send one): ``GetClusterId`` on the GCS for
``host:port`` and ``"auto"``, a ping on the Ray Client server for ``ray://``.
``MANYCORE_CONNECT_TIMEOUT`` (seconds, default 5) bounds it.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__all__ = ["check_cluster", "connect_bound"]


def _ray(module: str) -> Any:
    """A module of Ray's internals (or grpc), untyped: a Ray without it raises
    ImportError, which the callers read as "a Ray without that feature"."""
    return importlib.import_module(module)


CONNECT_TIMEOUT_ENV = "MANYCORE_CONNECT_TIMEOUT"
_DEFAULT_BOUND = 5.0
_TOKEN_HOW = (
    "set RAY_AUTH_MODE=token and give the cluster's token in ~/.ray/auth_token, "
    "RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN (`ray get-auth-token` prints it on the head)"
)


def connect_bound() -> float:
    """Seconds a connect may take: ``MANYCORE_CONNECT_TIMEOUT``, or 5."""
    text = os.environ.get(CONNECT_TIMEOUT_ENV, "").strip()
    if not text:
        return _DEFAULT_BOUND
    try:
        bound = float(text)
    except ValueError:
        bound = -1.0
    if not bound > 0:
        raise ValueError(f"{CONNECT_TIMEOUT_ENV}={text!r}: give a number of seconds above 0")
    return bound


def check_cluster(address: str) -> None:
    """Raise ``ConnectionError`` naming the cause where ``address`` has no Ray
    cluster this process can use; return when the cluster answered."""
    bound = connect_bound()
    client = address.startswith("ray://")
    if client:
        target, source = address[len("ray://") :], None
    elif address == "auto":
        found = _auto_target()
        if found is None:
            return  # nothing recorded: ray.init says so itself, at once
        target, source = found
    else:
        target, source = address, None
    problem = _probe(target, client, bound)
    if problem is not None:
        raise ConnectionError(_message(address, target, source, problem, bound))


def _auto_target() -> tuple[str, str | None] | None:
    """Where ``address="auto"`` leads (as Ray finds it), and what named it."""
    get_ray_address_file = _ray("ray._common.utils").get_ray_address_file
    canonicalize_bootstrap_address = _ray("ray._private.services").canonicalize_bootstrap_address
    read_ray_address = _ray("ray._private.utils").read_ray_address
    _auto_token()
    try:
        target = canonicalize_bootstrap_address("auto")
    except (ConnectionError, ValueError):
        return None
    if target is None:
        return None
    if os.environ.get("RAY_ADDRESS"):
        return target, "RAY_ADDRESS"
    recorded = read_ray_address(None)
    if recorded and canonicalize_bootstrap_address(recorded) == target:
        return target, f"Ray's address file {get_ray_address_file(None)}"
    return target, None


def _auto_token() -> None:
    """Ray turns token authentication on for "auto" where a token exists: the
    probe must send what ray.init will."""
    try:
        setup = _ray("ray._private.authentication.authentication_token_setup")
    except ImportError:  # a Ray without token authentication
        return
    setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _probe(target: str, client: bool, bound: float) -> tuple[str, str] | None:
    """One call to ``target``: None if it answered, else (gRPC code name, details)."""
    try:
        grpc = _ray("grpc")
    except ImportError:  # ray without its client extra: ray.init alone decides
        return None
    channel = _channel(target)
    try:
        call = _client_ping(channel) if client else _gcs_ping(channel)
        call(timeout=bound)
    except grpc.RpcError as exc:
        code = exc.code()
        return (code.name if code is not None else "UNKNOWN"), str(exc.details() or "")
    finally:
        channel.close()
    return None


def _channel(target: str) -> Any:
    try:
        utils = _ray("ray._private.grpc_utils")
    except ImportError:  # a Ray without token authentication: a plain channel
        return _ray("grpc").insecure_channel(target)
    return utils.init_grpc_channel(target)


def _gcs_ping(channel: Any) -> Any:
    pb, rpc = (
        _ray("ray.core.generated.gcs_service_pb2"),
        _ray("ray.core.generated.gcs_service_pb2_grpc"),
    )
    stub = rpc.NodeInfoGcsServiceStub(channel)
    return lambda timeout: stub.GetClusterId(pb.GetClusterIdRequest(), timeout=timeout)


def _client_ping(channel: Any) -> Any:
    pb, rpc = (
        _ray("ray.core.generated.ray_client_pb2"),
        _ray("ray.core.generated.ray_client_pb2_grpc"),
    )
    stub = rpc.RayletDriverStub(channel)
    ping = pb.ClusterInfoRequest(type=pb.ClusterInfoType.PING)
    return lambda timeout: stub.ClusterInfo(ping, timeout=timeout)


def _sends_token() -> bool:
    try:
        utils = _ray("ray._private.authentication.authentication_utils")
    except ImportError:
        return False
    return bool(utils.is_token_auth_enabled())


def _message(
    address: str, target: str, source: str | None, problem: tuple[str, str], bound: float
) -> str:
    code, details = problem
    head = f"address={address!r}: "
    if source is not None:
        head += f"{source} names {target}: "
    if code == "UNAUTHENTICATED":
        if _sends_token():
            return head + f"the Ray cluster refused this process's token ({details}); " + _TOKEN_HOW
        return (
            head + "the Ray cluster requires token authentication and this process sends "
            f"no token; {_TOKEN_HOW}"
        )
    if code == "UNAVAILABLE" and "refused" in details.lower():
        stopped = "a cluster that has stopped: " if source is not None else ""
        fix = "`ray stop` removes the file" if source and "file" in source else "check the address"
        return (
            head + f"{stopped}nothing listens at {target}; start a cluster with "
            f"`ray start --head`, or {fix}"
        )
    if code == "UNIMPLEMENTED":
        if address.startswith("ray://"):
            return head + f"{target} is not a Ray Client server (a GCS port? drop the ray://)"
        return head + f"{target} is not a Ray GCS port (a Ray Client server? use ray://{target})"
    if code == "DEADLINE_EXCEEDED":
        return (
            head + f"no answer from {target} within {bound:g}s (a firewall, a busy head, "
            f"or not a Ray port); {CONNECT_TIMEOUT_ENV} sets how long to wait"
        )
    return head + f"cannot reach a Ray cluster at {target} ({code}: {details})"
