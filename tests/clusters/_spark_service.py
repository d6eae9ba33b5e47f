"""A local Spark for the Spark suite: a ``SparkSession`` on ``local[2]`` bound to
127.0.0.1 (its JVM a separate process, as a user's is), one per test module
since it takes seconds to start, stopped at teardown with any JVM it left."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from clusters.conftest import need, need_command

HOW = "pip install -e '.[spark]' and a Java 17 runtime (apt-get install openjdk-17-jre-headless)"


def need_spark() -> None:
    need("pyspark", importlib.util.find_spec("pyspark") is not None, HOW)
    if not os.environ.get("JAVA_HOME"):
        need_command("java", HOW)


def start_session(workers: int = 2) -> Any:
    """A session as a user starts one (the backend's own start is tested apart)."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master(f"local[{workers}]")
        .appName("manycore-tests")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.pyspark.python", sys.executable)
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


def spark_jvms() -> list[psutil.Process]:
    """This process's Spark JVMs (pyspark starts one through spark-submit)."""
    me = psutil.Process()
    found = []
    for child in me.children(recursive=True):
        try:
            if "org.apache.spark" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def kill_leftovers() -> None:
    for proc in spark_jvms():
        try:
            proc.kill()
        except psutil.Error:
            pass


@pytest.fixture(scope="module")
def spark_session() -> Iterator[Any]:
    need_spark()
    assert shutil.which(sys.executable)
    session = start_session()
    try:
        yield session
    finally:
        session.stop()
        kill_leftovers()
