"""``manycore celery-worker --broker URL``: a Celery worker of manycore's app on
that broker (what a machine runs to take ``backend="celery"`` tasks); the
process becomes ``celery -A manycore.backends._celery_app worker ...``."""

from __future__ import annotations

import argparse
import os
from typing import NoReturn

__all__ = ["add_parser", "main"]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = commands.add_parser(
        "celery-worker",
        help="run a Celery worker for backend='celery' on a Redis broker",
        description=(
            "Start a Celery worker of manycore's app (one task, which runs batches sent "
            "by Pool(backend='celery', address=URL)). It accepts pickled messages: "
            "whoever can write to the broker runs code here, so bind Redis to a "
            "private network and set a password (see docs/cluster.md). Arguments "
            "after -- go to `celery worker` as they are."
        ),
    )
    worker.add_argument("--broker", required=True, metavar="URL", help="redis://HOST:PORT/DB")
    worker.add_argument(
        "-c", "--concurrency", type=int, metavar="N", help="worker processes (default: CPUs)"
    )
    worker.add_argument("extra", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> NoReturn:
    from manycore.backends import CeleryBackend

    extra = [a for a in args.extra if a != "--"]
    cmd = [*CeleryBackend.worker_command(args.broker, args.concurrency), *extra]
    os.execv(cmd[0], cmd)  # (replaces this process: Ctrl-C and signals reach Celery)
