"""Optimiser and scheduler come from model arguments; parameter groups survive."""

from functools import partial

import torch

from sicsrec.modules import Stage1Module


def test_parameter_groups_keep_biases_and_norms_free_of_weight_decay():
    model = Stage1Module(
        num_items=30,
        max_len=5,
        hidden_size=16,
        inner_size=16,
        use_content=False,
        optimizer=partial(torch.optim.AdamW, lr=0.01, weight_decay=0.1),
    )
    optimizer = model.configure_optimizers()
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith(".bias") or p.ndim == 1 for p in no_decay["params"])
    assert any("norm" in names[id(p)] for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_scheduler_is_attached_with_the_validation_monitor():
    model = Stage1Module(
        num_items=30,
        max_len=5,
        hidden_size=16,
        inner_size=16,
        use_content=False,
        scheduler=partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="max", patience=2),
    )
    config = model.configure_optimizers()
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert config["lr_scheduler"]["monitor"] == "valid/hr@10"
    assert len(config["optimizer"].param_groups) == 2
