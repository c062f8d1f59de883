"""What being watched costs Corral: the same workloads against one head, once unobserved and once
while Prometheus-style scrapes of /metrics (one a second, fifteen times Prometheus' default rate)
and ten dashboard sessions (each logged in, its live event stream open, and reloading the tasks
list every second as an open Tasks page does while tasks run) hit the head's HTTP port; the two
modes interleaved A B A B in one run, each on a fresh head.

    .venv/bin/python bench/observability.py [--reps 5] [--smoke]

Workloads (definitions as in README.md beside this file): tasks_sync (median round trip, µs) and
tasks_async (10,000 no-op tasks submitted one at a time, then every result: tasks/s). Prints each
figure's median (min-max) per mode and observed/unobserved: the cost the issue bounds at 3%; and
the CPU time the head and the observers' process used while the workloads ran (head_cpu_s,
observers_cpu_s), which show where the cost goes with less noise than the timings.
The observers run in their own process and do the least a client can (no JSON parsing), so what
is measured is mostly the head serving them, on the same two cores as the workload.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

from self_ab import TASKS_CODE, fresh_head, run_driver

HERE = os.path.dirname(os.path.abspath(__file__))

DRIVER = '''
import json, time, corral
corral.init(address="{address}")
'''

OBSERVERS = '''
import http.client, json, sys, threading, time
host, port, token, sessions = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
stop = threading.Event()
def connect():
    return http.client.HTTPConnection(host, port, timeout=30)
def scrape():
    c = connect()
    while not stop.is_set():
        c.request("GET", "/metrics", headers={{"Authorization": "Bearer " + token}})
        r = c.getresponse(); r.read(); assert r.status == 200, r.status
        stop.wait(1.0)
def tab():
    c = connect()
    c.request("POST", "/api/v1/login", body=json.dumps({{"token": token}}), headers={{"Content-Type": "application/json"}})
    r = c.getresponse(); r.read(); assert r.status == 200, r.status
    cookie = r.getheader("Set-Cookie").split(";")[0]
    events = connect()
    events.request("GET", "/api/v1/events", headers={{"Cookie": cookie}})
    stream = events.getresponse()
    assert stream.status == 200
    def drain():
        while not stop.is_set() and stream.fp.readline():
            pass
    threading.Thread(target=drain, daemon=True).start()
    while not stop.is_set():
        c.request("GET", "/api/v1/runs?limit=200", headers={{"Cookie": cookie}})
        r = c.getresponse(); r.read(); assert r.status == 200, r.status
        stop.wait(1.0)
threads = [threading.Thread(target=scrape, daemon=True)] + [threading.Thread(target=tab, daemon=True) for _ in range(sessions)]
for t in threads: t.start()
print("ready", flush=True)
sys.stdin.read()  # until the benchmark closes it
stop.set()
'''


def cpu_seconds(pid):
    """User + system CPU time the process has used so far (seconds)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(observed, smoke):
    with fresh_head("--http-port", "0", prefix="corral-obs-bench-") as (home, env):
        address = open(f"{home}/head/address").read().strip()
        http_host, http_port = open(f"{home}/head/http_address").read().strip().rsplit(":", 1)
        token = open(f"{home}/head/token").read().strip()
        observers = None
        try:
            if observed:
                observers = subprocess.Popen([sys.executable, "-c", OBSERVERS.format(), http_host, http_port, token,
                                              "10"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                assert observers.stdout.readline().strip() == "ready"
                time.sleep(1.0)  # every tab logged in and streaming
            code = DRIVER.format(address=address) + TASKS_CODE.format(
                sync=30 if smoke else 1000, tasks=200 if smoke else 10000) + \
                'print(json.dumps({"tasks_sync": sync_us, "tasks_async": async_rate}))\n'
            head_pid = int(open(f"{home}/head/pid").read())
            head_before = cpu_seconds(head_pid)
            obs_before = cpu_seconds(observers.pid) if observers else 0.0
            figures = run_driver(code, env, "observed" if observed else "unobserved")
            figures["head_cpu_s"] = cpu_seconds(head_pid) - head_before
            figures["observers_cpu_s"] = (cpu_seconds(observers.pid) - obs_before) if observers else 0.0
            if observers and observers.poll() is not None:
                raise SystemExit("the observers stopped early (an HTTP request failed)")
            return figures
        finally:
            if observers:
                observers.stdin.close()
                observers.wait(30)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="one tiny repetition (timings meaningless)")
    args = ap.parse_args()
    reps = 1 if args.smoke else args.reps
    results = {False: [], True: []}
    for rep in range(reps):
        for observed in ((False, True) if rep % 2 == 0 else (True, False)):
            results[observed].append(one_run(observed, args.smoke))
            print(f"rep {rep + 1}/{reps} {'observed' if observed else 'unobserved'}: {results[observed][-1]}",
                  file=sys.stderr)

    def med(observed, key):
        values = [r[key] for r in results[observed]]
        return statistics.median(values), min(values), max(values)

    print("| workload | unobserved | observed (/metrics 1/s + 10 dashboard tabs) | cost |")
    print("|---|---|---|---|")
    for key, unit, lower_better in (("tasks_sync", "µs", True), ("tasks_async", "tasks/s", False),
                                    ("head_cpu_s", "s", True), ("observers_cpu_s", "s", True)):
        a, amin, amax = med(False, key)
        b, bmin, bmax = med(True, key)
        cost = ((b / a - 1) if lower_better else (a / b - 1)) if a else float("inf")
        f = ",.3f" if unit == "s" else ",.1f"
        print(f"| {key} | {a:{f}} {unit} ({amin:{f}}–{amax:{f}}) | {b:{f}} {unit} ({bmin:{f}}–{bmax:{f}}) | "
              + ("-" if key == "observers_cpu_s" else f"{cost * 100:+.1f}%") + " |")


if __name__ == "__main__":
    main()
