"""Oracle scripts, run as programs in test-only venvs and never imported by the package.

:func:`run_script` runs the variants' oracles (``roformer043.py``: the ``roformer`` 0.4.3 port;
``keras_hub_v2.py``: keras-hub 0.32) in ``.venv-oracle-v2``, which ``./run tests`` builds from
``constraints-oracle-v2.txt``, with a JSON payload on stdin; it returns the JSON they print and
the ``.npz`` they wrote when the payload names one.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ORACLE_V2_PYTHON = os.environ.get("ROFORMER_ORACLE_V2_PYTHON", str(ROOT / ".venv-oracle-v2" / "bin" / "python"))


def run_script(script: str, args: list[str], payload: dict, env: dict | None = None, timeout: float = 600):
    """``(json result, {name: array} from payload["out"] or None)`` of ``tests/oracles/<script>``."""
    if not os.path.exists(ORACLE_V2_PYTHON):
        raise RuntimeError(f"the oracle venv is missing ({ORACLE_V2_PYTHON}); `./run tests` builds it")
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0", TRANSFORMERS_VERBOSITY="error",
                    HF_HUB_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1", PYTHONPATH="", **(env or {}))
    proc = subprocess.run([ORACLE_V2_PYTHON, str(HERE / script), *args], input=json.dumps(payload),
                          capture_output=True, text=True, timeout=timeout, env=full_env)
    if proc.returncode != 0:
        raise RuntimeError(f"oracle {script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    arrays = None
    if payload.get("out"):
        with np.load(payload["out"]) as data:
            arrays = {k: data[k] for k in data.files}
    return json.loads(lines[-1]), arrays
