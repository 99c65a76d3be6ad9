"""The GCS client resolves the proxy and CA bundle variables once (`without_env_lookups`), to
the same settings requests would look up on every request; this cuts a quarter of a live
message's CPU in the function. No network: creating the client does no I/O."""

from __future__ import annotations

import itertools

import pytest
import requests

from klinelake.backends.gcs_store import make_client

ENDPOINT = "http://127.0.0.1:9"  # never contacted
VARIABLES = {
    "HTTP_PROXY": [None, "http://proxy.invalid:3128"],
    "HTTPS_PROXY": [None, "http://sproxy.invalid:3128"],
    "NO_PROXY": [None, "127.0.0.1", "example.invalid"],
    "REQUESTS_CA_BUNDLE": [None, "/etc/ca-requests.pem"],
    "CURL_CA_BUNDLE": [None, "/etc/ca-curl.pem"],
}
CASES = list(itertools.product(*VARIABLES.values()))


@pytest.mark.parametrize("values", CASES, ids=lambda v: "-".join(str(bool(x)) for x in v))
def test_settings_resolved_once_equal_what_requests_looks_up(
    monkeypatch: pytest.MonkeyPatch, values: tuple[str | None, ...]
) -> None:
    for name in (*VARIABLES, *(v.lower() for v in VARIABLES), "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in zip(VARIABLES, values, strict=True):
        if value is not None:
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", ENDPOINT)
    session = make_client()._http
    for url in (ENDPOINT + "/storage/v1/b/x/o", ENDPOINT + "/upload/storage/v1/b/x/o"):
        expected = requests.Session().merge_environment_settings(url, {}, None, None, None)
        got = session.merge_environment_settings(url, {}, None, None, None)
        assert got == expected
    assert session.trust_env is False  # no per-request lookups
