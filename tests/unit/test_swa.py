"""Stochastic weight averaging (raylm.train.swa): the rule, swapping in and out, saving and resuming."""

from __future__ import annotations

import pytest
import torch

from raylm.train.swa import WeightAverage, swa_start_step


def model_and_trajectory(steps: int) -> tuple[torch.nn.Module, list[dict[str, torch.Tensor]]]:
    """A small model and a made-up trajectory of weights, one state dict per optimizer step."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    return model, [{k: torch.randn_like(v) for k, v in model.state_dict().items()} for _ in range(steps)]


@pytest.mark.parametrize("fraction,max_steps,start", [
    (0.5, 4, 2), (0.75, 200, 150), (0.7, 10, 7), (0.71, 10, 8), (0.0, 5, 1), (0.01, 10, 1), (0.99, 3, 3),
])
def test_start_step_is_the_ceiling_of_the_fraction_and_at_least_one(fraction, max_steps, start):
    assert swa_start_step(fraction, max_steps) == start


def test_the_average_is_the_mean_of_the_weights_from_the_start_step_on():
    model, trajectory = model_and_trajectory(6)
    swa = WeightAverage(model, start_step=3)
    for step, weights in enumerate(trajectory, start=1):
        model.load_state_dict(weights)
        assert swa.update(step) == (step >= 3)
    assert swa.count == 4
    for name, average in swa.average.items():
        expected = torch.stack([w[name] for w in trajectory[2:]]).mean(0)
        torch.testing.assert_close(average, expected, rtol=1e-6, atol=1e-7)
        assert average.dtype == torch.float32


def test_swapped_in_holds_the_average_and_restores_the_trained_weights():
    model, trajectory = model_and_trajectory(3)
    swa = WeightAverage(model, start_step=1)
    for step, weights in enumerate(trajectory, start=1):
        model.load_state_dict(weights)
        swa.update(step)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(5, 4)
    with swa.swapped_in() as swapped:
        assert swapped is model
        for name, p in model.named_parameters():
            assert torch.equal(p.detach(), swa.average[name])
        averaged_out = model(x)
    for name, value in model.state_dict().items():
        assert torch.equal(value, trained[name])  # bit for bit
    assert not torch.allclose(model(x), averaged_out)
    with pytest.raises(RuntimeError, match="inside"), swa.swapped_in():
        raise RuntimeError("inside")
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())


def test_before_the_start_step_the_current_weights_are_used():
    model, trajectory = model_and_trajectory(2)
    swa = WeightAverage(model, start_step=5)
    model.load_state_dict(trajectory[0])
    assert not swa.update(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with swa.swapped_in():
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_saved_average_continues_exactly(tmp_path):
    model, trajectory = model_and_trajectory(6)
    straight = WeightAverage(model, start_step=2)
    for step, weights in enumerate(trajectory, start=1):
        model.load_state_dict(weights)
        straight.update(step)
        if step == 3:
            torch.save(straight.state_dict(), tmp_path / "rank0_swa.pt")
    resumed = WeightAverage(model, start_step=2)
    resumed.load_state_dict(torch.load(tmp_path / "rank0_swa.pt", weights_only=True))
    assert resumed.count == 2
    for step, weights in enumerate(trajectory[3:], start=4):
        model.load_state_dict(weights)
        resumed.update(step)
    assert resumed.count == straight.count == 5
    for name in straight.average:
        assert torch.equal(resumed.average[name], straight.average[name])


def test_a_mismatched_saved_average_is_refused():
    model, _ = model_and_trajectory(1)
    state = WeightAverage(model, start_step=2).state_dict()
    with pytest.raises(ValueError, match="starts at step 2, this run's at step 3"):
        WeightAverage(model, start_step=3).load_state_dict(state)
    other = torch.nn.Sequential(torch.nn.Linear(4, 8))
    with pytest.raises(ValueError, match=r"other parameters: missing \[\], unexpected \['2.bias', '2.weight'\]"):
        WeightAverage(other, start_step=2).load_state_dict(state)
    with pytest.raises(ValueError, match="counts optimizer steps from 1"):
        WeightAverage(model, start_step=0)
