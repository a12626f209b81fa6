"""`posttrain judge label`: TRL prompt/chosen/rejected rows with confidence, ties and bad rows handled."""
import json
import re

import pytest

from posttrain.judge_label import LabelConfig, label
from posttrain.rewards.judge import JudgeConfig


class ByLength:
    """P(A): longer response preferred; `bias` towards position A."""
    name = "by-length"

    def __init__(self, bias=0.0):
        self.bias = bias

    def choice_probs(self, questions, first, second):
        out = []
        for q in questions:
            a, b = re.findall(r"<<<RESPONSE \w+>>>\n(.*?)\n<<<END", q, re.S)
            out.append(min(1.0, max(0.0, 0.5 + 0.1 * (len(a) - len(b)) + self.bias)))
        return out


def test_label_writes_trl_rows_and_drops_ties(tmp_path):
    data = tmp_path / "in.jsonl"
    rows = [{"prompt": "p1", "completions": ["a", "aaa", "aa"], "id": 1},
            {"prompt": [{"role": "user", "content": "p2"}], "chosen": [{"role": "assistant", "content": "b"}],
             "rejected": [{"role": "assistant", "content": "bbbb"}]},
            {"prompt": "p3", "chosen": "same", "rejected": "same"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out" / "pairs.jsonl"
    cfg = LabelConfig(data=str(data), output=str(out), judge=JudgeConfig(model="m", mode="pairwise"))
    s = label(cfg, backend=ByLength())
    got = [json.loads(line) for line in open(out)]
    # p1: pairs (a, aaa), (a, aa), (aaa, aa): longer wins; "a" vs "aaa": p1 = 0.3, p2 = 1 - 0.7 = 0.3 -> conf 0.7
    assert [(r["chosen"], r["rejected"]) for r in got[:3]] == [("aaa", "a"), ("aa", "a"), ("aaa", "aa")]
    assert got[0]["confidence"] == pytest.approx(0.7) and got[0]["id"] == 1 and got[0]["prompt"] == "p1"
    # p2: the judge flips the data's labels (longer wins), message lists kept as they came
    assert got[3]["chosen"] == rows[1]["rejected"] and got[3]["prompt"] == rows[1]["prompt"]
    # p3: equal responses -> p = 0.5 both orders -> tie, dropped and counted
    assert s["pairs"] == 5 and s["kept"] == 4 and s["ties_dropped"] == 1 and s["position_consistency"] == 0.8
    assert json.load(open(str(out) + ".summary.json"))["kept"] == 4


def test_position_biased_judge_labels_nothing(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"prompt": "p", "completions": ["ab", "abc"]}) + "\n")
    cfg = LabelConfig(data=str(data), output=str(tmp_path / "o.jsonl"), judge=JudgeConfig(model="m", mode="pairwise"))
    s = label(cfg, backend=ByLength(bias=0.5))
    assert s["kept"] == 0 and s["ties_dropped"] == 1 and s["first_position_win_rate"] == 1.0


def test_bad_rows_and_mode_are_clear_errors(tmp_path, capsys):
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"prompt": "p", "completions": ["a", "b"]}) + "\n"
                    + json.dumps({"prompt": "p", "completions": ["only one"]}) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {data}\noutput: {tmp_path / 'o.jsonl'}\njudge:\n  model: m\n  mode: pairwise\n")
    from posttrain.cli import main as cli
    assert cli(["judge", "label", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{data}:2: field 'completions': expected a list of >= 2 candidates" in err
    assert cli(["judge", "label", "--config", str(cfg), "judge.mode=yes_no"]) == 2
    assert "error: judge label needs judge.mode: pairwise, found 'yes_no'" in capsys.readouterr().err
    assert cli(["judge"]) == 2


def test_bad_judge_settings_are_one_line_errors_before_any_judging(tmp_path, capsys, tiny_model_dir):
    """Issue 14's bad inputs from the command line: a template missing its completion fields, a judge model
    without a chat template under chat: true, a server that is down: each one `error:` line, exit 2."""
    import shutil

    from posttrain.cli import main as cli
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"prompt": "p", "completions": ["a", "b"]}) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {data}\noutput: {tmp_path / 'o.jsonl'}\njudge:\n  model: m\n  mode: pairwise\n")

    def error(*overrides):
        assert cli(["judge", "label", "--config", str(cfg), *overrides]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err, err
        return err

    assert error('judge.template="Which is better, {prompt} {completion_a}?"') == (
        "error: judge template (mode pairwise) must contain {completion_b}; found fields ['{prompt}', "
        "'{completion_a}'] in 'Which is better, {prompt} {completion_a}?'")
    assert error("judge.url=http://127.0.0.1:9").startswith(
        "error: judge server http://127.0.0.1:9 does not answer GET /v1/models")
    nochat = tmp_path / "nochat"
    shutil.copytree(tiny_model_dir, nochat)
    (nochat / "chat_template.jinja").unlink(missing_ok=True)
    tok_cfg = json.loads((nochat / "tokenizer_config.json").read_text())
    tok_cfg.pop("chat_template", None)
    (nochat / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    assert error(f"judge.model={nochat}", "judge.chat=true") == (
        f"error: judge.chat is true but the judge model '{nochat}' has no chat template; set judge.chat: false "
        "to give it the question as plain text")
    assert not (tmp_path / "o.jsonl").exists()
