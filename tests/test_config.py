"The config is declared once: its choices are the registries' keys, every choice trains, and YAML reads as W&B reads it."
import pytest
from finetune_kit.config import TrainConfig, CHOICES, load_yaml
from conftest import copy_sample


def test_choices_are_the_registries():
    from finetune_kit.learner import POOLS
    from finetune_kit.transforms import RESIZE_METHODS, AUG_PRESETS
    from finetune_kit.data import TASKS
    assert sorted(CHOICES['pool']) == sorted(POOLS)
    assert sorted(CHOICES['resize_method']) == sorted(RESIZE_METHODS)
    assert sorted(CHOICES['aug']) == sorted(AUG_PRESETS)
    assert tuple(CHOICES['task']) == tuple(TASKS)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory): return copy_sample(tmp_path_factory.mktemp('cfg'), 6, 2)


@pytest.mark.parametrize('pool', CHOICES['pool'])
def test_every_pool_trains(pool, tiny, tmp_path):
    from finetune_kit.training import train
    res = train(TrainConfig(data=str(tiny), pool=pool, img_size=32, batch_size=6, epochs=1, out=str(tmp_path/'r')), verbose=False)
    assert res.status == 'completed' and res.metrics['n_train'] == 18


def test_a_pool_timm_learner_refuses_is_refused_in_one_line():
    with pytest.raises(ValueError) as e: TrainConfig.from_dict({'pool': 'mean'})
    assert str(e.value) == "pool='mean': choose one of avg, concat, max"


def test_yaml_numbers_as_wandb_reads_them(tmp_path):
    (tmp_path/'c.yaml').write_text('learning_rate: 1e-3\nweight_decay: 5E-2\n')
    cfg = TrainConfig.from_yaml(tmp_path/'c.yaml')
    assert (cfg.learning_rate, cfg.weight_decay) == (1e-3, 5e-2)
    assert load_yaml('a: [1e-5, 2.5, 3]') == {'a': [1e-5, 2.5, 3]}
    with pytest.raises(Exception): load_yaml('a: !!python/object/apply:os.system [ls]')


def test_alias_in_a_file_names_the_key():
    with pytest.raises(ValueError, match=r"'lr' \(did you mean 'learning_rate'\?\)"): TrainConfig.from_dict({'lr': 0.1})
