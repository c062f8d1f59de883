"""The dashboard as a person uses it, in headless Chromium (Debian's, driven by Selenium): log in with a
token, see the nodes of a running cluster, watch a task appear and finish without reloading, open a
failed task's traceback and output, drain a node as admin and be refused as `read`; a cross-site
form POST is refused; a phone-sized screen needs no sideways scrolling. Screenshots are kept in
tests/artifacts/ (look at them)."""
import http.server
import os
import shutil
import threading
import time

import pytest

import corral
from conftest import Cluster, corral_cli, make_token, wait_until

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts")


@pytest.fixture(scope="module")
def c():
    cluster = Cluster(head_args=("--heartbeat-ms", "200", "--suspect-after-ms", "1000", "--dead-after-ms", "3000"))
    cluster.add_agent(num_cpus=2, labels={"room": "lab"}, extra=("--tasks", "durable_tasks"))
    cluster.add_agent(num_cpus=1)
    cluster.connect()
    cluster.wait_nodes(2)
    with open(f"{cluster.dir}/head/http_address") as f:
        cluster.http = f.read().strip()
    cluster.url = f"http://{cluster.http}/"
    yield cluster
    corral.shutdown()
    cluster.stop()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--disable-gpu", "--no-first-run"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    os.makedirs(ARTIFACTS, exist_ok=True)
    yield driver
    driver.quit()


def by(css):
    from selenium.webdriver.common.by import By
    return By.CSS_SELECTOR, css


def find(d, css, timeout=20, what=None):
    return wait_until(lambda: (d.find_elements(*by(css)) or [None])[0], timeout=timeout, what=what or css)


def text_of(d, css):
    """The element's text now ("" if absent): read in one step, as the live page redraws its tables."""
    return d.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css)


def click(d, css, what=None):
    """Clicks the element (found again if the page redrew it meanwhile)."""
    from selenium.common.exceptions import StaleElementReferenceException

    def attempt():
        try:
            els = d.find_elements(*by(css))
            if els:
                els[0].click()
                return True
        except StaleElementReferenceException:
            pass
        return False
    wait_until(attempt, what=what or css)


def shot(d, name):
    d.save_screenshot(os.path.join(ARTIFACTS, f"dashboard-{name}.png"))


def log_in(d, c, token):
    d.delete_all_cookies()
    d.get(c.url)
    wait_until(lambda: d.find_element(*by("#login")).is_displayed(), what="the login form")
    d.find_element(*by("#token")).send_keys(token)
    d.find_element(*by("#login-button")).click()
    find(d, "#nav a[data-page=nodes]", what="the navigation after logging in")
    wait_until(lambda: "(" in text_of(d, "#who"), what="who is logged in")


def open_page(d, page):
    click(d, f"nav a[data-page={page}]")
    wait_until(lambda: d.find_element(*by(f"section#{page}")).is_displayed(), what=f"the {page} page")


def node_row(d, node_id):
    return text_of(d, f"#nodes-table tr[data-node='{node_id}']")


def test_a_wrong_token_is_refused_on_the_login_form(c, browser):
    browser.delete_all_cookies()
    browser.get(c.url)
    wait_until(lambda: browser.find_element(*by("#login")).is_displayed(), what="the login form")
    browser.find_element(*by("#token")).send_keys("ct_not_a_real_token")
    browser.find_element(*by("#login-button")).click()
    wait_until(lambda: "wrong token" in text_of(browser, "#login-error"), what="the refusal on the form")
    assert not browser.find_element(*by("#nav")).is_displayed()
    shot(browser, "login-refused")


def test_log_in_and_see_the_nodes(c, browser):
    log_in(browser, c, make_token(c, "read", "dash-reader-1"))
    assert "dash-reader-1 (read)" in text_of(browser, "#who")
    wait_until(lambda: "live" in text_of(browser, "#status-line"), what="the live feed")
    cards = wait_until(lambda: text_of(browser, "#cards"), what="the overview cards")
    assert "NODES" in cards.upper() and "2 alive" in cards
    open_page(browser, "nodes")
    for agent in c.agents:
        row = wait_until(lambda: node_row(browser, agent.node_id), what=f"node {agent.node_id[:8]} listed")
        assert "alive" in row
    assert "room=lab" in node_row(browser, c.agents[0].node_id)
    shot(browser, "nodes")
    # The session is a cookie the page's script cannot read, sent only to this site.
    cookie = browser.get_cookie("corral_session")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "corral_session" not in browser.execute_script("return document.cookie")


