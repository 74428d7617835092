"""Loading NumPy for the index (now on first use, lazy_numpy) must not start NumPy's OpenBLAS threads, nor leave the variable
that prevents them in the environment that commands run by safehold (health checks) inherit."""
import json
import os
import subprocess
import sys

PROBE = """
import json, os
import sys
import safehold.repository.index
assert "numpy" not in sys.modules  # imported on first use, not with the module
index = safehold.repository.index.Index()
assert index.lookup(bytes(32)) is None and "numpy" not in sys.modules  # a small index is a dict
index.MIN_MERGE = 1  # as an index past its dict: the arrays load NumPy
index.add_pack("p", [safehold.repository.index.PackEntry(0, bytes([n]) * 32, 0, 1, 1) for n in range(3)])
assert index.lookup(bytes(32)) is not None
assert "numpy" in sys.modules
print(json.dumps({"threads": len(os.listdir("/proc/self/task")), "env": os.environ.get("OPENBLAS_NUM_THREADS")}))
"""


def probe(env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout)


def test_no_blas_threads_and_environment_untouched():
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    assert probe(env) == {"threads": 1, "env": None}


def test_a_users_setting_is_kept():
    env = {k: v for k, v in os.environ.items()} | {"OPENBLAS_NUM_THREADS": "3"}
    assert probe(env)["env"] == "3"
