"""Our losses against TRL 1.16's own code, on random tensors: same loss, same gradient.

TRL computes most losses inside trainer methods. Each test calls the real method (`GRPOTrainer.
_compute_loss`, `DPOTrainer._compute_loss`, `KTOTrainer._compute_loss`, `RewardTrainer.compute_loss`,
`SFTTrainer.compute_loss`, ORPO's `odds_ratio_loss`, CPO's `cpo_loss`, GKD's `generalized_jsd_loss`)
on a stand-in `self` (single process, no accumulation) and a stand-in model that returns given
per-token log-probs (0 off the completion, as TRL's fused head), so both sides differentiate the
very same leaf tensor. TRL is in the `test` extra.
"""
import inspect
import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("trl", reason="TRL (the `test` extra) is needed for the parity tests")

from posttrain.losses.distill import generalized_jsd  # noqa: E402
from posttrain.losses.entropy import entropy_bonus, top_entropy_mask  # noqa: E402
from posttrain.losses.kto import kto_loss, kto_reference_point  # noqa: E402
from posttrain.losses.orpo import orpo_loss  # noqa: E402
from posttrain.losses.policy import kl_k3  # noqa: E402
from posttrain.losses.policy_variants import LOSS_TYPES, SURROGATES  # noqa: E402
from posttrain.losses.preference import DPO_LOSSES, bradley_terry_loss  # noqa: E402
from posttrain.losses.reduce import Normaliser  # noqa: E402
from posttrain.losses.sft import SFT_LOSSES  # noqa: E402


def _accelerator():
    same = lambda t, *a, **k: t  # noqa: E731  (one process: gather / reduce / pad are identities)
    return SimpleNamespace(gather=same, gather_for_metrics=same, reduce=same, pad_across_processes=same,
                           num_processes=1, sync_gradients=True, device=torch.device("cpu"), parallelism_config=None)


def _fake(**attrs):
    base = dict(accelerator=_accelerator(), model=SimpleNamespace(training=True), _metrics=defaultdict(
        lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1, aux_loss_enabled=False,
        current_gradient_accumulation_steps=1)
    return SimpleNamespace(**{**base, **attrs})


def _check(ours, theirs, leaf_ours, leaf_theirs):
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5, abs=1e-6)
    g_ours, = torch.autograd.grad(ours, leaf_ours)
    g_theirs, = torch.autograd.grad(theirs, leaf_theirs)
    assert torch.allclose(g_ours, g_theirs, rtol=1e-4, atol=1e-6), (g_ours, g_theirs)


# ------------------------------------------------------------------ GRPO and its variants
GRPO_CASES = [  # loss_type, importance_sampling_level, beta, top_entropy_quantile, entropy_coef
    ("grpo", "token", 0.0, 1.0, 0.0), ("dapo", "token", 0.04, 1.0, 0.0), ("bnpo", "token", 0.0, 1.0, 0.0),
    ("dr_grpo", "token", 0.04, 1.0, 0.0), ("grpo", "sequence", 0.0, 1.0, 0.0), ("dapo", "sequence", 0.04, 1.0, 0.0),
    ("cispo", "token", 0.0, 1.0, 0.0), ("cispo", "sequence", 0.0, 1.0, 0.0), ("sapo", "token", 0.04, 1.0, 0.0),
    ("sapo", "sequence", 0.0, 1.0, 0.0), ("dapo", "token", 0.0, 0.3, 0.0), ("grpo", "token", 0.0, 1.0, 0.05),
]


def _grpo_ours(loss_type, level, beta, q, coef, logps, old, ref, adv, mask, entropy):
    name, aggregate = LOSS_TYPES[loss_type]
    kw = {"clip": dict(eps_low=0.2, eps_high=0.28), "cispo": dict(max_weight=1.5),
          "sapo": dict(tau_pos=1.0, tau_neg=1.05)}[name]
    tok, _ = SURROGATES[name](logps, old, adv, mask, level=level, **kw)
    if q < 1.0:
        tok = tok * top_entropy_mask(entropy, mask, q)
    if beta:
        tok = tok + beta * kl_k3(logps, ref)
    norm = Normaliser(float(mask.sum()), float(mask.shape[0]), mask.shape[1])
    loss = aggregate(tok, mask, norm)
    return loss + entropy_bonus(entropy, mask, norm, coef) if coef else loss


