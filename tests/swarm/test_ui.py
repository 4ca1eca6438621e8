"""The page ``swarm ui`` opens: served by the peer on loopback, only with its token, fed by
server-sent events; and, where Chromium is installed, loaded in a real headless browser that must
show the devices and follow a change."""

from __future__ import annotations

import json
import shutil

import pytest
import trio
from test_metrics import _get, _raw
from test_pairing import new_home, running

from homeswarm.cli import main
from homeswarm.errors import InvalidArgument
from homeswarm.swarm._control import ask_async

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def split(url: str) -> tuple[str, int, str]:
    hostport, _, rest = url.removeprefix("http://").partition("/")
    host, port = hostport.split(":")
    return host, int(port), "/" + rest


async def first_event(host: str, port: int, path: str) -> dict:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            data = b""
            while b"event: status\ndata: " not in data or not data.endswith(b"\n\n"):
                data += await stream.receive_some(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"text/event-stream" in head
    line = body.split(b"event: status\ndata: ", 1)[1].split(b"\n", 1)[0]
    return json.loads(line)


async def test_the_page_and_its_events_need_the_token(tmp_path):
    ident = new_home(tmp_path / "laptop")
    async with running(ident):
        await ask_async(ident.home, "vault.put", key="facts/a", value='"x"', scope="public")
        url = (await ask_async(ident.home, "status"))["endpoints"]["ui"]
        host, port, path = split(url)
        token = path.split("token=")[1]
        head, body = await _get(host, port, path)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"Content-Security-Policy: default-src 'none'" in head
        assert b"<title>swarm</title>" in body
        assert b"http://" not in body  # it loads nothing from elsewhere
        for bad in ("/", "/?token=", "/?token=" + token[:-1] + "x", "/events", "/events?t=1"):
            assert (await _get(host, port, bad))[0].startswith(b"HTTP/1.1 403"), bad
        status = await first_event(host, port, f"/events?token={token}")
        assert [p["name"] for p in status["peers"]] == ["laptop"]
        assert status["vault"]["scopes"]["public"]["entries"]["facts"] == 1
        assert status["runs"] == []
        raw = await _raw(host, port, f"HEAD /?token={token} HTTP/1.1\r\n\r\n".encode())
        assert raw.startswith(b"HTTP/1.1 200")
        assert raw.endswith(b"\r\n\r\n")  # the head only


def test_swarm_ui_prints_the_address_or_says_no_peer(tmp_path, capsys):
    ident = new_home(tmp_path / "laptop")
    assert main(["ui", "--home", str(ident.home), "--no-browser"]) == 1
    assert "no peer" in capsys.readouterr().err.lower()


CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser():
    """Headless Chromium driven by Selenium with Debian's chromedriver (nothing downloaded)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service as DriverService

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shown_devices(driver) -> dict[str, str]:
    text = driver.execute_script("return document.body.dataset.devices || ''")
    return dict(item.split(":", 1) for item in text.split(",") if ":" in item)


def wait_for_page(driver, check, what: str, timeout: float) -> None:
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.2).until(
        lambda d: check(shown_devices(d)), message=what
    )


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no chromium/chromedriver here (apt-get install chromium chromium-driver)",
)
def test_a_real_browser_shows_the_demo_and_follows_a_death(tmp_path, browser):
    from homeswarm.cli._demo import Swarm
    from homeswarm.swarm._control_client import ask

    swarm = Swarm(tmp_path / "demo")
    swarm.root.mkdir()
    try:
        swarm.create(3)
        server, laptop, _ = swarm.homes
        swarm.wait_alive(3, timeout=30)
        browser.get(ask(server, "status")["endpoints"]["ui"])
        everyone = {"server": "alive", "laptop": "alive", "phone": "alive"}
        wait_for_page(browser, lambda d: d == everyone, "three devices alive on the page", 20)
        rows = browser.execute_script(
            "return document.querySelectorAll('#devices tbody tr').length"
        )
        assert rows == 3
        # the page must follow, by itself (the laptop: a full member, declared dead; the phone on
        # battery is light, and would show away when its lease lapsed)
        swarm.procs[laptop].kill()
        dead = "the laptop dead on the page"
        wait_for_page(browser, lambda d: d.get("laptop") == "dead", dead, 40)
        assert shown_devices(browser)["server"] == "alive"
        banner = browser.execute_script("return document.getElementById('banner').className")
        assert banner == ""
    finally:
        swarm.stop()


def test_swarm_ui_results_serves_a_simulation_run(tmp_path):
    from homeswarm.cli._ui import results_page

    out = tmp_path / "run"
    out.mkdir()
    (out / "result.json").write_text('{"scenario": "day", "metrics": {"x<y": 1}}')
    (out / "battery plot.png").write_bytes(b"\x89PNG fake")
    page = results_page(out, "t0k").decode()
    assert "src='plot/battery%20plot.png?token=t0k'" in page
    assert "x&lt;y" in page  # figures escaped
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidArgument, match=r"no result\.json"):
        results_page(empty)
