"""What the Python test drivers share (tests/python/test_*.py and
tests/soak/soak.py): a record of checks, and a child process (the rnnserve
binary, Prometheus) whose stderr is read on a thread.

Standard library only, so a driver can import it before it has found grpc
and the generated stubs.
"""

import collections
import ctypes
import signal
import subprocess
import threading
import time


class Checks:
    """Records and prints each check; the test goes on after a failure so one
    run shows everything that is wrong."""

    def __init__(self):
        self.failures = []

    def check(self, name, ok, detail=""):
        print("%s  %s%s" % ("ok  " if ok else "FAIL", name,
                            (": " + detail) if detail else ""), flush=True)
        if not ok:
            self.failures.append(name + (": " + detail if detail else ""))
        return ok

    def expect_code(self, name, code, call):
        """A check that call() fails with gRPC status `code`."""
        import grpc  # here: the rest of this module needs only the standard library
        try:
            call()
        except grpc.RpcError as e:
            return self.check(name, e.code() == code,
                              "got %s: %s" % (e.code().name, e.details()))
        return self.check(name, False, "succeeded; expected %s" % code.name)


def _die_with_parent():
    """preexec_fn: the child gets SIGKILL if the driver dies first."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Child:
    """A child process whose stderr lines go to a ring buffer of `log_lines`
    (shown on failure) and, with `log_path`, to that file, and are matched
    against `patterns` ({key: compiled regex}): found(key) waits for the first
    match, matches(key) lists all so far. stdout goes nowhere.

    `name` labels the messages: "starting NAME: ..." and "last NAME stderr
    lines"; without it, "starting: ..." and "last server stderr lines". With
    `die_with_parent` the child is killed when the driver dies (a long soak
    must not leave a server behind)."""

    def __init__(self, cmd, patterns=None, name=None, env=None, log_lines=80,
                 log_path=None, die_with_parent=False):
        self.cmd = list(cmd)
        self.name = name or "server"
        print("starting%s: %s" % (" " + name if name else "", " ".join(self.cmd)), flush=True)
        self._log_file = open(log_path, "w") if log_path else None
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=env,
                                     preexec_fn=_die_with_parent if die_with_parent else None)
        self.log = collections.deque(maxlen=log_lines)
        self._patterns = patterns or {}
        self._matches = {}  # key -> [match, ...] in the order of the lines
        self._changed = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            with self._changed:
                if self._log_file is not None:
                    self._log_file.write(line)
                    self._log_file.flush()  # whole lines, for whoever reads it during the run
                line = line.rstrip("\n")
                self.log.append(line)
                for key, pattern in self._patterns.items():
                    m = pattern.search(line)
                    if m:
                        self._matches.setdefault(key, []).append(m)
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def found(self, key, timeout):
        """The first match of pattern `key`, or None if the process ended (or
        the timeout passed) first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while key not in self._matches and not self._eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self._matches.get(key, [None])[0]

    def matches(self, key):
        """Every match of pattern `key` so far (m.string is the line)."""
        with self._changed:
            return list(self._matches.get(key, []))

    @property
    def pid(self):
        return self.proc.pid

    def terminate(self, timeout=60):
        """SIGTERM, then the exit code (None when it had to be killed)."""
        code = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        else:
            code = self.proc.returncode
        self._finish()
        return code

    def kill(self):
        """SIGKILL if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._finish()

    def _finish(self):
        """After the exit: the reader sees EOF; the log file is complete."""
        self._reader.join(10)
        with self._changed:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def show_log(self):
        with self._changed:  # the reader may still be appending
            lines = list(self.log)
        print("---- last %s stderr lines ----\n%s\n----" % (self.name, "\n".join(lines)),
              flush=True)
