"""backend="ray" against a Ray head started as a separate service (``ray start
--head``, token authentication on): the same semantics as on one machine, over
an explicit address and over the Ray Client (``ray://``), and connects that fail
within seconds, naming why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import manycore as mc
from clusters import rayfns as fns
from clusters._ray_service import SRC, TESTS, RayHead, free_port, ray_head
from clusters.conftest import need

__all__ = ["ray_head"]  # (the fixture, imported for pytest)

HANG = (3, 11)


def _kinds(out: list[Any]) -> list[object]:
    return [type(x.exception).__name__ if isinstance(x, mc.Failure) else x for x in out]


def _expect_two_timeouts(pool: mc.Pool) -> None:
    """20 items, timeout=2, items 3 and 11 sleep for an hour: exactly those fail,
    on time; the pool runs a map at once after."""
    start = time.monotonic()
    out = pool.map(fns.hang_on, range(20), timeout=2, on_error="collect")
    took = time.monotonic() - start
    expected: list[object] = ["TaskTimeout" if i in HANG else i for i in range(20)]
    assert _kinds(out) == expected
    assert took < 20, f"the timed map took {took:.1f}s"
    start = time.monotonic()
    assert pool.map(fns.square, range(50)) == [x * x for x in range(50)]
    assert pool.map(fns.square, range(6), timeout=5) == [x * x for x in range(6)]
    assert time.monotonic() - start < 20


def _ray_cli() -> Path:
    return Path(sys.executable).parent / "ray"


def _gcs_running() -> bool:
    out = subprocess.run(["ps", "-eo", "comm="], capture_output=True, text=True, check=True)
    return "gcs_server" in out.stdout.split()


@pytest.mark.timeout(120)
def test_auto_with_a_stale_address_file_says_so(tmp_path: Path) -> None:
    # Ray's current-cluster file names a head that has stopped: ray.init waited
    # more than 150 s on it. (First in this file: with a Ray head running on this
    # machine, "auto" goes to that one, whatever the file says.)
    need("ray", _ray_cli().exists(), "pip install -e '.[ray]'")
    if _gcs_running():
        pytest.skip("a Ray head runs on this machine: 'auto' connects to it")
    (tmp_path / "ray").mkdir()
    stale = tmp_path / "ray" / "ray_current_cluster"
    stale.write_text(f"127.0.0.1:{free_port()}")
    out = _connect("auto", {"RAY_TMPDIR": str(tmp_path), "RAY_ADDRESS": ""}, bound=40)
    assert out["error"] == "ConnectionError", out
    assert str(stale) in out["message"] and "stopped" in out["message"], out
    assert out["took"] < 10, out


@pytest.fixture(params=["address", "client"])
def address(request: pytest.FixtureRequest, ray_head: RayHead) -> str:
    return ray_head.address if request.param == "address" else ray_head.client


@pytest.fixture
def pool(address: str) -> Iterator[mc.Pool]:
    with mc.Pool(backend="ray", address=address) as p:
        yield p


@pytest.mark.timeout(120)
def test_timeouts_fail_only_the_hung_items(address: str) -> None:
    # Over ray:// this hung: the timeout thread blocked in ray.cancel(force=True),
    # and Ray Client's reader thread in manycore's done-callback.
    start = time.monotonic()
    with mc.Pool(backend="ray", address=address) as pool:
        assert pool.workers == 2
        _expect_two_timeouts(pool)
        closing = time.monotonic()
    assert time.monotonic() - closing < 15, "closing the pool took too long"
    assert time.monotonic() - start < 90


@pytest.mark.timeout(120)
def test_a_killed_worker_fails_only_its_item(pool: mc.Pool) -> None:
    out = pool.map(fns.die_on, range(12), on_error="collect")
    assert _kinds(out) == [*range(5), "WorkerCrashed", *range(6, 12)]
    assert pool.map(fns.square, range(10)) == [x * x for x in range(10)]


@pytest.mark.timeout(120)
def test_errors_retries_and_on_error(pool: mc.Pool, tmp_path: Path) -> None:
    with pytest.raises(fns.Custom, match="item 4") as info:
        pool.map(fns.raise_on, range(8))
    assert type(info.value) is fns.Custom
    assert type(info.value.__cause__).__name__ == "RemoteTraceback"
    assert pool.map(fns.raise_on, range(8), on_error="skip") == [0, 1, 2, 3, 5, 6, 7]
    out = pool.map(fns.raise_on, range(8), on_error="collect")
    assert isinstance(out[4], mc.Failure) and type(out[4].exception) is fns.Custom
    # The workers see this file system: a marker file counts the tries.
    assert pool.map(fns.fail_first, [str(tmp_path / "m")], retries=1) == ["second try"]
    out = pool.map(fns.fail_first, [str(tmp_path / "n")], retries=0, on_error="collect")
    assert isinstance(out[0], mc.Failure) and type(out[0].exception) is ConnectionError


@pytest.mark.timeout(120)
def test_a_task_done_before_its_handle_is_kept_is_no_crash(pool: mc.Pool) -> None:
    # The done-callback may run before _launch has stored the task's handle (a
    # task that ends that fast): it must read the task's own result.
    backend: Any = getattr(pool, "_backend")  # noqa: B009  (a private name, on purpose)
    send = backend._send

    def slow_to_return(args: Any, record: Any) -> Any:
        handle = send(args, record)
        time.sleep(1.0)  # the task finishes (and its callback runs) meanwhile
        return handle

    backend._send = slow_to_return
    assert pool.map(fns.square, range(4), chunksize=2) == [0, 1, 4, 9]


# ----------------------------------------------------------------- connecting


def _connect(address: str, env: dict[str, str], bound: float = 60.0) -> dict[str, Any]:
    """Start a pool on ``address`` in a fresh process: its error (type, message)
    and how long it took, or ``hung``."""
    code = (
        "import json,sys,time\nimport manycore as mc\nstart=time.monotonic()\n"
        "try:\n    mc.Pool(backend='ray', address=sys.argv[1]).close(); out={'error': None}\n"
        "except Exception as e:\n    out={'error': type(e).__name__, 'message': str(e)}\n"
        "out['took']=time.monotonic()-start\nprint('RESULT', json.dumps(out))\n"
    )
    full = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)])}
    for key in [k for k, v in env.items() if v == ""]:
        full.pop(key)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, address],
            env=full,
            capture_output=True,
            text=True,
            timeout=bound,
        )
    except subprocess.TimeoutExpired:
        return {"error": "hung", "took": bound}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(lines[-1][7:])
    return result


NO_TOKEN = {"RAY_AUTH_MODE": "", "RAY_AUTH_TOKEN_PATH": "", "RAY_AUTH_TOKEN": ""}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["address", "client"])
def test_a_missing_token_is_named_within_seconds(ray_head: RayHead, kind: str) -> None:
    address = ray_head.address if kind == "address" else ray_head.client
    out = _connect(address, {**NO_TOKEN, "HOME": str(ray_head.token_path.parent)})
    assert out["error"] == "ConnectionError", out
    assert "token" in out["message"] and address in out["message"], out
    assert out["took"] < 10, out


@pytest.mark.timeout(120)
def test_a_wrong_token_is_named(ray_head: RayHead, tmp_path: Path) -> None:
    wrong = tmp_path / "token"
    wrong.write_text("0" * 32)
    out = _connect(ray_head.address, {"RAY_AUTH_TOKEN_PATH": str(wrong)})
    assert out["error"] == "ConnectionError", out
    assert "refused" in out["message"] and "token" in out["message"], out
    assert out["took"] < 10, out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_nothing_listening_is_named_within_seconds(ray_head: RayHead, scheme: str) -> None:
    address = f"{scheme}127.0.0.1:{free_port()}"
    out = _connect(address, {})
    assert out["error"] == "ConnectionError", out
    assert "nothing listens" in out["message"] and address in out["message"], out
    assert out["took"] < 10, out


@pytest.mark.timeout(120)
def test_the_ray_client_port_given_as_an_address_is_named(ray_head: RayHead) -> None:
    port = ray_head.client.rpartition(":")[2]
    out = _connect(f"127.0.0.1:{port}", {})
    assert out["error"] == "ConnectionError", out
    assert "ray://" in out["message"], out
    assert out["took"] < 10, out
