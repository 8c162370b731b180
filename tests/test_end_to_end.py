import json

from helpers import tiny_sets


def test_run_writes_one_record_per_run_and_prints_the_table(cli, write_suite, tmp_path):
    suite = write_suite(
        """
        name: e2e
        defaults: {dataset: cola, strategy: fixed, head: linear}
        matrix:
          max_len: [16, 32]
        """
    )
    out = tmp_path / "out"
    code, stdout, stderr = cli("run", suite, "--out", out, "--no-progress", *tiny_sets(max_len=None))
    assert code == 0, stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["config"]["max_len"] for r in records] == [16, 32]
    for r in records:
        assert r["status"] == "ok"
        assert set(r) >= {"run_id", "status", "config", "env", "epochs", "metrics"}
        epoch = r["epochs"][0]
        assert epoch["train_seconds"] > 0 and epoch["eval_seconds"] > 0
        assert epoch["padded_tokens"] == 64 * r["config"]["max_len"]  # fixed: every example padded
        assert 0 < epoch["real_tokens"] <= epoch["padded_tokens"]
        assert set(r["metrics"]) == {"mcc", "accuracy"}
        assert r["env"]["torch"] and r["env"]["transformers"]
        assert r["data"]["train"]["examples"] == 64 and r["data"]["train"]["of"] == 8551
    assert "mcc" in stdout and "epoch s" in stdout
