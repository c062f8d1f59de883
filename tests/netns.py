"""Real multi-host clusters on one machine: every host is a Linux network namespace.

    with NetCluster(agents=3) as net:      # needs root (CI runs as root)
        net.connect()                      # this process is the driver, on the bridge (x.x.x.1)
        ...
        net.pause(net.agents[0])           # SIGSTOP the agent (a frozen laptop); net.resume(...)
        net.cut(net.agents[1])             # unplug its cable; net.restore(...)
        net.drop(net.agents[2], 30)        # drop 30% of its packets (nftables); net.drop(host, 0)
        net.readdress(net.agents[2])       # new IP address, same node id (laptop on another Wi-Fi)
        net.kill(net.agents[0]); net.start(net.agents[0])
        net.restart_head()

Topology: a bridge in the root namespace with the driver's address (.1); the head host (.2) and
agent hosts (.10 up) each in their own namespace, attached by a veth pair, each process started in
its own mount namespace with a private /dev/shm. Names carry this process's pid, so parallel runs
do not collide; `close()` (or leaving the `with`) removes everything, and stale leftovers of dead
runs are removed on the next start.

Packet delay and jitter need the kernel's `sch_netem`, which this machine's kernel lacks:
`delay()` uses `tc netem` when the kernel has it and raises `Unsupported` otherwise, so a test that
needs it says why it cannot run instead of passing quietly.
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from corral import _cluster

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
HEAD_PORT = 7370


class Unsupported(Exception):
    """The kernel lacks what the helper needs."""


def sh(*args, check=True):
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def available():
    """'' if namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "multi-host tests need root (ip netns)"
    r = sh("ip", "netns", "list", check=False)
    if r.returncode != 0:
        return f"ip netns does not work here: {r.stderr.strip()}"
    return ""


