"""Evaluation audit (session 30): a feature space of another image size refused rather than silently measured, labeled
OOD sets taken for their images, and reports that record the settings behind their numbers (kernel-distance subsets,
batch size, which checkpoints judged and featurized the samples)."""

import json

import pytest
import torch
from test_train_cli_reports import _tiny

from dat_core import build_model
from dat_core.evaluation import autoattack_accuracy, evaluate, ood_auroc
from dat_core.evaluation.generative import frechet_distance
from dat_core.zoo import weights_sha256
from train.__main__ import main


def _calls(model: torch.nn.Module) -> dict:
    seen = {"n": 0}
    model.register_forward_hook(lambda *_: seen.__setitem__("n", seen["n"] + 1))
    return seen


def test_a_feature_model_of_another_image_size_is_refused_before_the_work():
    """`--feature-model` of a 64 px classifier measured 32 px images without a word (its pooling takes any size): a
    Fréchet distance in a feature space the feature model was never trained on, reported as "penultimate features of
    wrn-10-1". It is refused before any image is attacked or sampled, and by the feature functions themselves."""
    torch.manual_seed(0)
    model, wide = build_model("wrn-10-1").eval(), build_model("wrn-10-1", image_size=64).eval()
    images, labels = torch.rand(30, 3, 32, 32, generator=torch.Generator().manual_seed(2)), torch.arange(30) % 10
    seen = _calls(model)
    with pytest.raises(ValueError, match="feature model.*64.*32"):
        evaluate(model, (images, labels), robust=None, samples=12, feature_model=wide, progress=False, sample_steps=1)
    assert seen["n"] == 0
    with pytest.raises(ValueError, match="feature model.*64.*32"):
        frechet_distance(wide, images[:10], images[10:])
    assert frechet_distance(build_model("wrn-10-1").eval(), images[:10], images[10:]) > 0   # the same size works


def test_a_labeled_ood_set_is_taken_for_its_images():
    """An OOD dataset with labels of its own (CIFAR-100 beside a CIFAR-10 model, an ImageDataset) was refused with
    "labels out of range: got 84 for 10 classes": labels no OOD measure reads were checked against the model's."""
    torch.manual_seed(0)
    model = build_model("wrn-10-1").eval()
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(8, 3, 32, 32, generator=g), torch.arange(8) % 10
    ood = torch.rand(8, 3, 32, 32, generator=g)
    labeled = (ood, torch.arange(8) * 12)   # labels of a 100-class set
    assert ood_auroc(model, (x, y), labeled) == ood_auroc(model, (x, y), ood)
    kept = evaluate(model, (x, y), robust=None, ood={"c100": labeled}, progress=False)
    bare = evaluate(model, (x, y), robust=None, ood={"c100": ood}, progress=False)
    for key in ("ood_auroc", "ood_auroc_msp", "ood_auroc_adversarial", "ood_auroc_msp_adversarial"):
        assert kept[key] == bare[key]


def test_reports_record_the_kernel_distance_subsets_and_the_batch_size():
    """The kernel distance is a mean over random subsets (10 of min(1000, N) images, drawn from seed 0) and random
    starts and AutoAttack's random inits are drawn per batch: numbers that change with these settings did not say
    them."""
    torch.manual_seed(0)
    model, judge = build_model("wrn-10-1").eval(), build_model("wrn-10-1").eval()
    images, labels = torch.rand(30, 3, 32, 32, generator=torch.Generator().manual_seed(2)), torch.arange(30) % 10
    report = evaluate(model, (images, labels), robust=dict(eps=0.3, steps=1, restarts=1), samples=12,
                      feature_model=judge, progress=False, sample_steps=1, batch_size=7)
    json.dumps(report, allow_nan=False)
    assert report["batch_size"] == 7
    realism = report["sample_realism"]
    assert (realism["kernel_distance_subsets"], realism["kernel_distance_subset_size"]) == (10, 12)
    assert realism["kernel_distance_seed"] == 0
    still = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5)).eval()
    x = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    y = still(x).argmax(1).detach()
    assert autoattack_accuracy(still, (x, y), eps=0.1, attacks=["apgd-ce"], batch_size=4)["batch_size"] == 4


def test_the_cli_report_says_which_checkpoints_judged_and_featurized_the_samples(toy, tmp_path):
    """The report named the judge and the feature model by architecture alone ("wrn-10-1"): two checkpoints of one
    architecture gave different numbers under the same name. It records their sources and weights' sha256."""
    model, judge, features = _tiny(tmp_path / "m"), _tiny(tmp_path / "j", seed=1), _tiny(tmp_path / "f", seed=2)
    out = tmp_path / "r.json"
    assert main(["eval", "--model", str(model), "--data", str(toy), "--split", "test", "--steps", "0",
                 "--samples", "4", "--sample-steps", "1", "--judge", str(judge), "--feature-model", str(features),
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["sample_fidelity"]["judge_model"] == {
        "source": str(judge), "weights_sha256": weights_sha256(judge / "model.safetensors")}
    assert report["sample_realism"]["feature_model"] == {
        "source": str(features), "weights_sha256": weights_sha256(features / "model.safetensors")}


def test_the_report_hashes_the_judge_it_measured_with(toy, tmp_path, monkeypatch):
    """The judge's sha256 was taken after the evaluation, from its source looked up again: weights replaced meanwhile
    (a Hub branch moved on, a folder retrained) were recorded instead of those that judged the samples."""
    import train.eval_cli as eval_cli

    model, judge, other = _tiny(tmp_path / "m"), _tiny(tmp_path / "j", seed=1), _tiny(tmp_path / "o", seed=3)
    measured = weights_sha256(judge / "model.safetensors")
    evaluate = eval_cli.evaluate

    def judged_then_replaced(*args, **kwargs):
        report = evaluate(*args, **kwargs)
        (judge / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
        return report
    monkeypatch.setattr(eval_cli, "evaluate", judged_then_replaced)
    out = tmp_path / "r.json"
    assert main(["eval", "--model", str(model), "--data", str(toy), "--split", "test", "--steps", "0",
                 "--samples", "4", "--sample-steps", "1", "--judge", str(judge), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["sample_fidelity"]["judge_model"]["weights_sha256"] == measured


@pytest.mark.parametrize("bad, says", [
    (dict(ood={"svhn": "data/svhn"}), "only named set is 'uniform'"),
    (dict(samples=3, judge="other"), "judge's classes"),
    (dict(n_bins=0), "n_bins must be >= 1"),
    (dict(robust=None, robust_strong={"restarts": 2}), "robust_strong builds on robust"),
    (dict(samples=3, sample_step_size=-1.0), "step_size"),
])
def test_evaluate_refuses_bad_options_before_the_attacks(bad, says):
    """`evaluate` ran PGD on every image and only then refused an OOD set named by a string, a judge of other classes,
    zero calibration bins or a bad sample step (hours on a full test split); a strong check without the standard one
    it builds on was dropped without a word."""
    torch.manual_seed(0)
    model = build_model("wrn-10-1").eval()
    if bad.get("judge") == "other":
        bad = {**bad, "judge": build_model("wrn-10-1", num_classes=5).eval()}
    images, labels = torch.rand(10, 3, 32, 32, generator=torch.Generator().manual_seed(2)), torch.arange(10)
    seen = _calls(model)
    with pytest.raises(ValueError, match=says):
        evaluate(model, (images, labels), **{"robust": dict(eps=0.3, steps=2), **bad}, progress=False)
    assert seen["n"] == 0
