"""The few-row linear product used while sampling on a CPU: same results, and it cleans up."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from safeladder.models.tiny import tiny_model
from safeladder.rollout.cpu_kernels import FEW_ROWS, _few_row_forward, few_row_linears


@pytest.mark.parametrize("shape", [(1, 1, 24), (4, 1, 24), (2, 3, 24), (16, 1, 24), (8, 24)])
@pytest.mark.parametrize("bias", [True, False])
def test_the_few_row_product_equals_nn_linear(shape, bias):
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40, bias=bias)
    x = torch.randn(*shape)
    got = _few_row_forward(layer, x)
    assert got.shape == (*shape[:-1], 40)
    torch.testing.assert_close(got, F.linear(x, layer.weight, layer.bias), atol=1e-5, rtol=1e-5)


def test_the_model_computes_the_same_inside_and_is_restored_after(monkeypatch):
    model = tiny_model().eval()
    ids = torch.tensor([[5, 6, 7, 8]] * 4)  # 4 rows: inside the few-row range
    assert 4 in FEW_ROWS
    with torch.no_grad():
        plain = model(input_ids=ids[:, -1:]).logits[:, -1]
        products = []
        mm = torch.mm
        monkeypatch.setattr(torch, "mm", lambda a, b: products.append(a.shape) or mm(a, b))
        with few_row_linears(model):
            got = model(input_ids=ids[:, -1:]).logits[:, -1]
        monkeypatch.undo()
    layers = [m for m in model.modules() if type(m) is torch.nn.Linear]
    assert len(products) == len(layers)  # every linear layer took W @ xᵀ
    assert not any("forward" in vars(m) for m in layers)  # and is back to nn.Linear's own
    torch.testing.assert_close(got, plain, atol=1e-5, rtol=1e-5)


def test_wide_layers_take_the_transposed_product_at_more_rows(monkeypatch):
    from safeladder.rollout.cpu_kernels import WIDE_OUT, WIDE_ROWS

    torch.manual_seed(0)
    head, hidden = torch.nn.Linear(16, WIDE_OUT, bias=False), torch.nn.Linear(16, 32, bias=False)
    x = torch.randn(16, 16)  # 16 rows: past the few-row range, inside the wide one
    assert 16 not in FEW_ROWS and 16 in WIDE_ROWS
    products = []
    mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda a, b: products.append(a.shape) or mm(a, b))
    with torch.no_grad():
        wide, narrow = _few_row_forward(head, x), _few_row_forward(hidden, x)
    assert products == [(WIDE_OUT, 16)]  # only the vocabulary-sized layer
    torch.testing.assert_close(wide, F.linear(x, head.weight), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(narrow, F.linear(x, hidden.weight))
