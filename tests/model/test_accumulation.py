"""train.accumulation_steps: micro-batches with accumulated gradients make the same update."""

from __future__ import annotations

import torch
from torch import nn

from ci_ml.model.train import epoch_sums


def _run(accumulation: int) -> tuple[dict[str, torch.Tensor], float]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.Generator().manual_seed(1)
    x = torch.randn(96, 16, generator=data, dtype=torch.float64)
    y = torch.randint(0, 4, (96,), generator=data)
    total, seen = epoch_sums(model, opt, x, y, batch_size=48,
                             generator=torch.Generator().manual_seed(2), accumulation=accumulation)
    assert seen == 96
    return {k: v.clone() for k, v in model.state_dict().items()}, total


def test_accumulated_micro_batches_give_the_weights_of_whole_batches() -> None:
    whole, loss = _run(1)
    for accumulation in (2, 3, 5):   # 5 does not divide 48: uneven micro-batches
        split, split_loss = _run(accumulation)
        for name, value in whole.items():
            assert torch.allclose(value, split[name], atol=1e-12), (accumulation, name)
        assert abs(loss - split_loss) < 1e-9
