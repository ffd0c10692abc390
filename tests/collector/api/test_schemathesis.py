"""Schemathesis against a live collector (`kilowatch collector run`, uvicorn) and its own OpenAPI document:
generated requests (a bounded number per operation), with an admin API key, get no 5xx, and every answer
conforms to the document (status, content type, headers, body schema)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok

from app.processes import PostgreSQL, Process, free_port, wait_until
from collector.alerts import AlertStore
from collector.store import Ledger
from tests.alert_support import finding
from tests.api_support import api_key
from tests.collector_support import at, batch, reading
from tests.ledger_support import BACKENDS, ledger_settings, ledgers


@pytest.fixture(scope="module", params=BACKENDS)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """A collector process over a ledger (on each backend) with a meter, its intervals and an alert; its URL
    and the headers of an admin key."""
    workdir = tmp_path_factory.mktemp("schemathesis")

    def server() -> PostgreSQL:
        found: PostgreSQL = request.getfixturevalue("postgresql")
        return found

    with ledgers(str(request.param), workdir, server) as ledger_at:
        ledger = ledger_at("kilowatch")
        with Ledger(ledger) as store:
            store.ingest(batch(reading(at(10), imp=100.0, power_w=4000), reading(at(10, 20), imp=101.0)))
        with AlertStore(ledger) as alerts:
            alerts.apply(finding())
        headers = {"Authorization": f"Bearer {api_key(ledger)}"}
        port = free_port()
        config = workdir / "collector.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "mqtt": {"host": "127.0.0.1", "port": free_port()},  # no broker: the API serves anyway
                    "ledger": ledger_settings(ledger),
                    "api": {"host": "127.0.0.1", "port": port},
                }
            )
        )
        collector = Process(
            "collector",
            [sys.executable, "-m", "app", "collector", "run", "--config", str(config)],
            workdir / "collector.log",
        ).start()
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: httpx.get(f"{base}/healthz").status_code == 200, 30, "the collector's API")
            yield base, headers
        finally:
            collector.stop()
        assert "Traceback" not in collector.log(), collector.log()


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    checks.ignored_auth,
]
"""Not `positive_data_acceptance`: the API refuses some schema-valid requests by rules a schema cannot say
(a range longer than 31 days, a silence that ends in the past), with a documented 422."""


def test_the_live_api_conforms_to_its_openapi_document(live: tuple[str, dict[str, str]]) -> None:
    base, headers = live
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", headers=headers)
    failures: dict[str, str] = {}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            call()
        except FailureGroup as exc:  # every operation's failures, reported together
            failures[operation.label] = str(exc)
    assert len(list(schema.get_all_operations())) >= 14
    assert not failures, "\n\n".join(f"{label}: {text}" for label, text in failures.items())
