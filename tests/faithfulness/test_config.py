"""Faithfulness configs: the shipped one validates; bad ones fail naming the file and the field."""

from pathlib import Path

import pytest

from verinet.faithfulness.config import FaithfulnessConfig, FaithfulnessConfigError, load_config, problems_for

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("faithfulness*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert isinstance(cfg, FaithfulnessConfig)


def test_zoo_ladder_config():
    cfg = load_config(CONFIGS / "faithfulness-zoo.yaml")
    assert [m.name for m in cfg.models] == ["zoo-xs-s0", "zoo-xs-s1", "zoo-xs-s2", "zoo-s", "zoo-m", "zoo-l"]
    assert all(m.backend == "hf" and m.format == "zoo" for m in cfg.models)
    assert cfg.pipeline is not None and set(cfg.pipeline.members) <= {m.name for m in cfg.models}


def _write(tmp_path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,needle", [
    ("models: [zoo-xs-s0]\nsed: 1\n", "sed: unknown key"),
    ("models: []\n", "models: List should have at least 1 item"),
    ("models: [zoo-nope]\n", "models.0: member zoo-nope: model 'zoo-nope' is not a directory"),
    ("models: [zoo-xs-s0, zoo-xs-s0]\n", "names must be unique"),
    ("models: [{name: pipeline, backend: hf, model: zoo-xs-s0, format: zoo}, zoo-s]\n", "models: 'pipeline' is the ensemble pipeline"),
    ("models: [zoo-xs-s0]\ntests: [early_answering, early_answering]\n", "tests are repeated"),
    ("models: [zoo-xs-s0]\ntests: [early]\n", "tests.0: Input should be 'early_answering'"),
    ("models: [zoo-xs-s0]\nn_boot: 10\n", "n_boot: Input should be greater than or equal to 100"),
    ("models: [zoo-xs-s0]\ntasks: [{family: arith, params: {stepz: 3}}]\n", "tasks.0: invalid arith knobs"),
    ("models: [zoo-xs-s0]\ntasks: [{family: gsm8k}]\n", "family gsm8k needs 'path'"),
    ("models: [zoo-xs-s0]\ntasks: [{family: arith, n: 0}]\n", "tasks.0.n: Input should be greater than or equal to 1"),
    ("models: [zoo-xs-s0, zoo-xs-s1]\npipeline: {members: [zoo-xs-s0, zoo-q]}\n", "pipeline.members: ['zoo-q']"),
    ("models: [zoo-xs-s0]\npipeline: {members: [zoo-xs-s0]}\n", "pipeline.members: List should have at least 2"),
    ("models: [zoo-xs-s0, zoo-xs-s1]\npipeline: {members: [zoo-xs-s0, zoo-xs-s1], topology: self}\n",
     "pipeline.topology: Input should be"),
    ("models: [{name: a, backend: hf}]\n", "models.0.model: Field required"),
    ("- just a list\n", "expected a mapping"),
])
def test_bad_configs_name_the_field(tmp_path, text, needle):
    path = _write(tmp_path, text)
    with pytest.raises(FaithfulnessConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value) and needle in str(e.value), str(e.value)


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(FaithfulnessConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_member_specs_and_resume_rules(tmp_path):
    cfg = load_config(_write(tmp_path, "models:\n  - {name: small, backend: hf, model: zoo-xs-s0, batch_size: 64}\n"
                                       "tasks: [{family: logic, n: 3}]\n"))
    assert cfg.models[0].batch_size == 64 and cfg.models[0].model == "zoo-xs-s0"
    more = cfg.model_copy(update={"tasks": [cfg.tasks[0].model_copy(update={"n": 9})], "n_boot": 200})
    assert cfg.resumable_with(more) == []
    assert cfg.resumable_with(cfg.model_copy(update={"seed": 1})) == ["seed"]
    (spec, problems), = problems_for(more)
    assert [p.id for p in problems[:3]] == [p.id for p in problems_for(cfg)[0][1]]  # a larger n extends


def test_repeated_problems_are_refused(tmp_path):
    data = tmp_path / "gsm.jsonl"
    data.write_text('{"question": "Ann has 1 apple and gets 1 more. How many?", '
                    '"answer": "She has 1+1 = <<1+1=2>>2 apples.\\n#### 2"}\n')
    cfg = load_config(_write(tmp_path, f"models: [zoo-xs-s0]\ntasks: [{{family: gsm8k, path: {data}}}, "
                                       f"{{family: gsm8k, path: {data}}}]\n"))
    with pytest.raises(FaithfulnessConfigError, match="problem ids repeat across tasks"):
        problems_for(cfg)
    cfg = cfg.model_copy(update={"tasks": cfg.tasks[:1]})
    (_, problems), = problems_for(cfg)
    assert len(problems) == 1 and problems[0].answer == "2"
