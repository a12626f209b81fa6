"""The code sandbox: correct code passes, and hostile code gets 0 (never 1, never None), stopped by the
supervisor's own deadline when it runs too long, leaving no process behind and nothing changed outside its
folder. No wall-clock upper bounds: on a loaded machine the kill and report take longer, so the parent's
backstop (`grace`) is generous here and the tests check why a run stopped (status, error) instead."""
import os
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from posttrain.rewards._jail.fsview import BASE_UID
from posttrain.rewards.sandbox import SandboxLimits, run_sandboxed
from posttrain.rewards.sandbox_selftest import sandbox_self_test

TIMEOUT = 2.0
LIMITS = SandboxLimits(timeout=TIMEOUT, memory_mb=512, grace=30.0)
TESTS = "assert solve(2, 3) == 5\nassert solve(4, 4) == 8\n"


def _proc_fields(pid: str) -> tuple[int, int] | None:
    """(real uid, session id) of a live process, None if it is gone."""
    try:
        status = open(f"/proc/{pid}/status").read()
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    return uid, int(stat[stat.rindex(")") + 2:].split()[3])


def leftovers(result) -> list[str]:
    """Processes of a finished run: with the run's uid, or in its supervisor's session."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fields = _proc_fields(pid)
        if fields and (fields[0] == BASE_UID + result.supervisor_pid or fields[1] == result.supervisor_pid):
            found.append(f"{pid}: uid={fields[0]} sid={fields[1]} {open(f'/proc/{pid}/stat').read()[:60]}")
    return found


def check_hostile(code: str, tests: str = TESTS):
    result = run_sandboxed(code, tests, LIMITS)
    assert result.score() == 0.0, (result.status, result.error, result.outcomes)  # not None: the supervisor reported
    assert leftovers(result) == []
    return result


@pytest.fixture(scope="module", autouse=True)
def isolated():
    report = sandbox_self_test(LIMITS)
    assert report.ok, str(report)


def test_correct_wrong_and_partial_solutions():
    good = run_sandboxed("def solve(a, b):\n    return a + b\n", TESTS, LIMITS)
    assert (good.status, good.score()) == ("ok", 1.0)
    assert run_sandboxed("def solve(a, b):\n    return a * b\n", TESTS, LIMITS).score() == 0.0
    half = run_sandboxed("def solve(a, b):\n    return 5\n", TESTS, LIMITS)
    assert half.score() == 0.5 and half.score(all_pass=True) == 0.0
    listed = run_sandboxed("def solve(a, b):\n    return a - b\n",
                           ["assert solve(1, 1) == 0", "assert solve(1, 0) == 2"], LIMITS)
    assert (listed.passed, listed.total) == (1, 2)
    assert leftovers(good) == []


def test_rich_values_cross_the_wire():
    code = ("from collections import Counter, namedtuple\nP = namedtuple('P', 'x y')\nLIMIT = 3\n"
            "def f():\n    return {'a': (1, 2.5), 'b': {3, 4}, 'c': Counter('aab'), 'd': P(1, 2), 'e': b'x'}\n"
            "def g():\n    return (i * i for i in range(4))\n"
            "class Acc:\n    def __init__(self):\n        self.n = 0\n    def add(self, k):\n        self.n += k\n"
            "        return self.n\n")
    tests = ["assert f() == {'a': (1, 2.5), 'b': {3, 4}, 'c': {'a': 2, 'b': 1}, 'd': (1, 2), 'e': b'x'}",
             "assert list(g()) == [0, 1, 4, 9]", "acc = Acc()\nacc.add(2)\nassert acc.add(3) == 5 and acc.n == 5",
             "assert LIMIT == 3"]
    assert run_sandboxed(code, tests, LIMITS).score() == 1.0


def test_unscorable_rows_give_none():
    assert run_sandboxed("x = 1", "this is not python(", LIMITS).score() is None
    assert run_sandboxed("x = 1", "import math", LIMITS).score() is None  # no test in it
    lam = run_sandboxed("def solve(f):\n    return f(1)\n", "assert solve(lambda x: x) == 1", LIMITS)
    assert (lam.status, lam.score()) == ("unsupported", None)


FORGERIES = {
    "exit_0_at_import": "import os\nos._exit(0)\n",
    "exit_0_in_call": "import os\ndef solve(a, b):\n    os._exit(0)\n",
    "sys_exit_0": "import sys\ndef solve(a, b):\n    sys.exit(0)\n",
    "prints_pass": "print('PASS')\nprint('2 passed')\ndef solve(a, b):\n    print('PASS')\n    return 0\n",
    "patches_assert_and_builtins": (
        "import builtins, sys\nbuiltins.AssertionError = type('Nope', (Exception,), {})\n"
        "builtins.__dict__['__import__'] = None\nsys.exit = lambda *a: None\nsys.excepthook = None\n"
        "def solve(a, b):\n    return 0\n"),
    "always_equal_object": ("class Eq:\n    def __eq__(self, o):\n        return True\n"
                            "def solve(a, b):\n    return Eq()\n"),
    "int_subclass_equal": ("class I(int):\n    def __eq__(self, o):\n        return True\n"
                           "def solve(a, b):\n    return I(0)\n"),
    "writes_on_the_channel": (  # verdict-shaped lines and "true" replies: the judge only takes values
        "import os\nFAKE = b'PASS\\n{\"status\": \"ok\", \"passed\": 2, \"total\": 2}\\n'\n"
        "FAKE += b''.join(b'{\"id\": %d, \"value\": true}\\n' % i for i in range(1, 5))\n"
        "def solve(a, b):\n    for fd in range(0, 20):\n        try:\n            os.write(fd, FAKE)\n"
        "        except OSError:\n            pass\n    os._exit(0)\n"),
    "raises_assertion_error_types": "def solve(a, b):\n    raise SystemExit(0)\n",
    "syntax_error": "def solve(a, b) return a + b\n",
    "allocates_10_gb": "def solve(a, b):\n    x = bytearray(10 * 1024 ** 3)\n    return a + b\n",
    "writes_1_gb": ("def solve(a, b):\n    with open('big', 'wb') as fh:\n"
                    "        for _ in range(1024):\n            fh.write(b'0' * 1024 * 1024)\n    return a + b\n"),
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forgery_and_resource_abuse_scores_zero(name):
    check_hostile(FORGERIES[name])


def test_timeouts_loop_sleep_forkbomb_run_concurrently():
    cases = [
        "def solve(a, b):\n    while True:\n        pass\n",
        "import time\ntime.sleep(100)\n",
        "import os\ndef solve(a, b):\n    while True:\n        try:\n            os.fork()\n        except OSError:\n"
        "            pass\n",
    ]
    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(check_hostile, cases))
    # each was stopped by the supervisor's own alarm at the deadline (not the parent's backstop, which would
    # give status infra), and not before it (elapsed is measured from before the supervisor started)
    assert [(r.status, r.error) for r in results] == [("timeout", "wall-clock timeout")] * 3
    assert all(r.elapsed >= TIMEOUT for r in results), [r.elapsed for r in results]


def test_network_is_blocked():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        code = ("import socket\ndef solve(a, b):\n    try:\n"
                f"        socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n"
                "        return a + b\n    except OSError:\n        pass\n"
                "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "    s.sendto(b'x', ('1.1.1.1', 53))\n    return a + b\n")
        check_hostile(code)
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_writes_outside_the_folder_leave_no_file(tmp_path):
    marker = "escape-" + secrets.token_hex(6)
    targets = [str(tmp_path / marker), f"/var/tmp/{marker}", f"/dev/shm/{marker}", f"../{marker}",
               os.path.join(os.path.dirname(os.path.abspath(__file__)), marker)]
    code = ("import os\ndef solve(a, b):\n    wrote = 0\n"
            f"    for path in {targets!r}:\n        try:\n            open(path, 'w').write('x')\n"
            "            wrote += 1\n        except OSError:\n            pass\n"
            "    return a + b if wrote else None\n")
    check_hostile(code)
    assert [t for t in targets if os.path.exists(t)] == []


def test_hidden_tests_are_not_readable():
    secret = "tok_" + secrets.token_hex(16)
    code = r'''
import os, re
PAT = re.compile(rb"tok_[0-9a-f]{32}")
def _scan(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            m = PAT.search(os.read(fd, 1 << 22))
        finally:
            os.close(fd)
        return m and m.group().decode()
    except OSError:
        return None
def leak():
    paths = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() or pid == "self":
            paths += [f"/proc/{pid}/{f}" for f in ("cmdline", "environ")]
            paths += [f"/proc/{pid}/fd/{fd}" for fd in range(64)]
    paths += [f"/proc/{os.getppid()}/mem"]
    for root in (".", "/tmp", "/var/tmp", "/dev/shm"):
        for d, dirs, files in os.walk(root):
            dirs[:] = [x for x in dirs if x != ".python"]  # the read-only Python installation
            paths += [os.path.join(d, f) for f in files]
    for fd in range(64):
        try:
            os.set_blocking(fd, False)
            m = PAT.search(os.read(fd, 1 << 20))
            if m:
                return m.group().decode()
        except OSError:
            pass
    for p in paths:
        found = _scan(p)
        if found:
            return found
    return "nothing found"
'''
    result = check_hostile(code, f"found = leak()\nassert found == {secret!r}, found")
    assert result.status == "ok" and "nothing found" in result.outcomes[0]["error"]  # the scan finished


def test_user_namespace_mode_isolates_too():
    """The non-root path (a user namespace, no capabilities) passes the same self-test."""
    report = sandbox_self_test(SandboxLimits(timeout=TIMEOUT, memory_mb=512, mode="userns"))
    if "unshare" in report.detail:
        pytest.skip(f"user namespaces are not available here: {report.detail}")
    assert report.ok and report.mode == "userns", str(report)
