"""``uptake train`` end to end, the accelerate (FSDP) command line, and MLflow logging."""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow
import pytest
from accelerate.commands.launch import launch_command_parser
from mlflow.tracking import MlflowClient
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipeline.train import TrainProgress, load_recipe, log_training, train, train_and_log
from pipeline.train.launch import accelerate_command, needs_launch
from tests.train.helpers import make_remote_code_model, train_argv, write_recipe
from uptake.cli import main
from uptake.mlflow_contract import RECIPE_SHA_TAG


def test_cli_train_end_to_end(tiny_models, tmp_path, capsys) -> None:
    recipe = write_recipe(tmp_path / "recipe", stages={"sft": {"max_steps": 6}})
    out = tmp_path / "run"
    args = ["--model", str(tiny_models["gpt2"]), "--recipe", str(recipe), "--out", str(out)]
    main(["train", *args, "--profile", "cpu"])  # returns normally on success
    printed = capsys.readouterr().out
    # The preflight report, with the adapters this model needed, and the final summary.
    for text in ("preflight", "chat_template", "fallback_chatml", "pad_token", "eos_token"):
        assert text in printed
    for text in ("training summary", "steps", "tokens/s", "final loss", "wall time"):
        assert text in printed
    assert "sft" in printed and "6/6" in printed  # the progress bar reached the last step
    AutoModelForCausalLM.from_pretrained(out / "model")
    AutoTokenizer.from_pretrained(out / "model")


def test_cli_refused_model_exits_2_with_the_reason(model_copy, tmp_path, capsys) -> None:
    model = make_remote_code_model(model_copy("llama"))
    recipe = write_recipe(tmp_path / "recipe")
    with pytest.raises(SystemExit) as info:
        main(train_argv(model, recipe, tmp_path / "o"))
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert "REFUSED" in captured.out  # the report is printed before the error
    assert (
        captured.err.startswith("error: preflight refused")
        and "trust_remote_code_allowlist" in captured.err
    )


def test_num_processes_builds_an_accelerate_fsdp_command(tmp_path) -> None:
    cmd = accelerate_command(
        num_processes=4,
        model=Path("/m"),
        recipe=Path("/r.yaml"),
        out=Path("/o"),
        resume=True,
        profile="gpu",
        config=Path("/c.yaml"),
    )
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    args = launch_command_parser().parse_args(cmd[3:])  # accelerate's own parser accepts it
    assert args.num_processes == 4 and args.num_machines == 1
    assert args.use_fsdp and str(args.fsdp_version) == "2"
    assert args.fsdp_auto_wrap_policy == "TRANSFORMER_BASED_WRAP"
    assert args.fsdp_state_dict_type == "FULL_STATE_DICT"
    assert args.mixed_precision == "bf16"
    assert args.module and args.training_script == "uptake.cli"
    expected = "train --model /m --recipe /r.yaml --out /o --num-processes 4 --resume --profile gpu"
    assert args.training_script_args == [*expected.split(), "--config", "/c.yaml"]


def test_cli_relaunches_itself_under_accelerate(tmp_path, monkeypatch, capsys) -> None:
    recipe = write_recipe(tmp_path / "recipe")
    config = tmp_path / "uptake.yaml"
    config.write_text("trust_remote_code_allowlist: [acme/*]\n")
    calls: list[list[str]] = []
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr("subprocess.call", lambda cmd: calls.append(cmd) or 0)
    out = tmp_path / "o"
    main(
        [
            "train",
            "--model",
            str(tmp_path),
            "--recipe",
            str(recipe),
            "--out",
            str(out),
            "--num-processes",
            "2",
            "--profile",
            "gpu",
            "--config",
            str(config),
        ]
    )
    (cmd,) = calls
    assert cmd == accelerate_command(
        num_processes=2,
        model=tmp_path,
        recipe=recipe,
        out=tmp_path / "o",
        profile="gpu",
        config=config,  # every rank reads the same settings
    )
    assert "launching:" in capsys.readouterr().out
    # Inside a launched rank the same command trains in-process instead of launching again.
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert not needs_launch(2) and not needs_launch(1)


