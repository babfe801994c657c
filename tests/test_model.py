"""The ID encoder's structure: causal, padding-proof, LoRA-targetable."""

import torch
from torch import nn

from sicsrec.nn.id_encoder import IDEncoder


def make(**kw):
    torch.manual_seed(0)
    kw = {"hidden_size": 32, "inner_size": 32, "max_len": 10, **kw}
    return IDEncoder(num_items=50, **kw).eval()


def test_a_position_never_sees_later_items():
    enc = make()
    x = torch.tensor([[3, 7, 9, 11, 2]])
    y = x.clone()
    y[0, 3:] = torch.tensor([40, 41])
    a, b = enc(x), enc(y)
    assert torch.allclose(a[0, :3], b[0, :3], atol=1e-6)
    assert not torch.allclose(a[0, 3], b[0, 3], atol=1e-3)


def test_right_padding_does_not_change_real_positions():
    enc = make()
    short = torch.tensor([[5, 6, 7]])
    padded = torch.tensor([[5, 6, 7, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    assert torch.allclose(enc(short)[0], enc(padded)[0, :3], atol=1e-6)


def test_attention_projections_are_named_linears_for_peft():
    enc = make()
    names = {n.rsplit(".", 1)[-1] for n, m in enc.named_modules() if isinstance(m, nn.Linear)}
    assert {"query", "key", "value", "out", "dense_in", "dense_out"} <= names


def test_recbole_initialisation_and_layer_norm_eps():
    enc = IDEncoder(num_items=2000, hidden_size=64, layer_norm_eps=1e-12, init_std=0.02)
    assert abs(enc.item_embedding.weight.std().item() - 0.02) < 0.002
    assert enc.norm.eps == 1e-12
    assert all(torch.all(m.bias == 0) for m in enc.modules() if isinstance(m, nn.Linear))


def test_too_long_input_is_refused():
    enc = make()
    try:
        enc(torch.ones(1, 11, dtype=torch.long))
    except ValueError as err:
        assert "max_len" in str(err)
    else:
        raise AssertionError("an input longer than max_len must be refused")


def test_last_only_equals_the_full_pass_at_each_rows_last_position():
    enc = make(num_layers=3)
    items = torch.tensor([[5, 6, 7, 0, 0], [1, 2, 3, 4, 5], [9, 0, 0, 0, 0]])
    full = enc(items)
    expected = full[torch.arange(3), torch.tensor([2, 4, 0])]
    assert torch.allclose(enc(items, last_only=True), expected, atol=1e-5)
