"""The code's layout rules: dependencies point one way (base -> net, store, objects -> head, agent, client -> cli,
python) and the head and agent never include each other's headers."""
import os
import re

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "corral")

ALLOWED = {
    "base": set(),
    "net": {"base"},
    "store": {"base"},
    "objects": {"base"},
    "head": {"base", "net", "store", "objects"},
    "agent": {"base", "net", "objects"},
    "client": {"base", "net"},
    "cli": {"base", "net", "store", "objects", "head", "agent", "client"},
    "python": {"base", "net", "objects", "client"},
}
INCLUDE = re.compile(r'#include\s+"corral/([a-z_]+)/')


def test_components_are_known():
    assert set(os.listdir(ROOT)) - {"CMakeLists.txt"} <= set(ALLOWED)


def test_includes_point_downward():
    bad = []
    for comp, allowed in ALLOWED.items():
        folder = os.path.join(ROOT, comp)
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if not name.endswith((".h", ".cc")):
                continue
            for line in open(os.path.join(folder, name)):
                m = INCLUDE.search(line)
                if m and m.group(1) != comp and m.group(1) not in allowed:
                    bad.append(f"src/corral/{comp}/{name} includes corral/{m.group(1)}/")
    assert not bad, "upward or sideways includes:\n" + "\n".join(bad)


def test_every_header_opens_with_a_comment():
    missing = []
    for comp in ALLOWED:
        folder = os.path.join(ROOT, comp)
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if name.endswith(".h"):
                first = open(os.path.join(folder, name)).readline()
                if not first.startswith("//"):
                    missing.append(f"src/corral/{comp}/{name}")
    assert not missing, "headers without an opening comment: " + ", ".join(missing)
