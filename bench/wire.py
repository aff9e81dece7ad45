"""The wire's own ceiling: a bare hypercorn server and an httpx client, nothing of syncd's
but its TLS contexts, moving a big file's bytes as syncd's fetcher asks for them.

    python bench/wire.py --mib 256 --repeat 3

The nearest reference on the same stack for bench/sync.py's big-file row: two processes
on 127.0.0.1 (server and client, as two peers are), mutual TLS 1.3 with P-256
certificates made by syncd.identity, GETs of PER_REQUEST MiB bodies from memory with
PARALLEL requests in flight (syncd/fetcher.py's figures), read with `aiter_raw` through
syncd/tlsread.py's transport, as syncd/peerlink.py reads them. No signing, hashing or disk
on either side, so whatever syncd reaches, this bounds. bench/sync.py runs it in the
same run as its own big file.
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio
from common import cpu_seconds, free_port

from syncd import identity, tlsread
from syncd.fetcher import PARALLEL, PER_REQUEST

MIB = 1 << 20


def serve(port: int, certs: Path, one_body: bool = False) -> None:
    """The server process: GET /N answers N MiB from memory, in 1 MiB messages, as
    syncd's Signed layer hands an answer to TLS (api.SEND_SLICE); `one_body`: as one
    message of N MiB, as it did before."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as serve_http

    me = identity.load(certs / "server.pem")
    trust = identity.TrustStore(me)
    trust.set([identity.load(certs / "client.pem").cert.pem])
    block = bytes(range(256)) * (MIB // 256)

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        n = int(scope["path"].strip("/"))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(n * MIB).encode())]})
        if one_body:
            await send({"type": "http.response.body", "body": block * n})
            return
        for i in range(n):
            await send({"type": "http.response.body", "body": block, "more_body": i < n - 1})

    class TLS(Config):
        def create_ssl_context(self):
            return trust.listening

    config = TLS()
    config.certfile = config.keyfile = str(me.path)
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = config.errorlog = None
    trio.run(serve_http, app, config)


async def fetch(port: int, certs: Path, mib: int) -> float:
    """Seconds to move `mib` MiB in PER_REQUEST MiB GETs, PARALLEL in flight."""
    me = identity.load(certs / "client.pem")
    ctx = identity.client_context(me, identity.load(certs / "server.pem").cert.pem)
    requests = [PER_REQUEST] * (mib // PER_REQUEST) + ([mib % PER_REQUEST] if mib % PER_REQUEST
                                                       else [])
    async with httpx.AsyncClient(transport=tlsread.Transport(verify=ctx),
                                 base_url=f"https://127.0.0.1:{port}") as client:
        await client.get("/1")  # the handshake, as a kept-alive peer connection has had it
        t = time.perf_counter()

        async def worker():
            while requests:
                n = requests.pop()
                async with client.stream("GET", f"/{n}") as r:
                    got = sum([len(part) async for part in r.aiter_raw()])
                    if got != n * MIB:
                        raise RuntimeError(f"short body: {got} of {n * MIB} bytes")
        async with trio.open_nursery() as nursery:
            for _ in range(PARALLEL):
                nursery.start_soon(worker)
        return time.perf_counter() - t


def measure(mib: int, repeat: int, one_body: bool = False) -> tuple[list[float], list[float]]:
    """MB/s of `repeat` runs, each against a fresh server process, and the CPU seconds
    each run took, server and client together (load on the machine disturbs these less)."""
    with tempfile.TemporaryDirectory(prefix="syncd-wire-") as tmp:
        certs = Path(tmp)
        identity.ensure(certs / "server.pem", "a" * 32)
        identity.ensure(certs / "client.pem", "b" * 32)
        out, cpu = [], []
        for _ in range(repeat):
            port = free_port()
            server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), tmp]
                                      + ["--one-body"] * one_body)
            try:
                for _ in range(200):
                    if server.poll() is not None:
                        raise RuntimeError("the wire bench's server did not start")
                    try:
                        httpx.get(f"https://127.0.0.1:{port}/0", verify=False, timeout=1)
                        break
                    except httpx.HTTPError:
                        time.sleep(0.05)
                before = cpu_seconds(server.pid) + time.process_time()
                out.append(mib * MIB / 1e6 / trio.run(fetch, port, certs, mib))
                cpu.append(cpu_seconds(server.pid) + time.process_time() - before)
            finally:
                server.terminate()
                server.wait(10)
        return out, cpu


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mib", type=int, default=256, help="bytes to move, in MiB (default 256)")
    p.add_argument("--repeat", type=int, default=3, help="runs (median; default 3)")
    p.add_argument("--one-body", action="store_true",
                   help="the server hands each answer to TLS as one message (syncd before "
                        "its 1 MiB slices) instead of 1 MiB at a time")
    p.add_argument("--serve", nargs=2, metavar=("PORT", "CERTDIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]), args.one_body)
        return
    runs, cpu = measure(args.mib, args.repeat, args.one_body)
    print(f"hypercorn + httpx, TLS, {PER_REQUEST} MiB per GET"
          f"{' in one message' if args.one_body else ''}, {PARALLEL} in flight: "
          f"{statistics.median(runs):.0f} MB/s median of {len(runs)} "
          f"({', '.join(f'{r:.0f}' for r in runs)}); CPU {statistics.median(cpu):.2f} s a run")


if __name__ == "__main__":
    main()
