"""The second reference: transformers 4.57.6 (slow tokenizer, TF and Flax classes) in its own venv.

transformers 4.57.6 needs `tensorflow` (not `-cpu`) and `tf-keras`, which cannot share a venv
with this project's `tensorflow-cpu`; `./run tests` builds `.venv-oracle` from
`constraints-oracle.txt`. Tests send it a script and JSON in, and read JSON back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORACLE_PYTHON = os.environ.get("ROFORMER_ORACLE_PYTHON", str(ROOT / ".venv-oracle" / "bin" / "python"))


def run_oracle(code: str, payload=None, timeout: float = 600):
    """Run ``code`` under the transformers 4.57.6 venv; it reads ``payload`` with
    ``json.load(sys.stdin)`` and prints one JSON document, which is returned.

    Example (in a test):
        run_oracle("import json,sys,transformers; print(json.dumps(transformers.__version__))")
    """
    if not os.path.exists(ORACLE_PYTHON):
        raise RuntimeError(f"the oracle venv is missing ({ORACLE_PYTHON}); `./run tests` builds it")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0", TRANSFORMERS_VERBOSITY="error",
               HF_HUB_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1", PYTHONPATH="")
    proc = subprocess.run([ORACLE_PYTHON, "-c", textwrap.dedent(code)], input=json.dumps(payload),
                          capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"oracle failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    return json.loads(lines[-1])


if __name__ == "__main__":
    print(run_oracle("import json, transformers; print(json.dumps(transformers.__version__))"), file=sys.stderr)
