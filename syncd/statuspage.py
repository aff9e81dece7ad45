"""The HTML of the status page (syncd/ui.py serves it): rendered here, an inline SVG plot
included, with no script, and reloading itself."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field

from syncd.commands.status import human_size, why_not_online
from syncd.home import utc

HISTORY_SPAN = 6 * 3600  # seconds of pending counts the plot shows
REFRESH = 10  # seconds between two loads of the page
RECENT_SPAN = 900  # seconds of `syncd log` the page shows


@dataclass
class View:
    """What one rendering of the page shows (gathered by the daemon)."""
    status: dict  # syncd/commands/status.py's shape, transfers included
    series: dict[str, list[tuple[float, int]]]
    recent: list[dict]  # `syncd log --json` events, newest last
    conflicts: list[dict]  # {"path", "size"}
    conflicts_total: int
    now: float = field(default_factory=time.time)


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fff }
h1 { font-size: 1.3em } h2 { font-size: 1.1em; margin-top: 1.6em }
table { border-collapse: collapse } td, th { padding: .25em .8em; text-align: left }
th { border-bottom: 2px solid #888 } td { border-bottom: 1px solid #ddd }
td.n { text-align: right } .online { color: #176f2c; font-weight: bold }
.offline { color: #b3261e; font-weight: bold } .note { color: #666; font-weight: normal }
td.t { white-space: nowrap }
tr.peer.offline-row { background: #fdecea } tr.peer { background: #f3f7fb }
"""
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"]


def _e(value: object) -> str:
    return html.escape(str(value))


def render(v: View) -> str:
    s = v.status
    f = s["files"]
    where = (f"mounted at {_e(s['mounted_at'])}" if s["mounted_at"] else "served without "
             "a mount")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH}">