@pytest.mark.parametrize("loss_type,level,beta,q,coef", GRPO_CASES)
def test_grpo_loss_matches_trl(loss_type, level, beta, q, coef):
    from trl.trainer.grpo_trainer import GRPOTrainer

    g = torch.Generator().manual_seed(hash((loss_type, level, beta, q)) % 1000)
    b, t = 4, 6
    old = -torch.rand(b, t, generator=g) * 2
    logps = (old + torch.randn(b, t, generator=g) * 0.4).requires_grad_(True)  # ratios on both sides of the clip
    ref = old + torch.randn(b, t, generator=g) * 0.2
    mask = torch.ones(b, t)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    adv = torch.randn(b, generator=g)
    entropy = (torch.rand(b, t, generator=g) * 3).requires_grad_(True)
    ours = _grpo_ours(loss_type, level, beta, q, coef, logps, old, ref, adv, mask, entropy)

    leaf, ent_leaf = logps.detach().clone().requires_grad_(True), entropy.detach().clone().requires_grad_(True)
    args = SimpleNamespace(use_bias_correction_kl=False, delta=None, sapo_temperature_pos=1.0,
                           sapo_temperature_neg=1.05, steps_per_generation=1)
    fake = _fake(top_entropy_quantile=q, off_policy_mask_threshold=None, importance_sampling_level=level, beta=beta,
                 loss_type=loss_type, epsilon_low=0.2, epsilon_high=1.5 if loss_type == "cispo" else 0.28,
                 use_vllm=False, max_completion_length=t, _entropy_bonus_enabled=coef != 0.0, entropy_coef=coef,
                 use_adaptive_entropy=False, args=args,
                 _get_per_token_logps_and_entropies=lambda *a, **k: (leaf, ent_leaf, None))
    fake.get_high_entropy_mask = lambda e, m, thr: GRPOTrainer.get_high_entropy_mask(fake, e, m, thr)
    inputs = {"prompt_ids": torch.zeros(b, 1, dtype=torch.long), "prompt_mask": torch.ones(b, 1, dtype=torch.long),
              "completion_ids": torch.zeros(b, t, dtype=torch.long), "completion_mask": mask.long(),
              "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": mask.sum()}
    theirs = GRPOTrainer._compute_loss(fake, None, inputs)
    _check(ours, theirs, logps, leaf)
    if coef:
        g_ours, = torch.autograd.grad(_grpo_ours(loss_type, level, beta, q, coef, logps, old, ref, adv, mask,
                                                 entropy), entropy)
        g_theirs, = torch.autograd.grad(GRPOTrainer._compute_loss(fake, None, inputs), ent_leaf)
        assert torch.allclose(g_ours, g_theirs, atol=1e-7)


# ------------------------------------------------------------------ DPO family
def _dpo_fn(name):
    """Our DPO variant, called with only the keywords it takes (the table's form may change)."""
    entry = DPO_LOSSES[name]
    fn = entry[0] if isinstance(entry, tuple) else entry
    accepted = inspect.signature(fn).parameters

    def call(*args, **kw):
        return fn(*args, **{k: v for k, v in kw.items() if k in accepted})
    return call


