"""AttributeModel: shapes, gathered == all-candidates, save/load round trip (plain and PEFT), vocabulary checks."""

import pytest
import torch

from seqlevel.attributes import AttributeHead, AttributeHeadConfig, AttributeModel


@pytest.mark.parametrize("kind,K,n_out", [("binary", 2, 1), ("categorical", 5, 5), ("numeric", 2, 2)])
def test_gathered_equals_all_candidates(make_model, kind, K, n_out):
    m = AttributeModel.for_base(make_model("tiny-llama", vocab_size=40), kind, K, rank=6).eval()
    x = torch.randint(0, 40, (2, 9))
    with torch.no_grad():
        g = m(x, next_tokens=x[:, 1:]).attribute  # (B, T-1, n_out)
        a = m(x, all_candidates=True).attribute  # (B, T, V, n_out)
    assert g.shape == (2, 8, n_out) and a.shape == (2, 9, 40, n_out)
    ref = a[:, :-1].gather(2, x[:, 1:, None, None].expand(-1, -1, 1, n_out)).squeeze(2)
    torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-6)


def test_head_parameter_count_is_reasonable_for_large_vocab():
    # factorised: V·(r + n_out) + block; a Linear(d, V·K) would be d·V·K
    cfg = AttributeHeadConfig("categorical", vocab_size=150_000, hidden_size=4096, num_classes=5, rank=32,
                              block_size=512)
    n = sum(p.numel() for p in AttributeHead(cfg).parameters())
    assert n < 10_000_000, n  # vs 3.07e9 for the dense form


def test_save_load_round_trip(tmp_path, make_model):
    m = AttributeModel.for_base(make_model("tiny-gpt2", vocab_size=48), "categorical", 3, rank=4).eval()
    with torch.no_grad():
        m.head.token_bias.normal_()
    m.save_pretrained(str(tmp_path))
    assert (tmp_path / "attribute_head.safetensors").is_file() and (tmp_path / "attribute_head_config.json").is_file()
    m2 = AttributeModel.from_pretrained(str(tmp_path)).eval()
    x = torch.randint(0, 48, (2, 6))
    with torch.no_grad():
        a, b = m(x, all_candidates=True), m2(x, all_candidates=True)
    torch.testing.assert_close(a.attribute, b.attribute)
    torch.testing.assert_close(a.logits, b.logits)
    assert m2.kind == "categorical" and m2.head.config.num_classes == 3


def test_save_load_with_peft_adapter(tmp_path, make_model):
    from peft import LoraConfig, get_peft_model

    base = make_model("tiny-llama", vocab_size=48)
    peft = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], lora_alpha=4))
    for n, p in peft.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p)  # make the adapter matter
    m = AttributeModel.for_base(peft, "binary").eval()
    m.save_pretrained(str(tmp_path))
    assert (tmp_path / "adapter_config.json").is_file()
    m2 = AttributeModel.from_pretrained(str(tmp_path), base_model=make_model("tiny-llama", vocab_size=48)).eval()
    x = torch.randint(0, 48, (1, 7))
    with torch.no_grad():
        torch.testing.assert_close(m(x, all_candidates=True).attribute, m2(x, all_candidates=True).attribute)
        torch.testing.assert_close(m(x).logits, m2(x).logits)


def test_vocabulary_mismatch_is_refused(tmp_path, make_model):
    head = AttributeHead(AttributeHeadConfig("binary", vocab_size=30, hidden_size=32))
    with pytest.raises(ValueError, match="does not match the base model"):
        AttributeModel(make_model("tiny-gpt2", vocab_size=48), head)
    m = AttributeModel.for_base(make_model("tiny-gpt2", vocab_size=48), "binary")
    m.save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="vocabulary 48 but the base model has 50"):
        AttributeModel.from_pretrained(str(tmp_path), base_model=make_model("tiny-gpt2", vocab_size=50))


