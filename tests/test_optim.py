"""Optimiser and scheduler come from model arguments; parameter groups survive."""

from functools import partial

import pytest
import torch

from sicsrec.modules import Stage1Module, Stage2Module


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


def test_stage2_warms_its_learning_rate_up_over_its_first_ten_epochs():
    """Stage 2 starts from a fitted model: its first steps must be small (298d0da:docs/results.md §21)."""
    model = Stage2Module(stage1_checkpoint=None)
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = model.optimizer([weight])
    scheduler = model.scheduler(optimizer)
    rates = []
    for _ in range(12):  # one step per epoch, as Lightning steps it
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(1e-6) and rates[10] == rates[11] == pytest.approx(1e-4)
    assert all(a < b for a, b in zip(rates[:10], rates[1:11]))
