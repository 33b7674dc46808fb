"""`simpo train objective=X model=M` composes the published run of X on M (simpo_cli/config/recipes.py).

The expected values below are copied from the official SimPO training configs,
github.com/princeton-nlp/SimPO training_configs/*.yaml, as PAPER.md transcribes them ("SimPO values
per setting, from the official training configs"; "All SimPO configs: per-device batch 2, gradient
accumulation 16, 1 epoch, cosine, warm-up ratio 0.1, adamw_torch, gradient checkpointing, bf16").
They are kept here, not read from the presets, so a preset edit that drifts fails.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from simpo_cli.config.schema import CONF_DIR
from simpo_cli.objectives import OBJECTIVES
from tests.helpers import compose, run_simpo

# setting: (training_configs file, model_name_or_path, dataset_mixer, splits, beta, gamma_beta_ratio,
#           learning_rate, max_length, max_prompt_length, attn_implementation)
OFFICIAL = {
    "mistral-base": ("mistral-7b-base-simpo.yaml", "alignment-handbook/zephyr-7b-sft-full",
                     "HuggingFaceH4/ultrafeedback_binarized", ("train_prefs", "test_prefs"),
                     2.0, 0.8, 3e-7, 1024, 512, "flash_attention_2"),
    "mistral-instruct": ("mistral-7b-instruct-simpo.yaml", "mistralai/Mistral-7B-Instruct-v0.2",
                         "princeton-nlp/mistral-instruct-ultrafeedback", ("train", "test"),
                         2.5, 0.1, 5e-7, 2048, 1800, "flash_attention_2"),
    "llama3-base": ("llama-3-8b-base-simpo.yaml", "princeton-nlp/Llama-3-Base-8B-SFT",
                    "HuggingFaceH4/ultrafeedback_binarized", ("train_prefs", "test_prefs"),
                    2.0, 0.5, 6e-7, 2048, 1800, "flash_attention_2"),
    "llama3-instruct": ("llama-3-8b-instruct-simpo.yaml", "meta-llama/Meta-Llama-3-8B-Instruct",
                        "princeton-nlp/llama3-ultrafeedback", ("train", "test"),
                        2.5, 0.55, 1e-6, 2048, 1800, "flash_attention_2"),
    "llama3-instruct-v0.2": ("llama-3-8b-instruct-simpo-v2.yaml", "meta-llama/Meta-Llama-3-8B-Instruct",
                             "princeton-nlp/llama3-ultrafeedback-armorm", ("train", "test"),
                             10.0, 0.3, 1e-6, 2048, 1800, "flash_attention_2"),
    "gemma2-9b-it": ("gemma-2-9b-it-simpo.yaml", "google/gemma-2-9b-it",
                     "princeton-nlp/gemma2-ultrafeedback-armorm", ("train", "test"),
                     10.0, 0.5, 8e-7, 2048, 1800, "eager"),
}
REFERENCE_BASELINES = sorted(n for n, s in OBJECTIVES.items() if s.needs_reference)
TABLE_7_BETA = {0.01, 0.05, 0.1}
TABLE_7_IPO_TAU = {0.01, 0.1, 0.5, 1.0}


def cfg_job(*overrides: str) -> dict:
    """What `simpo train --cfg job OVERRIDES` prints, parsed (the real CLI, in process)."""
    from simpo_cli.cli import app

    result = CliRunner().invoke(app, ["train", "--cfg", "job", *overrides])
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.stdout)


@pytest.mark.parametrize("setting", sorted(OFFICIAL))
def test_simpo_on_each_setting_is_the_official_config(setting):
    (_, model_id, dataset, (split, eval_split), beta, ratio, lr, max_length, max_prompt_length,
     attn) = OFFICIAL[setting]
    cfg = cfg_job("objective=simpo", f"model={setting}")
    hp, tr, model, data, ob = cfg["hparams"], cfg["trainer"], cfg["model"], cfg["data"], cfg["objective"]
    assert model["name_or_path"] == model_id
    assert (data["path"], data["split"], data["eval_split"]) == (dataset, split, eval_split)
    assert ob["beta"] == beta and ob["gamma"] == pytest.approx(beta * ratio, abs=1e-12)
    assert ob["gamma_beta_ratio"] is None  # gamma is absolute, so objective.gamma=... on the command line wins
    assert (hp["learning_rate"], hp["max_length"], hp["max_prompt_length"]) == (lr, max_length, max_prompt_length)
    assert (hp["num_train_epochs"], hp["global_batch_size"], hp["per_device_train_batch_size"]) == (1, 128, 2)
    assert (hp["lr_scheduler_type"], hp["warmup_ratio"], hp["optim"]) == ("cosine", 0.1, "adamw_torch")
    # torch_dtype: null (fp32 weights) + bf16: true (mixed precision), gradient checkpointing
    assert (model["dtype"], tr["bf16"], tr["fp16"], tr["gradient_checkpointing"]) == ("float32", True, False, True)
    assert model["attn_implementation"] == attn
    assert cfg["objective"]["name"] == "simpo" and cfg["objective"]["loss_type"] == "sigmoid"
    assert cfg["recipe"] == {"name": setting, "published": True,
                             "source": f"princeton-nlp/SimPO training_configs/{OFFICIAL[setting][0]}"}


@pytest.mark.parametrize("setting", sorted(OFFICIAL))
@pytest.mark.parametrize("objective", REFERENCE_BASELINES)
def test_reference_baselines_get_their_own_beta_and_the_settings_lr(setting, objective):
    cfg = compose([f"objective={objective}", f"model={setting}"])
    lr = OFFICIAL[setting][6]
    assert cfg.hparams.learning_rate == lr
    assert cfg.objective.get("gamma") is None  # never SimPO's margin
    if OBJECTIVES[objective].has("beta"):
        # Table 7's {0.01, 0.05, 0.1} for PAPER.md's baselines (SimPO's is 2..10); an objective
        # after the paper on a per-token scale (LN-DPO) keeps its own default, not SimPO's value
        own = yaml.safe_load((CONF_DIR / "objective" / f"{objective}.yaml").read_text())["beta"]
        assert cfg.objective.beta in TABLE_7_BETA or cfg.objective.beta == own != cfg.published.simpo.beta
    else:  # IPO has no beta: its regulariser is tau
        assert cfg.objective.tau in TABLE_7_IPO_TAU
    if objective == "dpo":
        assert cfg.objective.beta == 0.01  # the SimPO authors' DPO baselines


def test_cfg_job_dpo_on_llama3_instruct_has_a_dpo_beta():
    cfg = cfg_job("objective=dpo", "model=llama3-instruct")
    assert cfg["objective"]["beta"] <= 0.1 and cfg["hparams"]["learning_rate"] == 1e-6
    assert cfg["data"]["path"] == "princeton-nlp/llama3-ultrafeedback"


def test_explicit_overrides_win_over_the_recipe():
    cfg = compose(["model=llama3-instruct", "objective.beta=3.0", "hparams.learning_rate=5e-7"])
    assert (cfg.objective.beta, cfg.objective.gamma, cfg.hparams.learning_rate) == (3.0, 1.375, 5e-7)
    # another preset: its lr, lengths and its published SimPO values; the rest of the recipe stays
    cfg = compose(["model=llama3-instruct", "hparams=mistral-base"])
    assert (cfg.objective.beta, cfg.objective.gamma, cfg.hparams.learning_rate, cfg.hparams.max_length) == (
        2.0, 1.6, 3e-7, 1024)
    assert cfg.data.path == "princeton-nlp/llama3-ultrafeedback" and cfg.trainer.bf16
    # another data set: only the data changes
    cfg = compose(["model=gemma2-9b-it", "data=demo-prefs"])
    assert cfg.data.name == "demo-prefs" and cfg.data.eval_split is None
    assert (cfg.objective.beta, cfg.hparams.learning_rate, cfg.model.attn_implementation) == (10.0, 8e-7, "eager")


def test_a_local_copy_keeps_the_recipe(tmp_path):
    cfg = compose(["model=llama3-base", f"model.name_or_path={tmp_path}"])
    assert cfg.model.name_or_path == str(tmp_path)
    assert (cfg.data.path, cfg.objective.beta, cfg.hparams.learning_rate) == (
        "HuggingFaceH4/ultrafeedback_binarized", 2.0, 6e-7)
    assert cfg.trainer.bf16 and cfg.trainer.gradient_checkpointing and cfg.model.dtype == "float32"


def test_the_demo_still_composes_the_tiny_cpu_recipe():
    cfg = compose([])
    assert cfg.model.name == "tiny-llama" and cfg.model.name_or_path is None and cfg.model.dtype == "float32"
    assert cfg.data.name == "demo-prefs" and cfg.data.path == "pkg:data/dpo_en_demo.json"
    hp = cfg.hparams
    assert (cfg.objective.beta, cfg.objective.gamma, hp.learning_rate, hp.num_train_epochs, hp.per_device_train_batch_size,
            hp.max_length, hp.max_prompt_length, hp.global_batch_size) == (2.0, 1.0, 1e-3, 3, 8, 512, 256, None)
    assert not cfg.trainer.bf16 and not cfg.trainer.gradient_checkpointing and cfg.recipe.name is None


def test_qwen_presets_have_no_published_recipe_and_say_so():
    from simpo_cli.config.recipes import notes, provenance

    for name, model_id in (("qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct"), ("qwen3-8b", "Qwen/Qwen3-8B")):
        overrides = [f"model={name}"]
        cfg = compose(overrides)
        assert cfg.model.name_or_path == model_id and cfg.recipe.published is False
        assert (cfg.objective.beta, cfg.objective.gamma) == (2.0, 1.0)  # conf/objective/simpo.yaml
        assert cfg.model.dtype == "float32" and cfg.trainer.bf16 and cfg.hparams.global_batch_size == 128
        table = provenance(cfg, overrides)
        assert table["objective.beta"]["source"] == "objective default (simpo)"
        (line,) = notes(cfg, table)
        assert line.startswith(f"no published SimPO recipe exists for model={name}") and "beta=2.0" in line
    assert dict(compose(["model=qwen3-8b"]).model.chat_template_kwargs) == {"enable_thinking": False}


def test_provenance_names_recipe_objective_default_and_command_line():
    from simpo_cli.config.recipes import notes, provenance

    overrides = ["model=llama3-instruct", "objective=rdpo", "hparams.learning_rate=5e-7", "model.name_or_path=/m"]
    cfg = compose(overrides)
    table = provenance(cfg, overrides)
    assert table["hparams.learning_rate"] == {"value": 5e-7, "source": "command line"}
    assert table["model.name_or_path"] == {"value": "/m", "source": "command line"}
    assert table["hparams.max_length"]["source"] == "recipe llama3-instruct"
    assert table["data.path"]["source"] == "recipe llama3-instruct"
    assert table["trainer.bf16"] == {"value": True, "source": "recipe llama3-instruct"}
    assert table["objective.beta"] == {"value": 0.1, "source": "objective default (rdpo)"}
    assert table["objective.alpha"]["source"] == "objective default (rdpo)"
    (line,) = notes(cfg, table)
    assert "no published rdpo values for the llama3-instruct setting" in line and "alpha=0.05" in line
    published = provenance(compose(["model=llama3-instruct"]), ["model=llama3-instruct"])
    assert published["objective.gamma"] == {"value": 1.375, "source": "recipe llama3-instruct (published simpo values)"}
    explicit = provenance(compose(["hparams=mistral-base"]), ["hparams=mistral-base"])
    assert explicit["hparams.learning_rate"]["source"] == "command line (hparams=mistral-base)"
    assert explicit["data.path"]["source"] == "default (data/demo-prefs)"


# -- precision --------------------------------------------------------------------------------

TINY_STEP = ["trainer.max_steps=1", "data.max_samples=4", "hparams.per_device_train_batch_size=4",
             "hparams.max_length=64", "hparams.max_prompt_length=32", "hparams.learning_rate=1e-6",
             "hparams.warmup_ratio=0", "trainer.evaluate=false", "trainer.progress_bar=false",
             "trainer.gradient_checkpointing=true", "paths.output_root=out"]


def _changed_fraction(run_dir: Path, tiny_model, dtype) -> float:
    """Fraction of the decoder layers' and LM head's weights that differ from the starting weights."""
    from safetensors.torch import load_file

    saved = {}
    for shard in (run_dir / "model").glob("*.safetensors"):
        saved.update(load_file(shard))
    changed = total = 0
    for name, start in tiny_model.state_dict().items():
        if "embed_tokens" in name:  # rows of tokens absent from 4 pairs get no gradient at all
            continue
        after = saved[name]
        changed += int((after != start.to(dtype)).sum())
        total += start.numel()
    return changed / total


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_one_bf16_step_at_lr_1e6_moves_fp32_master_weights_and_warns_for_pure_bf16(tmp_path, tiny_model, dtype):
    """float32: the recipe's precision (fp32 weights, bf16 autocast). bfloat16: pure bf16 weights
    forced (model.dtype=bfloat16, no autocast), the issue's old default for real models."""
    import torch

    from tests.helpers import run_dirs

    autocast = "true" if dtype == "float32" else "false"
    proc = run_simpo(["train", *TINY_STEP, f"model.dtype={dtype}", f"trainer.bf16={autocast}"], tmp_path)
    (run,) = run_dirs(tmp_path / "out")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["steps"] == 1
    assert meta["precision"]["weights"] == dtype
    assert meta["precision"]["autocast"] == ("bf16" if dtype == "float32" else "none")
    output = proc.stdout + proc.stderr
    fraction = _changed_fraction(run, tiny_model, getattr(torch, dtype))
    if dtype == "float32":
        assert meta["precision"]["master_weights"] == "float32"
        assert fraction > 0.9, fraction  # every weight with a gradient moved by ~1e-6
        assert "resolution" not in output
    else:
        assert meta["precision"]["lost_update_fraction"] > 0.9
        assert "pure bfloat16 weights (model.dtype=bfloat16) at learning rate 1e-06" in output
        assert "below bfloat16's resolution" in output
        assert fraction < 0.05, fraction  # what the warning is about: the step was lost
    # the run says where its values came from, at start and in meta.json
    assert meta["provenance"]["hparams.learning_rate"] == {"value": 1e-6, "source": "command line"}
    assert meta["provenance"]["objective.beta"] == {"value": 2.0, "source": "objective default (simpo)"}
    assert meta["recipe"]["name"] is None
    assert re.search(r"hparams\.learning_rate\s+1e-06\s+command line", output)


