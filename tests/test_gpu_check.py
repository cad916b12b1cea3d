"""benchmarks/gpu_check.sh --dry-run: the GPU check's code paths on the CPU at toy sizes, so the script is
known to work before a GPU is lent (a lent machine's minutes are too few to debug it there)."""

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_dry_run_writes_one_json_with_every_part(tmp_path):
    out = tmp_path / "gpu_check.json"
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    report = json.loads(out.read_text())
    assert r.returncode == 0, json.dumps(report, indent=1)[-3000:]
    assert report["ok"] and report["dry_run"]
    parts = report["parts"]
    assert set(parts) == {"cuda_tests", "train_step", "latency", "torchrun", "cf_benchmark",
                          "cf_batch_invariance"}
    assert "deselected" in parts["cuda_tests"]["summary"]          # pytest ran the cuda selection
    step = parts["train_step"]["result"]
    assert step["stage2"]["same_loss_as_reference"] and step["stage1"]["same_loss_as_reference"]
    archs = parts["latency"]["result"]["archs"]
    assert archs["no-such-net"] == {"skipped": "unknown architecture"}
    row = archs["wrn-10-1"]
    assert row["trajectory_eager_s"] > 0 and row["trajectory_compiled_s"] > 0 and "ratio_fast_path" in row
    assert parts["torchrun"]["result"] == {"torchrun": "ok"}
    cf = parts["cf_benchmark"]["result"]                            # the bundled model's benchmark, timed
    assert cf["pairs"] == 2 * 9 and cf["seconds"] > 0 and 0 <= cf["validity"] <= 1
    validity = parts["cf_batch_invariance"]["result"]                # the same pairs at batch 1 and 18
    assert set(validity) == {"eager-1", "eager-18"} and validity["eager-1"] == validity["eager-18"]
