"""Prometheus metrics of the serving process, served at /metrics beside the status page
(syncd/ui.py; docs/cli.md, "syncd ui" lists them).

The counters of traffic and fetch time are kept where the work is done (peerlink.py,
api.py, fetcher.py), in this process-wide registry; what the status already knows
(pending changes per peer, conflict copies) and the mount's request counts are read when
scraped, by `Snapshot`, so nothing is computed twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_*: memory, CPU time, open files
PlatformCollector(registry=REGISTRY)  # python_info

# `peer` is the peer's name for the exchanges this machine starts (pushes, fetches,
# hellos); empty for its answers to peers' requests, whose signature names no peer.
BYTES_SENT = Counter("syncd_sent_bytes", "Bytes of HTTP bodies sent to peers, as sent "
                     "(compressed when they were)", ["peer"], registry=REGISTRY)
BYTES_RECEIVED = Counter("syncd_received_bytes", "Bytes of HTTP bodies received from peers, "
                         "as received", ["peer"], registry=REGISTRY)
FETCH_SECONDS = Histogram("syncd_fetch_seconds", "Time of one answered request for chunks to a "
                          "peer, until its answer is here (before verifying)", ["peer"],
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                                   30, 60),
                          registry=REGISTRY)


class Snapshot(Collector):
    """What the status says, read at each scrape: `status` gives the status page's data
    (syncd/commands/status.py's shape), `requests` the mount's requests by operation
    (empty without a mount)."""

    def __init__(self, status: Callable[[], dict], requests: Mapping[str, int]):
        self.status = status
        self.requests = requests

    def collect(self) -> Iterator[Metric]:
        found = self.status()
        pending = GaugeMetricFamily("syncd_pending_changes", "Changes a peer has not "
                                    "confirmed yet (syncd status's pending_changes)",
                                    labels=["peer"])
        waiting = GaugeMetricFamily("syncd_pending_bytes", "Content bytes of those changes",
                                    labels=["peer"])
        online = GaugeMetricFamily("syncd_peer_online", "1 when the peer answers, else 0",
                                   labels=["peer"])
        for p in found["peers"]:
            pending.add_metric([p["name"]], p["pending_changes"])
            waiting.add_metric([p["name"]], p["pending_bytes"])
            online.add_metric([p["name"]], p["state"] == "online")
        yield from (pending, waiting, online)
        yield GaugeMetricFamily("syncd_conflicts", "Conflict copies in the share now",
                                value=found["files"]["conflicts"])
        fuse = CounterMetricFamily("syncd_fuse_requests", "FUSE requests answered, by "
                                   "operation", labels=["kind"])
        for kind, count in sorted(self.requests.items()):
            fuse.add_metric([kind], count)
        yield fuse

    def describe(self) -> list[Metric]:
        return []  # computed at each scrape: nothing to check at registration