<title>syncd: {_e(s['device']['name'])}</title><style>{STYLE}</style></head>
<body>
<h1>syncd: {_e(s['device']['name'])}</h1>
<p>{where} (pid {_e(s['pid'])}); device {_e(s['device']['id'])}, seq {_e(s['device']['seq'])}.
{_e(f['total'])} files ({_e(human_size(f['bytes']))}): {_e(f['local'])} here,
{_e(f['missing'])} missing, {_e(f['pinned'])} pinned. As of {_e(utc(int(v.now)))};
this page reloads every {REFRESH} s.</p>
<h2>Peers</h2>
{_peers(s['peers'])}
<h2>Relays</h2>
<p id="relays" class="note">No relays: this version of syncd has none yet.</p>
<h2>Pending changes per peer, last {HISTORY_SPAN // 3600} hours</h2>
{plot(v.series, v.now)}
<h2>Transfers in flight</h2>
{_transfers(s['transfers'])}
<h2>Conflicts</h2>
{_conflicts(v.conflicts, v.conflicts_total)}
<h2>Recent history</h2>
{_recent(v.recent)}
</body></html>
"""


def _table(head: tuple[str, ...], rows: list[str], id_: str) -> str:
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f'<table id="{id_}"><thead><tr>{cells}</tr></thead><tbody>{"".join(rows)}' \
        "</tbody></table>"


def _peers(peers: list[dict]) -> str:
    if not peers:
        return '<p id="peers" class="note">No peers: add one with syncd peer add.</p>'
    rows = []
    for p in peers:
        state = p["state"]
        why = "" if state == "online" else f'<br><span class="note">{_e(why_not_online(p))}' \
            "</span>"
        rows.append(
            f'<tr class="peer{" offline-row" if state == "offline" else ""}" '
            f'data-peer="{_e(p["name"])}"><td>{_e(p["name"])}</td>'
            f'<td class="{_e(state)}">{_e(state)}{why}</td>'
            f'<td class="t">{_e(p["last_seen"] or "never")}</td>'
            f'<td class="n">{_e(p["pending_changes"])}</td>'
            f'<td class="n t">{_e(human_size(p["pending_bytes"]))}</td>'
            f'<td class="t">{_e(p["oldest_pending"] or "-")}</td></tr>')
    return _table(("Peer", "State", "Last seen", "Pending", "Bytes", "Oldest pending"),
                  rows, "peers")


def _transfers(t: dict | None) -> str:
    if not t or not (t["arriving"] or t["prefetching"]):
        return '<p id="transfers" class="note">Nothing is being fetched.</p>'
    rows = []
    for a in t["arriving"]:
        share = a["chunks_here"] / a["chunks"] if a["chunks"] else 1.0
        rows.append(f'<tr><td>{_e(a["name"])}</td><td><progress max="{a["chunks"]}" '
                    f'value="{a["chunks_here"]}"></progress> {share:.0%}</td>'
                    f'<td class="n">{a["chunks_here"]} of {a["chunks"]} chunk(s)</td></tr>')
    small = (f'<p class="note">{t["prefetching"]} small file(s) being fetched ahead of '
             "time.</p>") if t["prefetching"] else ""
    return _table(("File", "Progress", "Chunks"), rows, "transfers") + small


def _conflicts(shown: list[dict], total: int) -> str:
    if not total:
        return '<p id="conflicts" class="note">No conflict copies.</p>'
    rows = [f'<tr><td>{_e(c["path"])}</td><td class="n">{_e(human_size(c["size"]))}</td></tr>'
            for c in shown]
    more = f'<p class="note">and {total - len(shown)} more (syncd conflicts).</p>' \
        if total > len(shown) else ""
    return _table(("Conflict copy", "Size"), rows, "conflicts") + more


def _recent(events: list[dict]) -> str:
    if not events:
        return (f'<p id="history" class="note">Nothing in the last {RECENT_SPAN // 60} '
                "minutes.</p>")
    rows = [f'<tr><td class="t">{_e(e["time"])}</td><td>{_e(e["event"])}</td>'
            f'<td>{_e(e["peer"] or "-")}</td><td>{_e(e["change"] or "")}</td>'
            f'<td>{_e(e["path"])}</td></tr>' for e in reversed(events)]
    return _table(("Time", "Event", "Peer", "Change", "Path"), rows, "history")


def plot(series: dict[str, list[tuple[float, int]]], now: float, width: int = 720,
         height: int = 220) -> str:
    """Pending changes per peer as lines over time, an inline SVG: time runs from the
    first sample (HISTORY_SPAN ago at most, 10 minutes at least) to now."""
    if not series:
        return '<p id="plot" class="note">No peers to plot.</p>'
    left, right, top, bottom = 48, 110, 10, 28
    start = min(min(t for t, _ in points) for points in series.values())
    start = min(max(start, now - HISTORY_SPAN), now - 600)
    high = max(1, *(n for points in series.values() for _, n in points))
    w, h = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return left + w * (t - start) / (now - start)

    def y(n: int) -> float:
        return top + h * (1 - n / high)

    parts = [f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" '
             'stroke="#888"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + h}" stroke="#888"/>',
             f'<text x="{left - 6}" y="{top + 10}" text-anchor="end">{high}</text>',
             f'<text x="{left - 6}" y="{top + h}" text-anchor="end">0</text>',
             f'<text x="{left}" y="{height - 8}">{_e(utc(int(start))[11:16])}</text>',
             f'<text x="{left + w}" y="{height - 8}" text-anchor="end">now</text>']
    for i, (name, points) in enumerate(sorted(series.items())):
        color = COLORS[i % len(COLORS)]
        xy = " ".join(f"{x(t):.1f},{y(n):.1f}" for t, n in points if t >= start)
        parts.append(f'<polyline class="series" data-peer="{_e(name)}" fill="none" '
                     f'stroke="{color}" stroke-width="2" points="{xy}"/>')
        parts.append(f'<text x="{left + w + 8}" y="{top + 14 + 16 * i}" fill="{color}">'
                     f'{_e(name)} ({points[-1][1]})</text>')
    return (f'<svg id="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" font-size="12" role="img" aria-label="pending changes per '
            f'peer">{"".join(parts)}</svg>')