def test_lost_update_fraction_is_exact_for_known_values():
    import torch

    from simpo_cli.training.precision import lost_update_fraction

    layer = torch.nn.Linear(2, 2, bias=False).to(torch.bfloat16)
    with torch.no_grad():  # bf16 spacing at 1.0 is 2^-7; at 2^-12 it is 2^-19
        layer.weight.copy_(torch.tensor([[1.0, 0.5], [2.0 ** -12, 0.0]]))
    assert lost_update_fraction(layer, 1e-6) == 0.5  # 1.0 and 0.5 cannot move by 1e-6; the small ones can
    assert lost_update_fraction(layer, 0.01) == 0.0
    assert lost_update_fraction(layer.float(), 1e-6) is None  # fp32 weights lose nothing


# -- hardware and attention -------------------------------------------------------------------

def test_a_paper_setting_without_a_gpu_stops_before_any_download(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "", "HF_HOME": str(tmp_path / "hf")}
    proc = run_simpo(["train", "model=llama3-instruct"], tmp_path, check=False, env=env)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("simpo: error:"), proc.stderr
    assert "model=llama3-instruct has 8.0B parameters and no GPU is visible" in lines[0]
    assert "trainer.use_cpu=true" in lines[0]
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "hf").exists()
    ok = run_simpo(["validate", "--no-data", "model=llama3-instruct", "trainer.use_cpu=true"], tmp_path, env=env)
    assert "config: ok" in ok.stdout


