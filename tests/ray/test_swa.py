"""Stochastic weight averaging in a Ray Train run (CPU, gloo, a local Ray, 2 workers, ZeRO-2).

``max_steps`` 4 and ``optim.swa_start_fraction`` 0.5 average the weights after steps 2, 3 and
4 (:mod:`raylm.train.swa`). Tolerance: fp32 everywhere; the workers' weights differ from the
single-process reference only through the order of floating-point sums in the gradient
all-reduce (the losses agree to 1e-5 relative, tests/ray/test_train.py). Measured: the averaged
weights agree to 2.4e-7, except the attention key biases (1.2e-6), whose gradient is zero in
exact arithmetic (softmax ignores a shift shared by all keys), so AdamW steps them on rounding
noise. The bound, 1e-5 absolute plus 1e-5 relative, is 100x below the distance between the
average and the last step's weights (1.4e-3), so a wrong average cannot pass; the validation
loss must agree to 1e-5 relative. A resumed run repeats the same operations on the same ranks:
its weights must be equal bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from raylm.data.prepare import prepare_dataset
from raylm.errors import UserError
from raylm.model.checkpoint import load_model
from raylm.train.run import run_training
from tests.ray.train_helpers import logged_curve, reference_training, reference_val_loss, tiny_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]
SWA = {"optim": {"swa": True, "swa_start_fraction": 0.5}, "parallel": {"zero_stage": 2},
       "train": {"checkpoint_every": 2}}  # evaluation at step 4 (the last)
AVERAGED_STEPS = [2, 3, 4]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, ray_local) -> Path:
    return tmp_path_factory.mktemp("swa")


@pytest.fixture(scope="module")
def swa_run(workdir):
    return run_training(tiny_config(workdir, **SWA))


def exported_weights(result) -> dict[str, torch.Tensor]:
    model, _ = load_model(result.model_dir)
    return {name: p.detach() for name, p in model.named_parameters()}


def test_exported_and_evaluated_weights_are_the_average(workdir, swa_run):
    cfg = tiny_config(workdir, **SWA)
    dataset_dir = str(prepare_dataset(cfg).directory)  # the run's shards, reused
    reference = reference_training(cfg, dataset_dir, cfg.train.max_steps)
    exported = exported_weights(swa_run)
    assert set(exported) == set(reference.weights[0])
    for name, weight in exported.items():
        expected = torch.stack([reference.weights[step - 1][name] for step in AVERAGED_STEPS]).mean(0)
        torch.testing.assert_close(weight, expected, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")

    model, _ = load_model(swa_run.model_dir)
    val = logged_curve(swa_run, "val/loss")
    assert set(val) == {4}
    assert val[4] == pytest.approx(reference_val_loss(cfg, dataset_dir, model), rel=1e-5)
    trained = reference_val_loss(cfg, dataset_dir, reference.model)  # the last step's weights, not averaged
    assert abs(val[4] - trained) > 1e-3, f"averaged {val[4]} vs trained {trained}"  # measured: 0.04 apart

    checkpoint = Path(swa_run.checkpoint_path)
    assert {p.name for p in checkpoint.glob("rank*_swa.pt")} == {"rank0_swa.pt", "rank1_swa.pt"}
    saved = torch.load(checkpoint / "rank1_swa.pt", weights_only=True)
    assert (saved["count"], saved["start_step"]) == (len(AVERAGED_STEPS), AVERAGED_STEPS[0])


def test_a_resumed_run_exports_the_same_average(workdir, swa_run):
    """Rank 1 dies before step 3, after the step-2 checkpoint (the average holds step 2's weights);
    the run resumed from that checkpoint averages steps 3 and 4 into it."""
    with pytest.raises(UserError, match="training failed"):
        run_training(tiny_config(workdir, **SWA, faults={"kill_rank": 1, "kill_at_step": 3}))
    stopped = next(d for d in (workdir / "runs").iterdir() if (d / ".fault_injected").exists()) / "step_00000002"
    assert torch.load(stopped / "rank0_swa.pt", weights_only=True)["count"] == 1
    resumed = run_training(tiny_config(workdir, **SWA), resume_from=str(stopped))
    uninterrupted, continued = exported_weights(swa_run), exported_weights(resumed)
    assert set(continued) == set(uninterrupted)
    for name, weight in continued.items():
        assert torch.equal(weight, uninterrupted[name]), f"{name} differs after resuming"
    assert logged_curve(resumed, "val/loss")[4] == logged_curve(swa_run, "val/loss")[4]
