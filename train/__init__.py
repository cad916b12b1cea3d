"""Training entry points: `python -m train {stage1,stage2,eval,push,import}` (loops live in dat_core)."""
