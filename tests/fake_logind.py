"""A real D-Bus daemon with a stand-in for systemd-logind, for testing `--drain-on-sleep`.

logind needs systemd as PID 1, which test machines do not run; the agent only uses three parts of
its API, implemented here the way logind documents them:
  - Manager.Inhibit("sleep", who, why, "delay") returns a file descriptor; the lock is held until
    every copy of it is closed;
  - the property Manager.InhibitDelayMaxUSec;
  - the signal Manager.PrepareForSleep(b): true before suspending, false after resuming.

    bus = DBusDaemon()                       # a private bus; give the agent
    logind = FakeLogind(bus.address)         # DBUS_SYSTEM_BUS_ADDRESS=bus.address
    logind.wait_locks(1)
    logind.sleep(); logind.wait_released(); logind.wake()
"""
import os
import select
import subprocess
import threading
import time

from jeepney import DBusAddress, HeaderFields, MessageType, new_error, new_method_return, new_signal
from jeepney.bus_messages import message_bus
from jeepney.fds import FileDescriptor
from jeepney.io.blocking import open_dbus_connection

PATH = "/org/freedesktop/login1"
MANAGER = "org.freedesktop.login1.Manager"


class DBusDaemon:
    def __init__(self):
        self.proc = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address"],
                                     stdout=subprocess.PIPE, text=True)
        self.address = self.proc.stdout.readline().strip()
        if not self.address:
            raise RuntimeError("dbus-daemon did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)
        self.proc.stdout.close()


class FakeLogind:
    def __init__(self, address, delay_max_usec=3_000_000):
        self.delay_max_usec = delay_max_usec
        self.conn = open_dbus_connection(bus=address, enable_fds=True)
        self.conn.send_and_get_reply(message_bus.RequestName("org.freedesktop.login1"))
        self.locks_taken = 0
        self._held = []          # read ends of the lock pipes still open on the other side
        self._mu = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop:
            try:
                msg = self.conn.receive(timeout=0.2)
            except TimeoutError:
                continue
            except Exception:
                return
            h = msg.header
            if h.message_type != MessageType.method_call:
                continue
            member = h.fields.get(HeaderFields.member)
            iface = h.fields.get(HeaderFields.interface)
            if iface == MANAGER and member == "Inhibit":
                what, who, why, mode = msg.body
                r, w = os.pipe()
                with self._mu:
                    self._held.append(r)
                    self.locks_taken += 1
                    self.last_inhibit = (what, who, why, mode)
                self.conn.send(new_method_return(msg, "h", (FileDescriptor(w),)))
                # jeepney closed our copy of w once sent: the agent now holds the only write end
            elif iface == "org.freedesktop.DBus.Properties" and member == "Get":
                _, name = msg.body
                if name == "InhibitDelayMaxUSec":
                    self.conn.send(new_method_return(msg, "v", (("t", self.delay_max_usec),)))
                else:
                    self.conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownProperty"))
            else:
                self.conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod"))

    def held(self):
        """Locks whose holder has not closed them yet."""
        with self._mu:
            still = []
            for r in self._held:
                ready, _, _ = select.select([r], [], [], 0)
                if ready and os.read(r, 1) == b"":
                    os.close(r)
                else:
                    still.append(r)
            self._held = still
            return len(still)

    def wait_locks(self, taken, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.locks_taken >= taken and self.held() >= 1:
                return
            time.sleep(0.02)
        raise AssertionError(f"no sleep inhibitor was taken (taken {self.locks_taken}, held {self.held()})")

    def wait_released(self, timeout=20):
        """Seconds until every lock was released."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.held() == 0:
                return time.monotonic() - start
            time.sleep(0.02)
        raise AssertionError("the sleep inhibitor was not released")

    def _prepare(self, start):
        self.conn.send(new_signal(DBusAddress(PATH, interface=MANAGER), "PrepareForSleep", "b", (start,)))

    def sleep(self):
        self._prepare(True)

    def wake(self):
        self._prepare(False)

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.conn.close()
        for r in self._held:
            os.close(r)
