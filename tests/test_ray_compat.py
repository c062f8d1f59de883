"""Ray's documented behaviour on the facade (corral.compat.ray), one example script per topic.

Each script in tests/ray_examples/ is written against Ray's API and imports
``corral.compat.ray as ray``; expected/NAME.txt is what the same script printed on Ray itself
(recorded by ray_examples/record.py with the import changed back). A script passes when it exits
as it did on Ray and prints every line Ray printed, in order, numbers and ids aside (compare.py).
Each runs as a user would run it: ``python script.py``, which starts its own local cluster on
first use (no init() in most of them, as in Ray's documentation).
"""
import os
import subprocess
import sys

import pytest

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ray_examples")
sys.path.insert(0, HERE)
from compare import matches  # noqa: E402

EXAMPLES = sorted(f[:-3] for f in os.listdir(HERE) if f.endswith(".py") and f not in ("compare.py", "record.py"))


def run(name, tmp_path, unbuffered=True):
    """Runs an example as a user would, its output line-buffered as on a terminal (`unbuffered`),
    or block-buffered as when piped."""
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    p = subprocess.run([sys.executable, os.path.join(HERE, name + ".py")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=180, env=env)
    return p.returncode, p.stdout + p.stderr


def test_every_example_has_rays_output():
    missing = [n for n in EXAMPLES if not os.path.exists(os.path.join(HERE, "expected", n + ".txt"))]
    assert not missing, f"run ray_examples/record.py for {missing}"


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_behaves_as_on_ray(name, tmp_path):
    with open(os.path.join(HERE, "expected", name + ".txt")) as f:
        want = f.read()
    with open(os.path.join(HERE, "expected", name + ".rc")) as f:
        want_rc = int(f.read())
    rc, text = run(name, tmp_path)
    good, why = matches(want, want_rc, text, rc)
    assert good, f"{name}: {why}\n--- Corral printed:\n{text}\n--- Ray printed:\n{want}"


def test_first_use_starts_a_local_cluster_and_says_where(tmp_path):
    rc, text = run("tasks", tmp_path)
    assert rc == 0, text
    notice = [l for l in text.splitlines() if l.startswith("corral: started a local cluster at 127.0.0.1:")]
    assert len(notice) == 1, text


def test_first_use_joins_corral_address_when_set(tmp_path):
    """With CORRAL_ADDRESS set, the first use connects there instead of starting a cluster."""
    import corral
    from conftest import Cluster
    c = Cluster()
    try:
        c.add_agent(num_cpus=2)
        c.connect()
        c.wait_nodes(1)
        script = tmp_path / "join.py"
        script.write_text("import corral.compat.ray as ray\n"
                          "@ray.remote\ndef f(): return ray.get_runtime_context().get_node_id()\n"
                          "print('node', ray.get(f.remote()))\n")
        env = dict(os.environ, CORRAL_ADDRESS=c.address, CORRAL_TOKEN=c.token)
        p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120, env=env)
        assert p.returncode == 0, p.stdout + p.stderr
        assert f"connected to the cluster at {c.address}" in p.stderr
        assert "started a local cluster" not in p.stderr
        node_ids = [n["node_id"] for n in corral.nodes()]
        assert p.stdout.split()[-1] in node_ids
    finally:
        corral.shutdown()
        c.stop()


def test_a_script_exiting_without_waiting_still_shows_every_tasks_output(tmp_path):
    rc, text = run("exit_output", tmp_path, unbuffered=False)  # the tasks' prints too are block-buffered
    assert rc == 0, text
    lines = sorted(l.split(") ", 1)[1] for l in text.splitlines() if "hello from task" in l)
    assert lines == [f"hello from task {i}" for i in range(5)], text


def test_remote_traceback_names_the_users_file_and_line(tmp_path):
    script = tmp_path / "tb.py"
    script.write_text("import corral\n\n"
                      "def helper(x):\n"
                      "    return 1 / x  # the failing line\n\n"
                      "@corral.remote\n"
                      "def f(x):\n"
                      "    return helper(x)\n\n"
                      "corral.get(f.remote(0))\n")
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert f'File "{script}", line 4, in helper' in p.stderr, p.stderr
    assert "return 1 / x  # the failing line" in p.stderr
    assert "<dynamic-code>" not in p.stderr