def test_device_check_counts_a_local_checkpoint(tmp_path, tiny_model, monkeypatch):
    import simpo_cli.training.precision as precision

    monkeypatch.setattr(precision, "accelerator_available", lambda: False)
    tiny_model.save_pretrained(tmp_path / "m")
    # The llama3-instruct recipe on a local copy: what counts is the copy's size (here 0.6M).
    cfg = compose(["model=llama3-instruct", f"model.name_or_path={tmp_path / 'm'}"])
    assert precision.model_size_b(cfg.model) == pytest.approx(
        sum(p.numel() for p in tiny_model.parameters()) / 1e9)
    assert precision.device_problem(cfg) is None
    assert "8.0B parameters" in precision.device_problem(compose(["model=llama3-instruct"]))
    assert precision.device_problem(compose(["model=llama3-instruct", "trainer.use_cpu=true"])) is None


def test_flash_attention_falls_back_to_sdpa_once(monkeypatch, caplog):
    import simpo_cli.models.loading as loading

    monkeypatch.setattr(loading, "flash_attention_missing", lambda: "flash-attn is not installed")
    monkeypatch.setattr(loading, "_fallback_logged", set())
    with caplog.at_level(logging.WARNING, logger="simpo_cli.models.loading"):
        assert loading.attention_implementation("flash_attention_2") == "sdpa"
        assert loading.attention_implementation("flash_attention_2") == "sdpa"
    assert caplog.text.count("flash_attention_2 requested but flash-attn is not installed; using sdpa") == 1
    assert loading.attention_implementation("eager") == "eager"
    monkeypatch.setattr(loading, "flash_attention_missing", lambda: None)
    assert loading.attention_implementation("flash_attention_2") == "flash_attention_2"


