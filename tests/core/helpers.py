"""Small data and config builders shared by the engine and trainer tests."""
import json
import os
import random


def write_sft_jsonl(path, n=48, seed=0, negatives=False):
    rng = random.Random(seed)
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w") as f:
        for i in range(n):
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            row = {"messages": [{"role": "user", "content": f"What is {a} + {b}?"},
                                {"role": "assistant", "content": f"{a} + {b} = {a + b}. #### {a + b}"}]}
            if negatives:
                row = {"prompt": f"What is {a} + {b}?", "completion": f" #### {a + b}",
                       "rejected": f" #### {a + b + rng.randint(1, 9)}"}
            f.write(json.dumps(row) + "\n")
    return str(path)


def sft_overrides(model_dir, data, out, **kw):
    base = {"model": model_dir, "data.train": data, "output_dir": out, "max_steps": 6, "batch_size": 4,
            "learning_rate": 3e-3, "lr_scheduler": "constant", "report_to": "[]", "max_length": 64, "seed": 3}
    base.update(kw)
    return [f"{k}={v}" for k, v in base.items()]
