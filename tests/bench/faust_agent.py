"""The baseline of the benchmarks: a plain Faust agent that counts each record into a
table and sends one record per input. Run as ``python -m tests.bench.faust_agent``
with BENCH_* variables naming the broker, topics and ports."""

from __future__ import annotations

import os

import faust


def build() -> faust.App:
    app = faust.App(
        os.environ["BENCH_APP_ID"],
        broker=f"kafka://{os.environ['BENCH_BOOTSTRAP']}",
        store="memory://",
        datadir=os.environ["BENCH_DATA_DIR"],
        topic_partitions=int(os.environ["BENCH_PARTITIONS"]),
        web_port=int(os.environ["BENCH_WEB_PORT"]),
        broker_session_timeout=6.0,  # the embedded broker answers JoinGroup after half of it
        broker_heartbeat_interval=1.0,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        autodiscover=False,
    )
    source = app.topic(os.environ["BENCH_SOURCE"], key_type=bytes, value_type=bytes)
    sink = app.topic(os.environ["BENCH_SINK"], key_type=bytes, value_type=bytes)
    counts = app.Table("counts", default=int, partitions=int(os.environ["BENCH_PARTITIONS"]))

    @app.agent(source)
    async def count(stream: faust.StreamT) -> None:
        async for event in stream.events():
            counts[event.key] += 1
            await sink.send(key=event.key, value=event.value)

    return app


if __name__ == "__main__":  # pragma: no cover - a subprocess of the benchmark
    build().main()
