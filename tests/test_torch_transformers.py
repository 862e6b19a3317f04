"""softmaxkit.torch.transformers: a causal LM's loss through linear_cross_entropy.

Tiny randomly initialised GPT-2 and Llama models (no downloads): the patched
model's loss and every parameter gradient must equal the model's own within
float32 rounding, the logits must not be returned unless asked for, and calls
without labels must be untouched.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip(
    "transformers", reason="transformers not installed: pip install softmaxkit[transformers]"
)

from softmaxkit import SoftmaxkitTypeError, SoftmaxkitValueError  # noqa: E402
from softmaxkit.torch.transformers import (  # noqa: E402
    apply_linear_cross_entropy,
    remove_linear_cross_entropy,
)


def _gpt2():
    cfg = transformers.GPT2Config(
        vocab_size=97,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(cfg)


def _llama():
    cfg = transformers.LlamaConfig(
        vocab_size=101,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return transformers.LlamaForCausalLM(cfg)


MODELS = {"gpt2": _gpt2, "llama": _llama}


def _batch(V, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (3, 14), generator=g)
    labels = ids.clone()
    labels[0, :4] = -100  # a masked prompt
    labels[2, -3:] = -100  # padding
    return ids, labels


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("accumulate", [False, True])
def test_loss_and_every_gradient_equal_the_models_own(name, accumulate):
    torch.manual_seed(0)
    ref = MODELS[name]()
    model = apply_linear_cross_entropy(copy.deepcopy(ref))
    ids, labels = _batch(ref.config.vocab_size)
    extra = {"num_items_in_batch": torch.tensor(17)} if accumulate else {}
    ours = model(input_ids=ids, labels=labels, **extra)
    theirs = ref(input_ids=ids, labels=labels, **extra)
    assert ours.logits is None  # never formed
    assert ours.loss.dtype == theirs.loss.dtype == torch.float32
    torch.testing.assert_close(ours.loss, theirs.loss)
    ours.loss.backward()
    theirs.loss.backward()
    g_ours, g_theirs = _grads(model), _grads(ref)
    assert g_ours.keys() == g_theirs.keys() and len(g_ours) == len(list(ref.parameters()))
    for n in g_theirs:
        torch.testing.assert_close(g_ours[n], g_theirs[n], rtol=1e-5, atol=1e-6, msg=n)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_logits_when_asked_and_calls_without_labels_untouched(name):
    torch.manual_seed(1)
    ref = MODELS[name]()
    model = apply_linear_cross_entropy(copy.deepcopy(ref))
    ids, labels = _batch(ref.config.vocab_size, seed=1)
    want = ref(input_ids=ids, labels=labels)
    got = model(input_ids=ids, labels=labels, return_logits=True)
    assert torch.equal(got.logits, want.logits)
    torch.testing.assert_close(got.loss, want.loss)
    assert torch.equal(model(input_ids=ids).logits, ref(input_ids=ids).logits)
    # shift_labels alone: transformers computes no loss without labels, so the model's
    # own output (the logits, no loss), not a stand-in dropped for a loss never formed
    shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]
    mine, theirs = (
        model(input_ids=ids, shift_labels=shifted),
        ref(input_ids=ids, shift_labels=shifted),
    )
    assert (mine.loss is None) == (theirs.loss is None)
    assert torch.equal(mine.logits, theirs.logits)
    # generation runs through the untouched path
    out = model.generate(ids[:1, :5], max_new_tokens=3, do_sample=False)
    assert torch.equal(out, ref.generate(ids[:1, :5], max_new_tokens=3, do_sample=False))
    remove_linear_cross_entropy(model)
    assert model(input_ids=ids, labels=labels).logits is not None


def test_refuses_models_it_cannot_serve():
    with pytest.raises(SoftmaxkitTypeError, match="output embedding"):
        apply_linear_cross_entropy(torch.nn.Linear(3, 3))
    model = apply_linear_cross_entropy(_gpt2())
    with pytest.raises(SoftmaxkitValueError, match="once"):
        apply_linear_cross_entropy(model)


def test_docstring_examples():
    import doctest

    import softmaxkit.torch.transformers as mod

    res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0
    assert res.failed == 0