# A chat template with Qwen3's thinking switch (the same `enable_thinking` test and output).
QWEN3_LIKE = ("{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' }}"
              "{%- if m.role == 'assistant' and loop.last %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
              "{{- m.content + '<|im_end|>\\n' }}{%- endfor %}"
              "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
              "{%- if enable_thinking is defined and enable_thinking is false %}"
              "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}")


def test_qwen3_thinking_block_belongs_to_the_prompt_unless_asked():
    from omegaconf import OmegaConf

    from simpo_cli.config.schema import ModelConfig
    from simpo_cli.data.tokenize import encode_pair
    from simpo_cli.models.loading import load_tokenizer

    def tokenizer(**kwargs):
        return load_tokenizer(OmegaConf.structured(ModelConfig(
            name="qwen-like", tokenizer="pkg:tiny-tokenizer", chat_template=QWEN3_LIKE, **kwargs)))

    prompt = [{"role": "user", "content": "Hi"}]
    off = tokenizer(chat_template_kwargs={"enable_thinking": False})
    text = off.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    asked = off.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert asked.endswith("<|im_start|>assistant\n")
    pair = {"prompt": prompt, "chosen": "Hello there", "rejected": "No"}
    tokens = encode_pair(pair, off, template=True)
    assert off.decode(tokens.rejected) == "No<|im_end|>\n"  # the think block is not part of the response
    plain = encode_pair(pair, tokenizer(), template=True)  # without the default it would be
    assert "<think>" in tokenizer().decode(plain.rejected)


# -- README ----------------------------------------------------------------------------------

def test_readme_setting_table_is_generated_from_the_configs():
    """Every row the README shows is what the recipe files compose, and the paper's six settings are
    there; a new setting's row is optional (adding a setting is its recipe file and its test row)."""
    from simpo_cli.config.recipes import SETTINGS, settings_table

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    block = re.search(r"<!-- recipes:start -->\n(.*?)\n<!-- recipes:end -->", readme, re.S)
    assert block, "README.md lacks the generated setting table (python scripts/recipe_table.py)"
    shown = re.findall(r"^\| `([^`=]+)` \|", block.group(1), re.M)
    assert set(SETTINGS) <= set(shown)
    assert block.group(1) == settings_table(shown), "README setting table is stale: run python scripts/recipe_table.py"
