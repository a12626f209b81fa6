"""Per-step losses of every trainer (SFT nll/unlikelihood, RM, 5 DPO variants, GRPO dapo/grpo with KL and 2
iterations, PPO with penalty and accumulation) on a nano model, as JSON on stdout: run it on two checkouts
and diff, to show a refactor keeps the same numbers on the same seed (about 10 s of CPU).

    PYTHONPATH=src python bench/parity.py --work /tmp/parity > before.json   # then after the change, diff
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import torch
torch.set_num_threads(1)
from posttrain.core.tiny import build_tiny, default_corpus
from core.helpers import write_sft_jsonl
from algorithms.test_dpo import write_pref_jsonl
from posttrain.config import load_config

root = sys.argv[sys.argv.index("--work") + 1] if "--work" in sys.argv else "/tmp/posttrain-parity"
os.makedirs(root, exist_ok=True)
model = os.path.join(root, "nano")
if not os.path.isdir(model):
    build_tiny(model, default_corpus(1500), size="nano", vocab_size=512)
sft_data = write_sft_jsonl(os.path.join(root, "sft.jsonl"), n=32)
neg_data = write_sft_jsonl(os.path.join(root, "neg.jsonl"), n=32, negatives=True)
pref = write_pref_jsonl(os.path.join(root, "pref.jsonl"), n=32)
prompts = os.path.join(root, "prompts.jsonl")
with open(prompts, "w") as f:
    for i in range(32):
        f.write(json.dumps({"prompt": [{"role": "user", "content": f"What is {i} + {i+1}?"}], "answer": str(2*i+1)}) + "\n")
with open(os.path.join(root, "digits.py"), "w") as f:
    f.write("def digits(prompts, completions, **kw):\n    return [sum(c.isdigit() for c in x) / max(len(x), 1) for x in completions]\n")

def run(mod, cls_name, name, extra):
    import importlib
    m = importlib.import_module(f"posttrain.algorithms.{mod}")
    cls = getattr(m, cls_name)
    out = os.path.join(root, "runs", name)
    import shutil; shutil.rmtree(out, ignore_errors=True)
    base = {"model": model, "output_dir": out, "max_steps": 3, "batch_size": 4, "learning_rate": 3e-3,
            "lr_scheduler": "constant", "report_to": "[]", "max_length": 64, "seed": 3, "threads": 1, "resume": "false"}
    base.update(extra)
    cfg = load_config(cls, None, [f"{k}={v}" for k, v in base.items()])
    m.run(cfg)
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    keep = ("loss", "grad_norm", "policy_loss", "value_loss", "kl", "score", "reward/total/mean", "rewards/margin", "clip_frac", "entropy", "accuracy")
    return [{k: round(r[k], 6) for k in keep if k in r} for r in rows]

res = {}
res["sft_nll"] = run("sft", "SFTConfig", "sft_nll", {"data.train": sft_data})
res["sft_ul"] = run("sft", "SFTConfig", "sft_ul", {"data.train": neg_data, "loss": "unlikelihood"})
res["rm"] = run("reward_model", "RewardModelConfig", "rm", {"data.train": pref})
for loss in ("sigmoid", "ipo", "simpo", "robust", "hinge"):
    extra = {"data.train": pref, "loss": loss}
    if loss == "robust": extra["label_smoothing"] = 0.1
    res[f"dpo_{loss}"] = run("dpo", "DPOConfig", f"dpo_{loss}", extra)
grpo_rew = '[{name: "' + os.path.join(root, "digits.py") + ':digits", weight: 1.0}]'
for lt in ("dapo", "grpo"):
    res[f"grpo_{lt}"] = run("grpo", "GRPOConfig", f"grpo_{lt}", {"data.train": prompts, "rewards": grpo_rew, "num_generations": 4,
        "batch_size": 8, "max_new_tokens": 8, "max_length": 48, "loss_type": lt, "beta": 0.1, "num_iterations": 2})
res["ppo"] = run("ppo", "PPOConfig", "ppo", {"data.train": prompts, "rewards": grpo_rew, "max_new_tokens": 8,
    "ppo_epochs": 2, "batch_size": 4, "grad_accum": 2, "missing_eos_penalty": 1.0, "init_kl_coef": 0.1, "max_steps": 4})
print(json.dumps(res, indent=0, sort_keys=True))
