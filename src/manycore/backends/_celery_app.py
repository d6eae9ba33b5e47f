"""manycore's Celery app: the one task the ``celery`` backend sends, and the
settings both sides share. Workers run it with::

    manycore celery-worker --broker redis://HOST:6379/0
    # which is: celery -A manycore.backends._celery_app worker -b URL --result-backend URL

The task takes a cloudpickled batch and answers with its cloudpickled outcome
(see :func:`manycore.backends._remote_run.run_remote`): messages are pickles,
so this app accepts pickle, and whoever can write to its broker runs code on
its workers (docs/cluster.md, "Celery": lock the broker down). The app holds
no other task: pickle is accepted for manycore's task only.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

__all__ = ["QUEUE", "TASK", "app", "configure"]

TASK = "manycore.run_batch"
QUEUE = "manycore"  # the queue the pool sends to and its workers read
RESULTS_EXPIRE = 3600  # seconds: a result nobody read (a pool that died) leaves Redis


def configure(app: Any, url: str | None) -> None:
    """What the pool and its workers agree on: pickled messages for this app's
    one task, results in Redis (read once, then deleted by the pool), a state
    STARTED (a timed task's clock), one task per worker process at a time."""
    conf: dict[str, object] = {
        "task_serializer": "pickle",
        "result_serializer": "pickle",
        "accept_content": ["pickle"],
        "result_accept_content": ["pickle"],
        "task_track_started": True,
        "task_acks_late": False,  # a task whose worker died is not run again: manycore retries
        "task_default_queue": QUEUE,
        "worker_prefetch_multiplier": 1,
        "result_expires": RESULTS_EXPIRE,
        "worker_hijack_root_logger": False,
        "broker_connection_retry_on_startup": True,
    }
    if url is not None:
        conf["broker_url"] = url
        conf["result_backend"] = url
    app.conf.update(conf)


app = Celery("manycore")
configure(app, None)


@app.task(name=TASK)  # type: ignore[untyped-decorator]
def run_batch(payload: bytes) -> bytes:
    """A batch, cloudpickled: ``run_remote``'s arguments; its answer, cloudpickled."""
    import cloudpickle

    from manycore.backends._remote_run import run_remote

    fn, items, how, kwargs, setup, shared, *refs = cloudpickle.loads(payload)
    answer: bytes = cloudpickle.dumps(run_remote(fn, items, how, kwargs, setup, shared, *refs))
    return answer
