"""``/metrics`` of ``sagakit serve --workers 2``: every process's counters, added up."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.recovery.conftest import Sagakit

SCRAPES = 30


def started_and_finished(text: str) -> tuple[float, float]:
    """``sagakit_sagas_started_total`` and the sum of ``sagakit_sagas_finished_total``."""
    started = finished = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sagakit_sagas_started_total":
                started += sample.value
            elif sample.name == "sagakit_sagas_finished_total":
                finished += sample.value
    return started, finished


async def test_every_scrape_of_two_workers_counts_every_checkout(
    sagakit: Sagakit, tmp_path: Path
) -> None:
    """Whichever process answers, /metrics counts the checkouts that both processes ran."""
    metrics_dir = tmp_path / "metrics"
    server = await sagakit.serve(
        env={"SAGAKIT_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    )
    try:
        # A fresh connection each time, so that both processes get some of the work.
        for order_id in ("order1", "order2", "order3"):
            async with httpx.AsyncClient(base_url=server.url, timeout=30.0) as client:
                assert (await client.post(f"/checkout/{order_id}")).status_code in (200, 400)
        scrapes = []
        for _ in range(SCRAPES):
            async with httpx.AsyncClient(base_url=server.url, timeout=30.0) as client:
                scrapes.append(started_and_finished((await client.get("/metrics")).text))
        files = sorted(p.name for p in metrics_dir.glob("counter_*.db"))
    finally:
        await server.terminate()

    assert set(scrapes) == {(3.0, 3.0)}
    assert files, "the processes kept no counters in PROMETHEUS_MULTIPROC_DIR"
