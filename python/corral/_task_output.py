"""A worker's stdout and stderr, marked per task for ``corral logs``.

The agent reads a worker's output from two pipes and files it in the worker's log. To know whose
output a line is, even when the previous task's last lines are still in the pipe as the next task
starts, the first write of each task on each stream is preceded by a marker line,
``==== corral task <hex id> <name> attempt <n> ====``: the agent switches that stream to the task
named there and keeps the marker in the log file for people reading it. A task that prints nothing
costs nothing. Output written to the file descriptors directly (a subprocess, a C library) carries
no marker and is filed under the stream's last marked task.
"""
import sys

MARKER_PREFIX = "==== corral task "


class _Bytes:
    """The ``.buffer`` of a marked stream: bytes written there are marked too."""

    def __init__(self, owner):
        self._owner = owner

    def write(self, data):
        self._owner._emit_marker()
        return self._owner._stream.buffer.write(data)

    def __getattr__(self, name):
        return getattr(self._owner._stream.buffer, name)


class MarkedStream:
    def __init__(self, stream):
        self._stream = stream
        self._marker = None

    def begin(self, marker):
        self._marker = marker

    def _emit_marker(self):
        marker, self._marker = self._marker, None
        if marker is not None:
            self._stream.write(marker)
            self._stream.flush()

    def write(self, text):
        if self._marker is not None:
            self._emit_marker()
        return self._stream.write(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    @property
    def buffer(self):
        return _Bytes(self)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def install():
    """Wraps sys.stdout and sys.stderr (at the worker's start, before any user code runs)."""
    if not isinstance(sys.stdout, MarkedStream):
        sys.stdout = MarkedStream(sys.stdout)
    if not isinstance(sys.stderr, MarkedStream):
        sys.stderr = MarkedStream(sys.stderr)


def begin_task(task_id, name, attempt):
    """The task's first output on each stream will start with its marker."""
    marker = f"{MARKER_PREFIX}{task_id.hex()} {name} attempt {attempt + 1} ====\n"
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, MarkedStream):
            stream.begin(marker)