def test_recipe_can_ask_for_several_processes(tmp_path, monkeypatch) -> None:
    recipe = write_recipe(tmp_path / "recipe", profiles={"gpu": {"hardware": {"num_processes": 8}}})
    calls: list[list[str]] = []
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr("subprocess.call", lambda cmd: calls.append(cmd) or 3)
    with pytest.raises(SystemExit) as info:
        main(
            [
                "train",
                "--model",
                str(tmp_path),
                "--recipe",
                str(recipe),
                "--out",
                str(tmp_path / "o"),
                "--profile",
                "gpu",
            ]
        )
    assert info.value.code == 3  # the launcher's exit status is the command's
    assert calls[0][calls[0].index("--num_processes") + 1] == "8"


def test_mlflow_logging_of_a_training_run(tiny_models, tmp_path, monkeypatch) -> None:
    recipe = load_recipe(write_recipe(tmp_path / "recipe", stages={"sft": {"max_steps": 4}}))
    result = train(tiny_models["qwen2"], recipe, tmp_path / "run", profile="cpu")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        run_id = log_training(result, recipe)
        run = MlflowClient().get_run(run_id)
        params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
        assert params["recipe.sha256"] == recipe.sha256
        assert params["recipe.stages.sft.max_steps"] == "4"
        assert params["preflight.adapters"] == "chat_template,eos_token"
        assert params["preflight.adapter.chat_template"] == "added_generation_markers"
        assert params["hardware.device"] == "cpu"
        assert tags[RECIPE_SHA_TAG] == recipe.sha256
        assert tags["uptake.preflight.adapters"] == "chat_template,eos_token"
        assert metrics["train.steps"] == 4 and metrics["train.tokens"] == result.tokens
        history = MlflowClient().get_metric_history(run_id, "sft.loss")
        assert [m.step for m in history] == [1, 2, 3, 4]
        files = {f.path for f in MlflowClient().list_artifacts(run_id, "training")}
        assert {"training/preflight.json", "training/result.json", "training/recipe.yaml"} <= files
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="model", dst_path=str(tmp_path / "dl")
        )
        AutoModelForCausalLM.from_pretrained(local)  # the artifact is the model directory itself
        AutoTokenizer.from_pretrained(local)
    finally:
        mlflow.set_tracking_uri(None)


