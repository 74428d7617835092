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
assert safehold.repository.index.Index().lookup(bytes(32)) is None  # the first use loads it
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