def _cleanup_stale():
    """Removes namespaces and bridges of earlier runs whose process is gone."""
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        m = re.match(r"(cr(\d+)-[\w-]+)", line)
        if m and not os.path.exists(f"/proc/{m.group(2)}"):
            sh("ip", "netns", "del", m.group(1), check=False)
    for line in sh("ip", "-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
        m = re.search(r": (crb(\d+)-[\d]*)[:@]", line)
        if m and not os.path.exists(f"/proc/{m.group(2)}"):
            sh("ip", "link", "del", m.group(1), check=False)
    for line in sh("ip", "-o", "link", "show", "type", "veth", check=False).stdout.splitlines():
        m = re.search(r": (crv[^:@]+)[:@]", line)
        if m and " master " not in line:  # its bridge (and run) is gone
            sh("ip", "link", "del", m.group(1), check=False)


class Host:
    def __init__(self, net, name, index, address):
        self.net = net
        self.name = name              # namespace name
        self.index = index
        self.address = address
        self.veth = f"crv{net.seq}.{index}.{os.getpid()}"[:15]  # the root side of its cable
        self.proc = None              # its corral process
        self.node_id = None           # agents: announced when registered
        self.state_dir = os.path.join(net.dir, name)
        self.log_path = os.path.join(net.dir, f"{name}.log")

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def __repr__(self):
        return f"Host({self.name}, {self.address})"


_seq = [0]


class NetCluster:
    shm_size = "512m"  # each host's /dev/shm (its object store lives there)

    def __init__(self, agents=3, head_args=(), agent_args=(), num_cpus=1, shm_size=None):
        if shm_size:
            self.shm_size = shm_size
        why = available()
        if why:
            raise Unsupported(why)
        _cleanup_stale()
        _seq[0] += 1
        self.seq = _seq[0]
        self.tag = f"{os.getpid()}-{self.seq}"
        self.bridge = f"crb{os.getpid()}-{self.seq}"[:15]
        self.subnet = f"10.{200 + os.getpid() % 50}.{os.getpid() % 250}"
        self.dir = tempfile.mkdtemp(prefix="corral-net-")
        self.bin = _cluster.corral_binary()
        self.head_args = ("--heartbeat-ms", "200", "--suspect-after-ms", "1000", "--dead-after-ms", "3000",
                          *head_args)
        self.agent_args = tuple(agent_args)
        self.num_cpus = num_cpus
        self.hosts = []
        self.agents = []
        self.token = None
        try:
            sh("ip", "link", "add", self.bridge, "type", "bridge")
            sh("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
            sh("ip", "link", "set", self.bridge, "up")
            self.head = self._add_host("head", 2)
            self.start_head()
            for i in range(agents):
                self.add_agent()
        except BaseException:
            self.close()
            raise

    # ---- hosts ----

    def _add_host(self, role, octet):
        index = len(self.hosts)
        host = Host(self, f"cr{self.tag}-{role}{index}", index, f"{self.subnet}.{octet}")
        sh("ip", "netns", "add", host.name)
        sh("ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.name)
        sh("ip", "link", "set", host.veth, "master", self.bridge)
        sh("ip", "link", "set", host.veth, "up")
        sh("ip", "-n", host.name, "link", "set", "lo", "up")
        sh("ip", "-n", host.name, "addr", "add", f"{host.address}/24", "dev", "eth0")
        sh("ip", "-n", host.name, "link", "set", "eth0", "up")
        os.makedirs(host.state_dir, mode=0o700, exist_ok=True)  # a state dir is its user's alone
        self.hosts.append(host)
        return host

    def _spawn(self, host, args, env=None):
        # Own network namespace, own mount namespace with a fresh /dev/shm, then exec corral.
        wrapped = ["ip", "netns", "exec", host.name, "unshare", "--mount", "--propagation", "private",
                   "sh", "-c", f'mount -t tmpfs -o size={self.shm_size} tmpfs /dev/shm && exec "$@"', "corral-host",
                   *args]
        proc, ready = _cluster.start_process(wrapped, host.log_path, env)
        host.proc = proc
        return ready

    def head_address(self):
        return f"{self.head.address}:{HEAD_PORT}"

    def start_head(self):
        self._spawn(self.head, [self.bin, "start", "--head", "--block", "--head-only",
                                "--host", self.head.address, "--port", str(HEAD_PORT),
                                "--state-dir", self.head.state_dir, "--exit-on-stdin-eof", *self.head_args])
        with open(os.path.join(self.head.state_dir, "token")) as f:
            self.token = f.read().strip()
        # The head speaks TLS on its LAN address; every other host verifies it with the cluster CA.
        self.ca_cert = os.path.join(self.head.state_dir, "ca.crt")

    def restart_head(self, down_s=0.0):
        """kill -9 the head, wait down_s, start it again on the same address and state dir."""
        self.kill(self.head)
        time.sleep(down_s)
        self.start_head()

    def admin(self, *args):
        """Runs an admin command (`corral token ...`, `corral node revoke ...`) from the driver's host,
        over TLS to the head's address; returns the CompletedProcess."""
        env = dict(os.environ, CORRAL_TOKEN=self.token, CORRAL_CA_CERT=self.ca_cert)
        return subprocess.run([self.bin, *args, "--address", self.head_address()], capture_output=True, text=True,
                              env=env, timeout=60)

    def agent_env(self, host):
        """An agent joins with a single-use join token of its own and gets its node certificate; a
        restart presents that certificate (the spent token is then not sent)."""
        env = dict(os.environ)
        env.pop("CORRAL_TOKEN", None)
        env.pop("CORRAL_ADDRESS", None)
        env["CORRAL_CA_CERT"] = self.ca_cert
        if not getattr(host, "join_token", None):
            made = self.admin("token", "create", "--role", "join", "--name", host.name)
            if made.returncode != 0:
                raise RuntimeError(f"cannot make a join token: {made.stderr.strip()}")
            host.join_token = made.stdout.strip()
        env["CORRAL_JOIN_TOKEN"] = host.join_token
        return env

    def add_agent(self, labels=None, extra=()):
        host = self._add_host("agent", 10 + len(self.agents))
        host.agent_extra = list(extra)
        if labels:
            host.agent_extra += ["--labels", ",".join(f"{k}={v}" for k, v in labels.items())]
        self.agents.append(host)
        self.start(host)
        return host

    def start(self, host):
        """Starts the host's corral process (again)."""
        if host is self.head:
            return self.start_head()
        args = [self.bin, "start", "--address", self.head_address(), "--block", "--exit-on-stdin-eof",
                "--state-dir", host.state_dir, "--num-cpus", str(self.num_cpus), "--python", sys.executable,
                "--python-path", TESTS_DIR, *self.agent_args, *host.agent_extra]
        host.node_id = self._spawn(host, args, env=self.agent_env(host))
        return host

    # ---- faults ----

    def pause(self, host):
        os.kill(host.pid, signal.SIGSTOP)

    def resume(self, host):
        os.kill(host.pid, signal.SIGCONT)

    def kill(self, host):
        if host.proc and host.proc.poll() is None:
            host.proc.kill()
            host.proc.wait(10)
            host.proc.stdout.close()

    def stop(self, host, timeout=30):
        """SIGTERM (an agent drains, then leaves) and wait for it to exit."""
        host.proc.terminate()
        host.proc.wait(timeout)
        host.proc.stdout.close()

    def cut(self, host):
        """Unplugs the host's cable: its packets vanish (no reset reaches either end)."""
        sh("ip", "link", "set", host.veth, "down")

    def restore(self, host):
        sh("ip", "link", "set", host.veth, "up")

    def drop(self, host, percent):
        """Drops `percent` of the packets the host sends and receives (0 removes the rule)."""
        table = "corral_drop"
        sh("ip", "netns", "exec", host.name, "nft", "delete", "table", "inet", table, check=False)
        if percent <= 0:
            return
        rules = (f"table inet {table} {{\n"
                 f"  chain in {{ type filter hook input priority 0; numgen random mod 100 < {int(percent)} drop; }}\n"
                 f"  chain out {{ type filter hook output priority 0; numgen random mod 100 < {int(percent)} drop; }}\n"
                 f"}}\n")
        r = subprocess.run(["ip", "netns", "exec", host.name, "nft", "-f", "-"], input=rules, text=True,
                           capture_output=True)
        if r.returncode != 0:
            raise Unsupported(f"nftables cannot drop packets here: {r.stderr.strip()}")

    def delay(self, host, ms, jitter_ms=0):
        """Delays the host's outgoing packets by ms (± jitter_ms) with tc netem."""
        args = ["ip", "netns", "exec", host.name, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem",
                "delay", f"{ms}ms"]
        if jitter_ms:
            args.append(f"{jitter_ms}ms")
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode != 0:
            raise Unsupported(f"tc netem is not available in this kernel ({r.stderr.strip()})")

    def limit_rate(self, host, mbit):
        """Caps the host's outgoing bandwidth at `mbit` megabits per second (tc tbf)."""
        sh("ip", "netns", "exec", host.name, "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf",
           "rate", f"{mbit}mbit", "burst", "256kb", "latency", "100ms")

    def readdress(self, host):
        """Gives the host a new address (the old one disappears): a laptop joining another network."""
        self._readdressed = getattr(self, "_readdressed", 0) + 1
        new = f"{self.subnet}.{150 + self._readdressed}"
        sh("ip", "-n", host.name, "addr", "flush", "dev", "eth0")
        sh("ip", "-n", host.name, "addr", "add", f"{new}/24", "dev", "eth0")
        host.address = new
        return new

    # ---- driver side ----

    def connect(self):
        import corral
        os.environ["CORRAL_TOKEN"] = self.token
        try:
            corral.init(address=self.head_address(), ca_cert=self.ca_cert)
        finally:
            del os.environ["CORRAL_TOKEN"]

    def nodes(self):
        import corral
        return {n["node_id"]: n for n in corral.nodes()}

    def close(self):
        for host in self.hosts:
            try:
                if host.proc and host.proc.poll() is None:
                    if host.pid:
                        os.kill(host.pid, signal.SIGCONT)
                    _cluster.stop_process(host.proc, timeout=5)
            except Exception:
                pass
        for host in self.hosts:
            # Workers that outlived their agent (they die with it, but be sure) go with the namespace.
            pids = sh("ip", "netns", "pids", host.name, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "link", "del", host.veth, check=False)  # both ends, even if the namespace lingers
            sh("ip", "netns", "del", host.name, check=False)
        sh("ip", "link", "del", self.bridge, check=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
