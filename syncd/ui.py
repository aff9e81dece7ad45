"""The status page and /metrics: read-only HTTP on a loopback socket of its own
(`ui_listen`), served by the serving process beside the peer API (docs/cli.md, "syncd ui").

Every request must carry the home's token (HOME/ui.token, as `syncd ui` prints it in the
URL, or `Authorization: Bearer TOKEN`) and a Host header naming the listening address, so
another user of the machine cannot read it, nor a web page through DNS rebinding. What the
page shows is what `syncd status` gathers (commands/status.py), from this process's own
catalog, rendered by statuspage.py.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import time
from collections import deque
from typing import Protocol

import trio
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from hypercorn.config import Config
from hypercorn.trio import serve as serve_http
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from syncd.commands.history import event_json
from syncd.commands.status import gather
from syncd.home import Home
from syncd.index.catalog import Catalog
from syncd.index.history import history
from syncd.index.peers import list_peers, pending_for
from syncd.metrics import REGISTRY, Snapshot
from syncd.statuspage import HISTORY_SPAN, RECENT_SPAN, View, render

log = logging.getLogger(__name__)

SAMPLE_EVERY = 60.0  # seconds between two samples of the pending counts (the plot)
RECENT_MAX = 20  # events of the history shown
RECENT_ROWS = 2000  # of the latest journal rows: what a page reads of the history
CONFLICTS_MAX = 50
# Headers of every answer: nothing runs, nothing is framed, nothing is cached, and the
# token in the URL never leaves in a Referer.
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
           "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class PendingHistory:
    """Each peer's pending changes over the last HISTORY_SPAN, one sample every
    SAMPLE_EVERY, in memory: a fixed number of points per peer."""

    def __init__(self) -> None:
        self.points: dict[str, deque[tuple[float, int]]] = {}

    def add(self, at: float, pending: dict[str, int]) -> None:
        for name in set(self.points) - set(pending):  # peers removed meanwhile
            del self.points[name]
        for name, count in pending.items():
            self.points.setdefault(name, deque(maxlen=int(HISTORY_SPAN / SAMPLE_EVERY) + 1)
                                   ).append((at, count))

    def series(self, now: float, current: dict[str, int]) -> dict[str, list[tuple[float, int]]]:
        """The samples of each peer of `current`, ending with its count now."""
        return {name: [*self.points.get(name, ()), (now, count)]
                for name, count in current.items()}


class Gate:
    """Lets through requests with the token and the listening address as Host."""

    def __init__(self, token: str):
        self.token = token
        self.host: str | None = None  # HOST:PORT once bound (the port may be a free one)

    def refusal(self, request: Request) -> Response | None:
        host = request.headers.get("host", "")
        if self.host is None or host.lower() != self.host.lower():
            return PlainTextResponse(f"refused: Host {host!r} is not this page's address",
                                     400, headers=HEADERS)
        given = request.query_params.get("token") or \
            request.headers.get("authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return PlainTextResponse("refused: missing or wrong token ('syncd ui' prints "
                                     "the page's URL with it)", 403, headers=HEADERS)
        return None


class Source(Protocol):
    """What the page reads of the daemon (syncd/daemon.py)."""
    home: Home
    catalog: Catalog

    def live_peers(self) -> dict[str, dict]: ...

    def transfers(self) -> dict: ...

    def cache(self) -> dict: ...


class StatusPage:
    """The page and the metrics of one serving process, from its daemon's parts."""

    def __init__(self, daemon: Source, listen: str, mountpoint: str | None):
        self.daemon = daemon
        self.listen = listen
        self.mountpoint = mountpoint
        self.url: str | None = None  # http://HOST:PORT, once bound
        self.pending = PendingHistory()

    def status(self) -> dict:
        """What `syncd status --json` says, from this process's own catalog."""
        d = self.daemon
        # Not home.holder(): closing a descriptor of the lock file would drop this
        # process's own lock on it (fcntl locks are the process's).
        return gather(d.home, d.catalog, self.mountpoint, os.getpid(), d.live_peers(),
                      d.transfers(), d.cache(), d.live_relays())

    def view(self) -> View:
        catalog = self.daemon.catalog
        s = self.status()
        now = time.time()
        recent = history(catalog.db, int(now - RECENT_SPAN), list_peers(catalog.db),
                         after=max(catalog.seq - RECENT_ROWS, 0))
        conflicts = catalog.conflicts() if s["files"]["conflicts"] else []
        return View(
            status=s,
            series=self.pending.series(now, {p["name"]: p["pending_changes"]
                                             for p in s["peers"]}),
            recent=[event_json(e) for e in recent[-RECENT_MAX:]],
            conflicts=[{"path": c.path, "size": c.size} for c in conflicts[:CONFLICTS_MAX]],
            conflicts_total=len(conflicts), now=now)

    async def run(self, fuse_requests, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; `fuse_requests` is the mount's count of requests by
        operation (read only)."""
        gate = Gate(self.daemon.home.ui_token())
        mine = CollectorRegistry()  # this page's, beside the process-wide counters
        mine.register(Snapshot(self.status, fuse_requests))
        app = build_app(gate, lambda: render(self.view()),
                        lambda: generate_latest(REGISTRY) + generate_latest(mine))
        async with trio.open_nursery() as nursery:
            try:
                binds = await nursery.start(functools.partial(
                    serve_http, app, http_config(self.listen),
                    shutdown_trigger=trio.sleep_forever))
            except OSError as e:
                raise OSError(e.errno, f"cannot listen on {self.listen} for the status "
                                       f"page (ui_listen): {e.strerror}") from None
            self.url = binds[0]
            gate.host = self.url.removeprefix("http://")
            log.info("status page on %s (syncd ui prints its URL)", self.url)
            nursery.start_soon(self._sample)
            task_status.started()

    async def _sample(self) -> None:
        """Each peer's pending changes every SAMPLE_EVERY, for the plot: what `syncd
        status` counts (index/peers.py)."""
        db = self.daemon.catalog.db
        while True:
            self.pending.add(time.time(), {p.name: pending_for(db, p).changes
                                           for p in list_peers(db)})
            await trio.sleep(SAMPLE_EVERY)


def http_config(listen: str) -> Config:
    config = Config()
    config.bind = [listen]
    config.accesslog = None
    config.loglevel = "WARNING"
    return config


def build_app(gate: Gate, page, metrics) -> FastAPI:
    """`page()` gives the HTML, `metrics()` the metrics' text."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        return gate.refusal(request) or await call_next(request)

    @app.get("/")
    async def show() -> HTMLResponse:
        return HTMLResponse(page(), headers=HEADERS)

    @app.get("/metrics")
    async def scrape() -> Response:
        return Response(metrics(), media_type=CONTENT_TYPE_LATEST, headers=HEADERS)

    return app