def test_cli_logs_a_refusal_to_mlflow_as_a_failed_run(
    model_copy, tmp_path, capsys, mlflow_server, monkeypatch
) -> None:
    monkeypatch.setenv("UPTAKE_MLFLOW_TRACKING_URI", mlflow_server.tracking_uri)
    model = make_remote_code_model(model_copy("llama"))
    recipe = write_recipe(tmp_path / "recipe")
    try:
        with pytest.raises(SystemExit) as info:
            main(train_argv(model, recipe, tmp_path / "o", "--mlflow"))
    finally:
        mlflow.set_tracking_uri(None)
    assert info.value.code == 2
    printed = capsys.readouterr().out
    run_id = printed.split("logged the refusal to MLflow run ")[1].split()[0]
    client = MlflowClient(mlflow_server.tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    tags, params = run.data.tags, run.data.params
    assert tags["uptake.preflight.ok"] == "false"
    assert tags["uptake.preflight.refusals"].startswith("trust_remote_code: ")
    assert params["preflight.trust_remote_code"] == "False"
    assert params["recipe.sha256"] == load_recipe(recipe).sha256
    files = {f.path for f in client.list_artifacts(run_id, "training")}
    assert files == {"training/preflight.json", "training/preflight.txt"}
    assert not (tmp_path / "o").exists()  # refused before anything was written


@pytest.mark.one_backend  # the subject is the config file, not the store
def test_cli_takes_its_settings_from_config(
    model_copy, tmp_path, capsys, mlflow_server, monkeypatch
) -> None:
    """``--config`` is where the allow-list and the tracking URI come from: a remote-code model
    the file allow-lists trains, and the run is logged to the server the file names."""
    for name in (
        "UPTAKE_CONFIG",
        "UPTAKE_MLFLOW_TRACKING_URI",
        "UPTAKE_TRUST_REMOTE_CODE_ALLOWLIST",
    ):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "uptake.yaml"
    config.write_text(
        f"mlflow_tracking_uri: {mlflow_server.tracking_uri}\n"
        "trust_remote_code_allowlist: [acme/*]\n"
    )
    model = make_remote_code_model(model_copy("llama"))
    recipe = write_recipe(tmp_path / "recipe", stages={"sft": {"max_steps": 2}})
    out = tmp_path / "run"
    extra = ("--repo-id", "acme/tinyfoo", "--mlflow", "--config", str(config))
    main(train_argv(model, recipe, out, *extra))
    printed = capsys.readouterr().out
    assert (out / "model" / "modeling_tinyfoo.py").is_file()
    run_id = printed.split("logged to MLflow run ")[1].split()[0]
    run = MlflowClient(mlflow_server.tracking_uri).get_run(run_id)
    assert run.data.params["preflight.trust_remote_code"] == "True"
    assert run.data.metrics["train.steps"] == 2

    with pytest.raises(SystemExit) as info:  # a config that is not there: one line, exit 2
        main(train_argv(model, recipe, tmp_path / "o2", "--config", str(tmp_path / "none.yaml")))
    assert info.value.code == 2
    assert "none.yaml" in capsys.readouterr().err


def test_train_and_log_logs_into_the_callers_run(
    tiny_models, model_copy, tmp_path, mlflow_server
) -> None:
    """The worker's entry: one MLflow run for the whole job, passed in and left running;
    progress reaches the caller's hook; a refusal is an outcome with its reason, not a crash."""
    client = MlflowClient(mlflow_server.tracking_uri)
    experiment = client.create_experiment(f"job-{tmp_path.name}")
    job_run = client.create_run(experiment).info.run_id
    recipe = write_recipe(tmp_path / "recipe", stages={"sft": {"max_steps": 3}})
    events: list[TrainProgress] = []
    outcome = train_and_log(
        tiny_models["qwen2"],
        recipe,
        tmp_path / "run",
        tracking_uri=mlflow_server.tracking_uri,  # not MLflow's global URI: nothing set there
        run_id=job_run,
        profile="cpu",
        on_progress=events.append,
    )
    assert outcome.status == "trained" and outcome.run_id == job_run
    assert outcome.result is not None and outcome.result.steps == 3
    assert outcome.preflight.adapter_names == ["chat_template", "eos_token"]
    assert [e.step for e in events] == [0, 1, 2, 3]
    run = client.get_run(job_run)
    assert run.info.status == "RUNNING"  # the job's owner ends its run
    assert run.data.metrics["train.steps"] == 3
    assert run.data.params["recipe.sha256"] == load_recipe(recipe).sha256
    assert {f.path for f in client.list_artifacts(job_run)} >= {"model", "training"}
    assert len(client.search_runs([experiment])) == 1  # no second run was made

    refused_run = client.create_run(experiment).info.run_id
    refused = train_and_log(
        make_remote_code_model(model_copy("llama")),
        recipe,
        tmp_path / "refused",
        tracking_uri=mlflow_server.tracking_uri,
        run_id=refused_run,
        profile="cpu",
    )
    assert refused.status == "refused" and refused.run_id == refused_run
    assert refused.result is None and refused.reason.startswith("preflight refused")
    assert "trust_remote_code" in refused.reason
    assert client.get_run(refused_run).info.status == "FAILED"
    assert not (tmp_path / "refused").exists()
