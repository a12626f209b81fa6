import json

from posttrain.lab.cli import SUBCOMMANDS, main


def test_export_command_writes_the_world(tmp_path, capsys):
    out = tmp_path / "world"
    assert main(["export", "--out", str(out), "--size", "small", "--seed", "3", "--length-bias", "0.5",
                 "--web-format", "chatml"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["rater"]["length_bias"] == 0.5 and manifest["web_format"] == "chatml"
    assert (out / "sft.jsonl").exists() and (out / "web.jsonl").read_text().startswith('{"text": "<|im_start|>')
    assert "pref_eval" in capsys.readouterr().out


def test_bad_invocations_return_usage_errors(tmp_path, capsys):
    assert main([]) == 2
    assert main(["nope"]) == 2 and "unknown subcommand 'nope'" in capsys.readouterr().err
    assert main(["export"]) == 2 and "--out" in capsys.readouterr().err
    assert main(["export", "--out", str(tmp_path), "--size", "huge"]) == 2
    assert main(["--help"]) == 0 and "export" in capsys.readouterr().out
    assert main(["export", "--help"]) == 0
    assert set(SUBCOMMANDS) >= {"export"}
