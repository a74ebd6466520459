"""How much other processes disturbed a benchmark section.

Every figure on a shared 2-core machine is noisy; the benchmark scripts print,
next to their ratios, how many CPUs *other* processes kept busy while a
section ran, so a reader can tell a quiet run from a disturbed one.
"""

import os
import platform
import time


class CpuMeter:
    """CPUs kept busy by other processes since construction: /proc/stat minus
    this process, its finished children and the extra `pids` (e.g. a server
    the benchmark started and is still running)."""

    def __init__(self, *pids):
        self.pids = [p for p in pids if p]
        self.t0, self.busy0, self.own0 = time.time(), self._busy(), self._own()

    @staticmethod
    def _busy():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            # user nice system idle iowait irq softirq steal ...
            return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def _own(self):
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        for pid in self.pids:
            try:
                with open("/proc/%d/stat" % pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                own += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, ValueError, IndexError):
                pass
        return own

    def others(self):
        """Average number of CPUs busy with other processes, or None."""
        busy, wall = self._busy(), time.time() - self.t0
        if busy is None or self.busy0 is None or wall <= 0:
            return None
        return max(0.0, (busy - self.busy0 - (self._own() - self.own0)) / wall)


def cpu_model():
    """The CPU's model name, for the benchmark headers."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