def test_a_task_appears_and_finishes_without_a_reload(c, browser):
    log_in(browser, c, make_token(c, "read", "dash-reader-2"))
    open_page(browser, "tasks")
    browser.execute_script("window.__not_reloaded = true")

    @corral.remote
    def slow_dashboard_task(x):
        print("working on", x, flush=True)
        import time as t
        t.sleep(3)
        return x

    ref = slow_dashboard_task.remote(7)
    tid = ref.hex()
    row = f"#tasks-table tr[data-task='{tid}']"
    wait_until(lambda: "running" in text_of(browser, row), timeout=30, what="the task shown running")
    shot(browser, "task-running")
    assert corral.get(ref) == 7
    wait_until(lambda: "finished" in text_of(browser, row), timeout=30, what="the task shown finished")
    assert browser.execute_script("return window.__not_reloaded === true"), "the page was reloaded"
    assert "slow_dashboard_task" in text_of(browser, row)
    shot(browser, "task-finished")


def test_a_failed_tasks_traceback_and_output(c, browser):
    log_in(browser, c, make_token(c, "read", "dash-reader-3"))
    open_page(browser, "tasks")

    @corral.remote
    def failing_dashboard_task():
        print("about to fail on purpose", flush=True)
        raise ValueError("broken on purpose for the dashboard")

    ref = failing_dashboard_task.remote()
    with pytest.raises(ValueError):
        corral.get(ref)
    row = f"#tasks-table tr[data-task='{ref.hex()}']"
    wait_until(lambda: "failed" in text_of(browser, row), timeout=30, what="the failed task listed")
    assert "ValueError: broken on purpose for the dashboard" in text_of(browser, row)
    click(browser, row)
    tb = wait_until(lambda: text_of(browser, "#task-traceback"), what="the traceback")
    assert "Traceback" in tb and "ValueError: broken on purpose for the dashboard" in tb
    wait_until(lambda: "about to fail on purpose" in text_of(browser, "#task-log"), what="the task's output")
    assert text_of(browser, "#task-state") == "failed"
    shot(browser, "task-traceback")
    # Filtering by state keeps it and drops the finished ones.
    from selenium.webdriver.support.ui import Select
    Select(browser.find_element(*by("#filter-state"))).select_by_visible_text("failed")
    wait_until(lambda: browser.execute_script(
        "const rows = [...document.querySelectorAll('#tasks-table tr[data-task]')];"
        "return rows.length > 0 && rows.every(r => r.innerText.includes('failed'))")
        and text_of(browser, row), what="only failed tasks listed")