@pytest.mark.parametrize("name,smoothing", [("sigmoid", 0.0), ("hinge", 0.0), ("ipo", 0.0), ("robust", 0.1)])
def test_dpo_losses_match_trl(name, smoothing):
    from trl.trainer.dpo_trainer import DPOTrainer

    g = torch.Generator().manual_seed(7)
    p, t = 3, 7
    mask = torch.ones(2 * p, t)
    mask[:, :2] = 0  # prompt
    mask[1, 5:] = 0
    mask[4, 6:] = 0
    per_token = (-torch.rand(2 * p, t, generator=g) * 2) * mask
    per_token.requires_grad_(True)
    ref = per_token.detach().sum(1) + torch.randn(2 * p, generator=g) * 0.5
    lengths = mask.sum(1)
    seq = (per_token * mask).sum(1)
    losses, _, _ = _dpo_fn(name)(seq[:p], seq[p:], ref[:p], ref[p:], beta=0.1, label_smoothing=smoothing,
                                 chosen_lengths=lengths[:p], rejected_lengths=lengths[p:])
    ours = losses.mean()

    leaf = per_token.detach().clone().requires_grad_(True)
    zeros = torch.zeros(2 * p, t - 1)
    model = lambda **kw: SimpleNamespace(log_probs=(leaf * mask)[:, 1:], entropy=zeros, mean_logits=zeros,  # noqa: E731
                                         is_top1=zeros.bool())
    fake = _fake(ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=[name],
                 loss_weights=[1.0], beta=0.1, label_smoothing=smoothing, use_weighting=False)
    inputs = {"input_ids": torch.zeros(2 * p, t, dtype=torch.long), "attention_mask": torch.ones(2 * p, t),
              "completion_mask": mask.long(), "ref_chosen_logps": ref[:p], "ref_rejected_logps": ref[p:]}
    theirs = DPOTrainer._compute_loss(fake, model, inputs, False)
    _check(ours, theirs, per_token, leaf)


def test_simpo_matches_trl_cpo():
    from trl.experimental.cpo.cpo_trainer import CPOTrainer

    g = torch.Generator().manual_seed(3)
    seq = (-torch.rand(8, generator=g) * 20).requires_grad_(True)
    lengths = torch.tensor([5.0, 9.0, 3.0, 7.0, 4.0, 8.0, 6.0, 2.0])
    losses, _, _ = _dpo_fn("simpo")(seq[:4], seq[4:], beta=2.0, label_smoothing=0.1, simpo_gamma=0.5,
                                    chosen_lengths=lengths[:4], rejected_lengths=lengths[4:])
    leaf = seq.detach().clone().requires_grad_(True)
    avg = leaf / lengths
    fake = _fake(alpha=0.0, loss_type="simpo", simpo_gamma=0.5, beta=2.0, label_smoothing=0.1)
    theirs, _, _ = CPOTrainer.cpo_loss(fake, avg[:4], avg[4:])
    _check(losses.mean(), theirs.mean(), seq, leaf)


def test_reward_model_loss_matches_trl():
    from trl.trainer.reward_trainer import RewardTrainer

    g = torch.Generator().manual_seed(5)
    rewards = torch.randn(8, generator=g).requires_grad_(True)
    margin = torch.rand(4, generator=g)
    ours, _ = bradley_terry_loss(rewards[:4], rewards[4:], margin=margin, num_items=4.0, center_rewards_coefficient=0.01)
    leaf = rewards.detach().clone().requires_grad_(True)
    model = lambda **kw: SimpleNamespace(logits=leaf.unsqueeze(-1))  # noqa: E731
    fake = _fake(args=SimpleNamespace(center_rewards_coefficient=0.01))
    theirs = RewardTrainer.compute_loss(fake, model, {"input_ids": None, "attention_mask": torch.ones(8, 3),
                                                      "margin": margin})
    _check(ours, theirs, rewards, leaf)


@pytest.mark.parametrize("name", ["nll", "dft"])
def test_sft_and_dft_losses_match_trl(name):
    from trl.trainer.sft_trainer import SFTTrainer

    g = torch.Generator().manual_seed(11)
    mask = (torch.rand(3, 6, generator=g) > 0.3).float()
    logps = (-torch.rand(3, 6, generator=g) * 3 * mask).requires_grad_(True)
    ours, _ = SFT_LOSSES[name](logps, mask, None, float(mask.sum()))
    leaf = logps.detach().clone().requires_grad_(True)
    model = lambda **kw: SimpleNamespace(log_probs=leaf * mask, label_mask=mask.bool(), entropy=torch.zeros(3, 6),  # noqa
                                         is_top1=torch.zeros(3, 6, dtype=torch.bool))
    fake = _fake(compute_loss_func=None, label_smoother=None, get_tp_size=lambda: 1,
                 args=SimpleNamespace(loss_type=name, average_tokens_across_devices=False))
    theirs = SFTTrainer.compute_loss(fake, model, {"input_ids": None, "attention_mask": torch.ones(3, 6)})
    _check(ours, theirs, logps, leaf)


