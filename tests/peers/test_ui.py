"""The status page and its metrics (`syncd ui`, docs/cli.md): served by a real mount on
loopback, read by a real headless browser (Debian's chromium, driven by selenium through
chromedriver) and by a real HTTP client, with one peer offline."""

from __future__ import annotations

import io
import os
import socket
import stat
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from syncd import statuspage, ui
from tests.helpers import assert_clean_error, fuse_mounts, served_log, syncd, wait_for
from tests.peers.conftest import wait_content

BIG = 600_000  # above prefetch_below: beta fetches it when it opens it


def metrics(url: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, from a real scrape."""
    r = httpx.get(url)
    assert r.status_code == 200, r.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def without_token(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(query=""))


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1100,900", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()


def shows(shot: Image.Image, rect: dict, background: tuple[int, int, int]) -> bool:
    """The screenshot shows a row at `rect` (CSS pixels, scale 1): the box lies inside
    the image, most of it has the row's background colour as the DOM computes it, and
    some of it is dark (its text)."""
    left, top = int(rect["x"]), int(rect["y"])
    right, bottom = left + int(rect["width"]), top + int(rect["height"])
    assert 0 <= left < right <= shot.width and 0 <= top < bottom <= shot.height, rect
    raw = shot.crop((left, top, right, bottom)).convert("RGB").tobytes()
    pixels = [tuple(raw[i:i + 3]) for i in range(0, len(raw), 3)]
    same = sum(1 for p in pixels
               if max(abs(a - b) for a, b in zip(p, background, strict=True)) <= 6)
    dark = sum(1 for p in pixels if sum(p) < 300)
    return same > 0.4 * len(pixels) and dark > 20


def rgb(css: str) -> tuple[int, int, int]:
    """'rgb(253, 236, 234)' or 'rgba(...)' -> (253, 236, 234)."""
    return tuple(int(float(n)) for n in css[css.index("(") + 1:-1].split(",")[:3])


def test_the_page_with_a_peer_offline(cluster, browser, tmp_path):
    a, b = cluster(2)
    (a / "big").write_bytes(os.urandom(BIG))
    wait_content(b / "big", (a / "big").read_bytes())  # beta fetches it: traffic both ways
    beta_metrics = syncd(b.home, "ui", "--metrics").stdout.strip()
    fetched = metrics(beta_metrics)
    assert fetched[("syncd_fetch_seconds_count", (("peer", "alpha"),))] >= 1
    assert fetched[("syncd_received_bytes_total", (("peer", "alpha"),))] >= BIG
    b.stop()
    for n in range(3):
        (a / f"new{n}").write_bytes(b"n" * 1000 * (n + 1))
    wait_for(lambda: a.peer("beta")["state"] == "offline"
             and a.peer("beta")["pending_changes"] == 3, 20, "beta offline, 3 pending")

    url = syncd(a.home, "ui").stdout.strip()
    assert urlsplit(url).hostname == "127.0.0.1" and urlsplit(url).path == "/"
    token = (a.home / "ui.token").read_text().strip()
    assert stat.S_IMODE(os.stat(a.home / "ui.token").st_mode) == 0o600
    assert f"token={token}" in url

    # Served without JavaScript: the rows are in the HTML, and no script may run.
    r = httpx.get(url)
    assert r.status_code == 200
    assert '<tr class="peer offline-row" data-peer="beta">' in r.text
    assert "<script" not in r.text and "default-src 'none'" in \
        r.headers["content-security-policy"]
    assert '<meta http-equiv="refresh"' in r.text
    assert '<polyline class="series" data-peer="beta"' in r.text

    browser.get(url)
    (row,) = browser.find_elements(By.CSS_SELECTOR, "#peers tr.peer")
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[0] == "beta" and cells[1].startswith("offline")
    assert "does not answer" in cells[1]  # why, under its state
    assert cells[3] == "3" and cells[4] == "5.9 KiB" and cells[5] != "-"
    assert browser.find_element(By.ID, "relays").text.startswith("No relays")
    history = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#history tbody tr")]
    assert any("sent beta create big" in line for line in history), history
    assert browser.find_element(By.ID, "conflicts").text == "No conflict copies."
    points = browser.find_element(By.CSS_SELECTOR, "#plot polyline[data-peer=beta]")
    assert points.get_attribute("points").count(",") >= 2
    background = rgb(row.value_of_css_property("background-color"))
    assert background != (255, 255, 255)  # the offline row stands out
    shot = Image.open(io.BytesIO(browser.get_screenshot_as_png()))
    shot.save(tmp_path / "page.png")  # for a look when this fails
    assert shows(shot, row.rect, background)
    header = browser.find_element(By.CSS_SELECTOR, "#peers thead tr")
    assert not shows(shot, header.rect, background)  # the check tells rows apart

    scraped = metrics(url.replace("/?", "/metrics?"))
    assert scraped[("syncd_pending_changes", (("peer", "beta"),))] == 3
    assert scraped[("syncd_pending_bytes", (("peer", "beta"),))] == 6000
    assert scraped[("syncd_peer_online", (("peer", "beta"),))] == 0
    assert scraped[("syncd_conflicts", ())] == 0
    assert scraped[("syncd_fuse_requests_total", (("kind", "create"),))] >= 4
    assert scraped[("syncd_fuse_requests_total", (("kind", "write"),))] >= 4
    assert scraped[("syncd_sent_bytes_total", (("peer", ""),))] >= BIG  # beta's fetch
    assert scraped[("syncd_sent_bytes_total", (("peer", "beta"),))] > 0  # pushes, hellos
    assert scraped[("process_resident_memory_bytes", ())] > 0
    assert syncd(a.home, "ui", "--metrics").stdout.strip() == \
        url.replace("/?", "/metrics?")

    # The token stays across a restart (the port is a free one each time).
    a.stop()
    a.start()
    assert f"token={token}" in syncd(a.home, "ui").stdout


def test_requests_without_the_token_or_with_another_host_are_refused(cluster):
    (a,) = cluster(1)
    url = syncd(a.home, "ui").stdout.strip()
    address = urlsplit(url).netloc
    assert httpx.get(url).status_code == 200
    refused = [
        httpx.get(without_token(url)),
        httpx.get(without_token(url) + "?token=wrong"),
        httpx.get(url.replace("/?", "/metrics?").split("?")[0]),
        httpx.get(without_token(url), headers={"Authorization": "Bearer wrong"}),
        httpx.get(url, headers={"Host": "evil.example"}),  # DNS rebinding
        httpx.get(url, headers={"Host": f"localhost:{urlsplit(url).port}"}),
        httpx.get(url.replace("/?", "/metrics?"), headers={"Host": "evil.example"}),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403, 403, 400, 400, 400]
    assert all(a.name not in r.text and "peer" not in r.text for r in refused)
    assert "token" in refused[0].text and "evil.example" in refused[4].text
    token = (a.home / "ui.token").read_text().strip()
    bearer = httpx.get(f"http://{address}/metrics",
                       headers={"Authorization": f"Bearer {token}"})
    assert bearer.status_code == 200 and "syncd_pending_changes" in bearer.text


def test_ui_without_a_serving_process(home):
    assert_clean_error(syncd(home, "ui", check=False), 4, "nothing serves")
    assert not (home / "ui.token").exists()


def test_a_taken_ui_listen_port_is_a_clear_error(home, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        syncd(home, "config", "set", "ui_listen", f"127.0.0.1:{port}")
        served_log(home / "mount.log").expect_log("cannot listen for the status page")
        (tmp_path / "mnt").mkdir()
        done = syncd(home, "mount", str(tmp_path / "mnt"), check=False)
    assert_clean_error(done, 1, f"cannot listen for the status page on 127.0.0.1:{port}")
    assert "syncd config set ui_listen" in done.stderr
    assert str(tmp_path / "mnt") not in fuse_mounts()


def test_the_plot_keeps_six_hours_per_peer():
    history = ui.PendingHistory()
    for minute in range(1000):
        history.add(minute * 60.0, {"beta": minute, "gamma": 1})
    assert [len(history.points[p]) for p in ("beta", "gamma")] == [361, 361]
    assert history.points["beta"][0] == ((1000 - 361) * 60.0, 1000 - 361)
    history.add(1000 * 60.0, {"beta": 0})  # gamma was removed
    assert list(history.points) == ["beta"]
    assert history.series(1000 * 60.0 + 5, {"beta": 7})["beta"][-1] == (60005.0, 7)


def test_the_page_shows_transfers_and_conflicts_as_text():
    status = {"device": {"id": "d" * 32, "name": "alpha", "seq": 9}, "mounted_at": "/m",
              "pid": 1, "files": {"total": 2, "bytes": 10, "local": 1, "missing": 1,
                                  "pinned": 0, "conflicts": 4},
              "peers": [], "transfers": {"fetching": ["<b>x</b>.bin"], "prefetching": 2,
                                         "arriving": [{"name": "<b>x</b>.bin", "chunks": 8,
                                                       "chunks_here": 2}]}}
    page = statuspage.render(statuspage.View(status=status, series={}, recent=[], conflicts_total=4,
                             conflicts=[{"path": "a.sync-conflict-<i>.txt", "size": 3}]))
    assert '<progress max="8" value="2"></progress> 25%' in page
    assert "&lt;b&gt;x&lt;/b&gt;.bin" in page and "<b>x</b>" not in page
    assert "a.sync-conflict-&lt;i&gt;.txt" in page and "and 3 more" in page
    assert "2 small file(s) being fetched ahead of time" in page
    assert "No peers" in page and "<script" not in page