def cli(c, *args):
    out = corral_cli(c, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_queues_schedules_actors_and_gangs_pages(c, browser):
    cli(c, "queue", "set", "mail", "--concurrency", "3", "--weight", "2")
    cli(c, "schedule", "add", "every-second", "--function", "durable_tasks:add", "--every", "1", "--args", "[1, 2]")

    @corral.remote
    class Tally:
        def __init__(self):
            self.n = 0

        def add(self):
            self.n += 1
            return self.n

    tally = Tally.options(name="tally").remote()
    assert corral.get(tally.add.remote()) == 1
    gang = corral.gang(2, num_cpus=0.25, name="pair")
    gang.ready(30)
    try:
        log_in(browser, c, make_token(c, "read", "dash-pages"))
        open_page(browser, "queues")
        row = wait_until(lambda: [r for r in text_of(browser, "#queues-table").splitlines() if r.startswith("mail")],
                         what="the mail queue listed")[0]
        assert "2" in row.split() and "3" in row.split(), row  # its weight and concurrency
        open_page(browser, "schedules")
        wait_until(lambda: "every-second" in text_of(browser, "#schedules-table"), what="the schedule listed")
        assert "every 1 s" in text_of(browser, "#schedules-table")
        wait_until(lambda: cli(c, "schedule", "history", "every-second").count("SUCCESS") >= 1, timeout=30,
                   what="a fire of the schedule")
        click(browser, "#schedules-table button")
        wait_until(lambda: "SUCCESS" in text_of(browser, "#history-table"), what="the schedule's history")
        shot(browser, "schedules")
        open_page(browser, "actors")
        wait_until(lambda: "tally" in text_of(browser, "#actors-table"), what="the actor listed")
        assert "ALIVE" in text_of(browser, "#actors-table")
        wait_until(lambda: "pair" in text_of(browser, "#gangs-table"), what="the gang listed")
        assert "READY" in text_of(browser, "#gangs-table")
        shot(browser, "actors")
    finally:
        cli(c, "schedule", "rm", "every-second")
        corral.remove_gang(gang)
        corral.kill(tally)


def test_drain_is_refused_as_read_and_works_as_admin(c, browser):
    target = c.agents[1].node_id
    log_in(browser, c, make_token(c, "read", "dash-reader-4"))
    open_page(browser, "nodes")
    click(browser, f"#nodes-table button.drain[data-node='{target}']", what="the drain button")
    wait_until(lambda: "Refused" in text_of(browser, "#drain-result"), what="the refusal")
    assert "needs admin" in text_of(browser, "#drain-result")
    shot(browser, "drain-refused")
    assert {n["node_id"]: n for n in corral.nodes()}[target]["state"] == "alive"
    assert not {n["node_id"]: n for n in corral.nodes()}[target]["draining"]

    log_in(browser, c, c.token)  # the admin token
    open_page(browser, "nodes")
    click(browser, f"#nodes-table button.drain[data-node='{target}']", what="the drain button")
    wait_until(lambda: "is draining" in text_of(browser, "#drain-result"), what="the drain accepted")
    wait_until(lambda: {n["node_id"]: n for n in corral.nodes()}[target]["state"] in ("left",)
               or {n["node_id"]: n for n in corral.nodes()}[target]["draining"], what="the node draining")
    wait_until(lambda: any(s in node_row(browser, target) for s in ("draining", "left")), what="shown draining")
    shot(browser, "drained")


class _AttackerPage(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self):
        body = (f"<html><body><form id=f method=POST action='{self.target}'>"
                "<input name=x value=1></form><script>document.getElementById('f').submit()</script>"
                "</body></html>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("attacker_host", ["localhost", "127.0.0.1"])
def test_a_cross_site_form_post_is_refused(c, browser, attacker_host):
    target = c.agents[0].node_id
    log_in(browser, c, c.token)  # an admin's browser, logged in
    _AttackerPage.target = f"http://{c.http}/api/v1/nodes/{target}/drain"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        browser.get(f"http://{attacker_host}:{server.server_address[1]}/")
        # The form's answer replaces the page: a refusal, never "draining".
        body = wait_until(lambda: (lambda t: t if "error" in t else None)(text_of(browser, "body")),
                          what="the head's answer to the form")
        assert '"status":403' in body.replace(" ", "") or '"status":401' in body.replace(" ", ""), body
        assert "draining" not in body
        shot(browser, f"cross-site-{attacker_host}")
    finally:
        server.shutdown()
    time.sleep(0.5)
    node = {n["node_id"]: n for n in corral.nodes()}[target]
    assert node["state"] == "alive" and not node["draining"]


def test_usable_on_a_phone_screen(c, browser):
    log_in(browser, c, make_token(c, "read", "dash-phone"))
    try:
        browser.set_window_size(390, 844)
        shown = {"overview": "#cards .card", "nodes": "#nodes-table tr[data-node]", "tasks": "#tasks-table tr[data-task]"}
        for page, content in shown.items():
            open_page(browser, page)
            find(browser, content, what=f"the {page} page's content")
            overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{page}: {overflow}px wider than the screen"
            shot(browser, f"phone-{page}")
    finally:
        browser.set_window_size(1280, 900)