# ------------------------------------------------------------------ KTO, ORPO, GKD
def test_kto_loss_matches_trl():
    from trl.trainer.kto_trainer import KTOTrainer

    g = torch.Generator().manual_seed(13)
    n, t = 5, 6
    mask = torch.ones(n, t)
    mask[:, :2] = 0
    mask[2, 4:] = 0
    per_token = (-torch.rand(n, t, generator=g) * 2 * mask).requires_grad_(True)
    kl_tokens = -torch.rand(n, t, generator=g) * 2 * mask
    ref = per_token.detach().sum(1) + torch.randn(n, generator=g)
    ref_kl = kl_tokens.sum(1) - torch.rand(n, generator=g)  # a positive KL estimate
    labels = torch.tensor([True, False, True, True, False])
    z = kto_reference_point(kl_tokens.sum(1), ref_kl)
    losses, _ = kto_loss((per_token * mask).sum(1), ref, labels, z, beta=0.1, desirable_weight=1.3, undesirable_weight=0.8)
    ours = losses.mean()

    leaf = per_token.detach().clone().requires_grad_(True)
    ids, kl_ids = torch.zeros(n, t, dtype=torch.long), torch.ones(n, t, dtype=torch.long)
    zeros = torch.zeros(n, t - 1)

    def model(**kw):
        lp = kl_tokens if kw["input_ids"] is kl_ids else leaf * mask  # the fused head: 0 off the labels
        return SimpleNamespace(log_probs=lp[:, 1:], entropy=zeros, mean_logits=zeros)
    fake = _fake(calculate_KL=True, precompute_ref_logps=True, loss_type="kto", beta=0.1, desirable_weight=1.3,
                 undesirable_weight=0.8)
    fake._compute_kl_logps = lambda m, b: KTOTrainer._compute_kl_logps(fake, m, b)
    inputs = {"input_ids": ids, "attention_mask": torch.ones(n, t), "completion_mask": mask.long(),
              "KL_input_ids": kl_ids, "KL_attention_mask": torch.ones(n, t), "KL_completion_mask": mask.long(),
              "label": labels, "ref_logps": ref, "ref_KL_logps": ref_kl}
    theirs = KTOTrainer._compute_loss(fake, model, inputs, False)
    # TRL concatenates desirable then undesirable rows before the mean: same mean, same gradient
    _check(ours, theirs, per_token, leaf)


def test_orpo_odds_ratio_term_matches_trl():
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    g = torch.Generator().manual_seed(17)
    c = (-torch.rand(4, 5, generator=g) * 2).requires_grad_(True)
    r = -torch.rand(4, 5, generator=g) * 2
    mask = torch.ones(4, 5)
    loss, m = orpo_loss(c, mask, r, mask, lam=0.2, num_items=4.0)  # equal lengths: NLLs agree
    ours = loss - m["nll"]  # the odds-ratio part; the NLL is checked by its hand test
    leaf = c.detach().clone().requires_grad_(True)
    fake = _fake(beta=0.2)
    losses, *_ = ORPOTrainer.odds_ratio_loss(fake, leaf.mean(1), r.mean(1))
    theirs = -losses.mean()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    nll_grad = -mask / 20.0
    g_ours, = torch.autograd.grad(loss, c)
    g_theirs, = torch.autograd.grad(theirs, leaf)
    assert torch.allclose(g_ours - nll_grad, g_theirs, atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 1.0])
def test_generalized_jsd_matches_trl_gkd(beta):
    from trl.experimental.gkd.gkd_trainer import GKDTrainer

    g = torch.Generator().manual_seed(19)
    student = torch.randn(2, 4, 11, generator=g).requires_grad_(True)
    teacher = torch.randn(2, 4, 11, generator=g)
    labels = torch.ones(2, 4, dtype=torch.long)
    labels[1, 3] = -100
    keep = labels != -100
    ours = generalized_jsd(F.log_softmax(student[keep], -1), F.log_softmax(teacher[keep], -1), beta).sum() / keep.sum()
    leaf = student.detach().clone().requires_grad_(True)
    theirs = GKDTrainer.generalized_jsd_loss(leaf, teacher, labels=labels, beta=beta)
    _check(ours, theirs, student, leaf)
    assert math.isfinite(ours.item())
