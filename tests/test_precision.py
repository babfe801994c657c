"""GPU-speed switches that must not change results: bf16-mixed and torch.compile."""

import torch

from sicsrec.evaluation import target_ranks
from sicsrec.modules import Stage1Module
from sicsrec.nn.losses import item_scores


def test_scores_stay_float32_under_bf16_autocast_so_ranks_do_not_tie():
    g = torch.Generator().manual_seed(0)
    users, items = torch.randn(64, 32, generator=g), torch.randn(3001, 32, generator=g)
    targets = torch.randint(1, 3001, (64,), generator=g)
    exact = item_scores(users, items)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = item_scores(users, items)
        # what scoring inside autocast would give without the guard: bf16 ties and rank shifts
        naive = users @ items.T
    assert mixed.dtype == torch.float32 and naive.dtype == torch.bfloat16
    assert torch.equal(target_ranks(mixed, targets), target_ranks(exact, targets))
    naive[:, 0] = float("-inf")
    assert not torch.equal(target_ranks(naive.float(), targets), target_ranks(exact, targets))


def test_compile_switch_compiles_the_encoders_with_dynamic_shapes_and_keeps_outputs():
    torch.manual_seed(0)
    model = Stage1Module(
        num_items=50, max_len=10, hidden_size=16, inner_size=16, num_layers=1, use_content=False, compile=True
    )
    model.eval()
    eager = {
        shape: model.id_encoder(torch.randint(1, 51, shape, generator=torch.Generator().manual_seed(1)))
        for shape in ((8, 10), (5, 7))
    }
    model.setup("fit")
    assert model.id_encoder._compiled_call_impl is not None
    keys = set(model.state_dict())
    for shape, expected in eager.items():
        got = model.id_encoder(torch.randint(1, 51, shape, generator=torch.Generator().manual_seed(1)))
        assert torch.allclose(got, expected, atol=1e-5)
    assert set(model.state_dict()) == keys  # checkpoints keep their parameter names