def test_head_config_errors():
    with pytest.raises(ValueError, match="num_classes >= 2"):
        AttributeHeadConfig("categorical", 10, 8, num_classes=1)
    with pytest.raises(ValueError, match="kind must be one of"):
        AttributeHeadConfig("ordinal", 10, 8)


def test_no_split_modules_forward_the_base_for_fsdp_auto_wrap(make_model):
    from peft import LoraConfig, get_peft_model

    base = make_model("tiny-gpt2", vocab_size=48)
    assert AttributeModel.for_base(base, "binary")._no_split_modules == list(base._no_split_modules) == ["GPT2Block"]
    peft = get_peft_model(make_model("tiny-gpt2", vocab_size=48), LoraConfig(r=2, target_modules=["c_attn"]))
    assert AttributeModel.for_base(peft, "binary")._no_split_modules == ["GPT2Block"]


def _naive_band(L: int, W: int) -> torch.Tensor:
    """(1, 1, L, L) additive mask by loops: query i attends to key j iff j <= i and (i - j) < W."""
    m = torch.full((1, 1, L, L), torch.finfo(torch.float).min)
    for i in range(L):
        for j in range(L):
            if j <= i and i - j < W:
                m[0, 0, i, j] = 0.0
    return m


@pytest.mark.parametrize("family", ["tiny-gpt2", "tiny-llama"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("W", [1, 2, 4])
def test_context_window_equals_truncated_recomputation(make_model, family, attn, W):
    """Naive reference: position i is recomputed alone on its receptive field, the last R = n_layer·(W-1) + 1 tokens
    (a banded mask compounds over layers; R = 1 for W = 1: the token itself), with their original position ids and a
    loop-built band inside. Right padding changes nothing; tokens before the receptive field cannot matter."""
    torch.manual_seed(0)
    m = AttributeModel.for_base(make_model(family, vocab_size=30, attn=attn), "binary", rank=4,
                                context_window=W).eval()
    n_layer = m.config.get_text_config().num_hidden_layers
    R = n_layer * (W - 1) + 1
    x = torch.randint(3, 30, (2, 11))
    mask = torch.ones_like(x)
    mask[1, 8:] = 0  # right padding on row 1
    with torch.no_grad():
        out = m(x, mask, all_candidates=True)
        for b in range(2):
            for i in range(int(mask[b].sum())):
                lo = max(0, i - R + 1)
                band = None if W == 1 else _naive_band(i + 1 - lo, W)
                ref = m.base(input_ids=x[b:b + 1, lo:i + 1], position_ids=torch.arange(lo, i + 1)[None],
                             attention_mask=band, output_hidden_states=True)
                h = ref.hidden_states[-1][0, -1]
                torch.testing.assert_close(out.hidden[b, i], h, rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(out.logits[b, i], ref.logits[0, -1], rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(out.attribute[b, i], m.head.all_candidates(h), rtol=1e-5, atol=1e-5)
        # a token just outside the receptive field of the last position has no effect; the first one inside does
        def changed_at(j):
            x2 = x[:1].clone()
            x2[0, j] = (x2[0, j] - 2) % 27 + 3  # another id in [3, 30)
            return m(x2).hidden[0, 10]
        torch.testing.assert_close(changed_at(10 - R), out.hidden[0, 10], rtol=1e-6, atol=1e-6)
        assert (changed_at(10 - R + 1) - out.hidden[0, 10]).abs().max() > 1e-4
    assert m.context_window == W


def test_context_window_saved_and_checked(tmp_path, make_model):
    m = AttributeModel.for_base(make_model("tiny-gpt2", vocab_size=30), "binary", rank=4, context_window=2).eval()
    m.save_pretrained(str(tmp_path))
    assert AttributeModel.from_pretrained(str(tmp_path)).context_window == 2
    with pytest.raises(ValueError, match="context_window"):
        AttributeHeadConfig("binary", 30, 8, context_window=0)
    with pytest.raises(ValueError, match="past_key_values"):
        m(torch.ones(1, 3, dtype=torch.long), past_key_values=object())


def test_full_window_equals_no_window(make_model):
    """W >= T is plain causal attention."""
    m = AttributeModel.for_base(make_model("tiny-gpt2", vocab_size=30), "binary", rank=4).eval()
    x = torch.randint(3, 30, (2, 7))
    with torch.no_grad():
        a = m(x, all_candidates=True)
        m.head.config.context_window = 7
        b = m(x, all_candidates=True)
    torch.testing.assert_close(a.hidden, b.hidden, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind,K", [("binary", 2), ("categorical", 3)])
@pytest.mark.parametrize("candidates", [None, [3, 5, 7, 11]])
def test_dueling_head_is_state_value_plus_centred_advantage(make_model, kind, K, candidates):
    """With ``dueling`` the outputs are ``c_t + A_t[v] − mean_{u ∈ C} A_t[u]``, computed naively from the plain head's
    parameters; over the candidates C they average to the prefix term ``c_t`` (the state value), and every head
    method (gathered, all candidates, at candidates, class probability) agrees with that formula."""
    torch.manual_seed(0)
    m = AttributeModel.for_base(make_model("tiny-gpt2", vocab_size=40), kind, K, rank=6, query_std=0.5,
                                dueling=True, dueling_candidates=candidates).eval()
    head = m.head
    with torch.no_grad():
        head.token_bias.normal_()  # non-zero biases, so centring them is tested too
        head.prefix.weight.normal_()
    x = torch.randint(0, 40, (2, 7))
    with torch.no_grad():
        h = m(x).hidden
        q, c = head.features(h)  # (B, T, n_out, r), (B, T, n_out)
        adv = torch.einsum("btkr,vr->btvk", q, head.token_keys) + head.token_bias  # plain A_t[v, k]
        C = list(range(40)) if candidates is None else candidates
        want = c.unsqueeze(2) + adv - adv[:, :, C].mean(2, keepdim=True)  # (B, T, V, n_out)
        got = head.all_candidates(h)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[:, :, C].mean(2), c, rtol=1e-5, atol=1e-5)  # mean over C = state value
        torch.testing.assert_close(head.gathered(h, x), want.gather(2, x[..., None, None].expand(
            -1, -1, 1, want.shape[-1])).squeeze(2), rtol=1e-5, atol=1e-5)
        cand = torch.tensor([[3, 9]]).expand(2, 7, 2)
        torch.testing.assert_close(head.at_candidates(h, cand), want[:, :, [3, 9]], rtol=1e-5, atol=1e-5)
        p = want.softmax(-1)[..., 1] if kind == "categorical" else want[..., 0].sigmoid()
        torch.testing.assert_close(head.class_probability(h, 1), p, rtol=1e-5, atol=1e-6)
        # the same parameters without dueling give the uncentred outputs
        head.config.dueling = False
        torch.testing.assert_close(head.all_candidates(h), c.unsqueeze(2) + adv, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="dueling_candidates"):
        AttributeHeadConfig("binary", 10, 8, dueling=True, dueling_candidates=[3, 12])


def test_dueling_head_saved_and_loaded(tmp_path, make_model):
    m = AttributeModel.for_base(make_model("tiny-gpt2", vocab_size=48), "binary", rank=4, dueling=True,
                                dueling_candidates=[3, 4, 5, 6]).eval()
    m.save_pretrained(str(tmp_path))
    m2 = AttributeModel.from_pretrained(str(tmp_path)).eval()
    assert m2.head.config.dueling and m2.head.config.dueling_candidates == [3, 4, 5, 6]
    x = torch.randint(0, 48, (1, 5))
    with torch.no_grad():
        torch.testing.assert_close(m2(x, all_candidates=True).attribute, m(x, all_candidates=True).attribute)
