"""RePaint's time schedule: exact golden lists, and network calls counted through the engine."""

import pytest
import torch

from priorpaint.diffusion import GaussianDiffusion
from priorpaint.sampling import (
    RePaint,
    check_schedule,
    count_network_calls,
    ddpm_schedule,
    jump_schedule,
    sample_loop,
)

NO_LIMIT = 100_000_000  # the reference's default start_resampling


def _golden_sets(golden):
    data = golden("repaint_schedule.pt")
    for name in data["sets"]:
        entry = data[name]
        start = entry["start_resampling"]
        kwargs = dict(t_T=entry["t_T"], jump_length=entry["jump_length"],
                      jump_n_sample=entry["jump_n_sample"], n_sample=entry["n_sample"],
                      start_resampling=None if start >= NO_LIMIT else start)
        yield name, kwargs, entry


def test_jump_schedule_equals_every_golden_list(golden):
    sets = list(_golden_sets(golden))
    assert len(sets) == 4
    for name, kwargs, entry in sets:
        assert entry["jump2_length"] == entry["jump3_length"] == 1, name  # no nested jumps
        times = jump_schedule(**kwargs)
        assert times == entry["times"], name
        assert count_network_calls(times) == entry["nfe"], name
        assert len(times) - 1 == entry["n_transitions"], name


class StubNetwork(torch.nn.Module):
    """Counts calls and checks the timesteps it gets; returns zero ε and zero variance value."""

    def __init__(self, timestep_map: torch.Tensor):
        super().__init__()
        self.calls, self.timestep_map = 0, timestep_map

    def forward(self, x, t):
        self.calls += 1
        assert t.shape == (x.shape[0],) and bool((t[0] == t).all())
        assert int(t[0]) in self.timestep_map
        return torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:])


def test_network_calls_through_the_engine(golden):
    """The loop calls the network exactly nfe times for every golden schedule (2410 default)."""
    base = GaussianDiffusion.from_config({"schedule": "linear", "steps": 1000})
    x0 = torch.rand(2, 1, 4, 4) * 2 - 1
    mask = (torch.rand(2, 1, 4, 4) > 0.5).float()
    for name, kwargs, entry in _golden_sets(golden):
        diffusion = base.respace(str(kwargs["t_T"]))
        net = StubNetwork(diffusion.timestep_map)
        out = sample_loop(net, diffusion, x0.shape, jump_schedule(**kwargs),
                          [RePaint(x0, mask)], seed=1)
        assert net.calls == entry["nfe"], name
        assert torch.isfinite(out).all()
    assert count_network_calls(jump_schedule()) == 2410  # the defaults t_T=250, j=10, r=10


def test_defaults_and_degenerate_jumps():
    assert jump_schedule() == jump_schedule(250, 10, 10, 1, None)
    assert jump_schedule(30, 1, 1) == ddpm_schedule(30) == list(range(29, -2, -1))
    assert jump_schedule(8, 10, 5) == ddpm_schedule(8)  # no jump point fits below t_T
    assert count_network_calls(ddpm_schedule(30)) == 30


def test_start_resampling_limits_where_jumps_go_up():
    times = jump_schedule(50, 5, 3, start_resampling=20)
    ups = [cur for last, cur in zip(times[:-1], times[1:], strict=True) if cur > last]
    assert max(ups) == 20 and count_network_calls(times) == 50 + 4 * 2 * 5
    check_schedule(times, 50)


@pytest.mark.parametrize("schedule, message", [
    ([3, 2, 1, 0], "end with -1"),
    ([4, 3, 2, 1, 0, -1], "valid: -1 .. 3"),
    ([3, 1, 0, -1], "exactly one"),
    ([0, -1, 0, -1], "before its end"),
])
def test_check_schedule_rejects_bad_lists(schedule, message):
    with pytest.raises(ValueError, match=message):
        check_schedule(schedule, 4)


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="jump_length"):
        jump_schedule(250, 0, 10)
    with pytest.raises(ValueError, match="num_timesteps"):
        ddpm_schedule(0)
