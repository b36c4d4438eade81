"""The many-device examples run: FSDP on 8 simulated devices, and two processes on jax.distributed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], timeout: int = 300, **env) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **env)
    full_env.pop("XLA_FLAGS", None)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_data_parallel_example_trains_on_eight_sharded_devices():
    out = _run(["examples/data_parallel.py", "--steps", "60"]).stdout
    assert "8 devices; w0 (32, 256) sharded as P('fsdp', None), one shard (4, 256)" in out
    assert "first moment of w0 sharded as P('fsdp', None), one shard (4, 256)" in out
    losses = [float(line.split("loss")[1]) for line in out.splitlines() if line.startswith("step")]
    assert losses[-1] < 0.5 * losses[0]


def test_two_processes_end_identical_and_equal_to_one_process(tmp_path):
    out = _run(["examples/multi_process.py", "--steps", "25", "--out", str(tmp_path)]).stdout
    summary = json.loads(out[out.index("{"):])
    assert summary["identical_across_processes"] is True
    assert summary["max_rel_diff_vs_single_process"] < 1e-4
    assert summary["max_abs_diff_vs_single_process"] < 1e-5
