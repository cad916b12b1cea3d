"""benchmarks/cf_step_floor.py on a tiny model: the convolutions' share is measured, not assumed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from dat_core import build_model
from dat_core.checkpoint import save_model

ROOT = Path(__file__).resolve().parents[1]


def test_the_step_floor_splits_a_pgd_step_into_convolutions_and_the_rest(tmp_path):
    torch.manual_seed(0)
    save_model(build_model("wrn-10-1").eval(), tmp_path / "model")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'benchmarks'}"}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cf_step_floor.py"), "--model",
                          str(tmp_path / "model"), "--batches", "2", "4", "--steps", "2", "--compile", "off"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(result["compiled_ms_per_sample_step"]) == {"2", "4"} and result["eager_profile_batch"] == 4
    assert 0 < result["conv_forward_ms"] and 0 < result["conv_backward_ms"]
    assert result["conv_forward_ms"] + result["conv_backward_ms"] < result["eager_ms_per_sample_step"]
    # the hooks' count equals torch's own FLOP counter (2 FLOPs per multiply-add; it also sees only conv and mm)
    with FlopCounterMode(display=False) as flops:
        build_model("wrn-10-1").eval()(torch.rand(1, 3, 32, 32))
    assert 2 * result["forward_macs"] == flops.get_total_flops()
