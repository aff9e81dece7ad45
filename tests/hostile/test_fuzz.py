"""Fuzz the peer API from its own OpenAPI description (schemathesis) against a real
`syncd serve`: signed requests reach the handlers, unsigned ones must all get 401. No
request may get a 5xx or kill the server, and one that is refused (4xx) changes nothing
in the index or the store.

Bounded for CI: a derandomized, fixed number of examples per operation and mode; set
SYNCD_FUZZ_EXAMPLES to run longer (e.g. 2000).

Cases come from schemathesis's strategies, run by hypothesis here: its own pytest
integration (schema.parametrize) does not run under pytest 9."""

from __future__ import annotations

import os
import re

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection

from syncd import auth
from syncd.api import build_app
from tests.hostile.conftest import Server

# Examples per operation for signed requests; unsigned ones need fewer (the signature
# check comes before anything reads the body).
EXAMPLES = int(os.environ.get("SYNCD_FUZZ_EXAMPLES", "20"))


def bounded(examples: int) -> settings:
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    suppress_health_check=list(HealthCheck))


# (METHOD, path) of every operation the app describes (the served description is the same)
OPERATIONS = [(method.upper(), path)
              for path, ops in build_app(None).openapi()["paths"].items() for method in ops]
# A valid POST /v1/cluster-key changes the key that every later request of the module's
# server must be signed with: tests/hostile/test_input.py tries it on a server of its own.
SIGNED_OPERATIONS = [op for op in OPERATIONS if op != ("POST", "/v1/cluster-key")]


class Sign(requests.auth.AuthBase):
    """Signs a prepared request over exactly what goes on the wire: method, path and
    query as encoded, and the body bytes."""

    def __init__(self, key: bytes):
        self.key = key

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode()
        r.headers.update(auth.sign_request(self.key, r.method, r.path_url, body))
        return r



@pytest.fixture(scope="module")
def api(shared_server):
    """The description the running server publishes, fetched with a signed request."""
    r = shared_server.request("GET", "/openapi.json")
    assert r.status_code == 200, r.text
    assert r.json() == build_app(None).openapi()
    return schemathesis.openapi.from_dict(r.json())


class PeerTLS(requests.adapters.HTTPAdapter):
    """TLS as a peer the server admits talks it (Server.tls): the server's pinned
    certificate, not a host name, says who it is."""

    def __init__(self, tls):
        self.tls = tls
        super().__init__()

    def init_poolmanager(self, *args, **kw):
        super().init_poolmanager(*args, ssl_context=self.tls, assert_hostname=False, **kw)


def session(server: Server, key: bytes | None) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # 127.0.0.1 only, whatever proxy the environment names
    s.mount("https://", PeerTLS(server.tls))
    if key:
        s.auth = Sign(key)
    return s


def fuzz(api, method: str, path: str, check, examples: int) -> None:
    """Run `check(case)` on generated cases, valid and invalid, of one operation."""
    operation = api[path][method]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE))

    @bounded(examples)
    @given(case=cases)
    def run(case):
        check(case)

    run()


def call(case, server: Server, http: requests.Session):
    body = case.body
    if isinstance(body, dict) and re.fullmatch(r"[0-9a-f]{32}", str(body.get("device"))):
        # a well-formed sender: the admitted peer's, so that a push reaches the merge
        # (one in another device's name gets 403: tests/hostile/test_input.py)
        body["device"] = server.peer_device
    before = server.snapshot()
    response = case.call(base_url=server.url, session=http)
    assert server.alive(), f"syncd serve died on\n{case.as_curl_command()}\n{server.log()}"
    if 400 <= response.status_code < 500:
        assert server.snapshot() == before, (
            f"a refused request ({response.status_code}) changed the index or store:\n"
            f"{case.as_curl_command()}\n{response.text[:500]}")
    return response


@pytest.mark.parametrize(("method", "path"), SIGNED_OPERATIONS)
def test_signed_requests(api, server, method, path):
    server.expect_log(r"WARNING refused ")  # one line per malformed request, by design
    with session(server, server.key) as http:
        def check(case):
            response = call(case, server, http)
            case.validate_response(response, checks=[not_a_server_error,
                                                     negative_data_rejection])
            assert response.status_code != 401, response.text

        fuzz(api, method, path, check, EXAMPLES)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_unsigned_requests_are_all_refused(api, server, method, path):
    server.expect_log(r"WARNING refused ")
    with session(server, None) as http:
        def check(case):
            response = call(case, server, http)
            assert response.status_code == 401, response.text

        fuzz(api, method, path, check, max(5, EXAMPLES // 4))
