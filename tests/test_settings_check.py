"""FinetuneConfig.check(): every setting that needs no data is refused in one line before any
work (before the data step and any download), and the config is never changed by checking it."""

import copy
import dataclasses

import pytest

from mlx_clip.errors import InputError
from mlx_clip.settings import FinetuneConfig, LockConfig, LoraConfig, SampleConfig
from mlx_clip.data.stream import AugmentConfig

BAD = [
    ({"precision": "float16"}, "--precision must be float32 or bfloat16"),
    ({"batch_size": 0}, "--batch-size must be >= 1"),
    ({"epochs": -1}, "--epochs >= 0"),
    ({"augment": AugmentConfig(crop_min_area=0.0)}, "--crop-min-area must be in (0, 1]"),
    ({"threads": 0}, "--threads must be >= 1"),
    ({"wise_ft": [1.5]}, "every mixing weight must be in [0, 1]"),
    ({"wise_ft": [0.5], "wise_ft_pick": "balanced", "retention_images": 0}, "--retention-images above 0"),
    ({"val_fraction": 1.5}, "--val-fraction must be in [0, 1)"),
    ({"lora": LoraConfig(rank=-1)}, "--lora must be a rank >= 1"),
    ({"lora": LoraConfig(rank=4), "locks": LockConfig(lock_image=True, lock_text=True, unlock_last=0)},
     "--lora: both towers are locked"),
]


@pytest.mark.parametrize("changes,message", BAD, ids=[m for _, m in BAD])
def test_each_bad_setting_is_one_line(changes, message):
    config = FinetuneConfig(**changes)
    with pytest.raises(InputError) as err:
        config.check()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_checking_changes_nothing():
    config = FinetuneConfig(sample=SampleConfig(seed=3), wise_ft=[0.0, 0.5, 1.0])
    before = copy.deepcopy(config)
    config.check()
    assert config == before


@pytest.mark.parametrize("part", ["", "sample", "fetch", "optim", "locks", "lora", "augment"])
def test_a_config_cannot_be_changed_in_place(part):
    """Every settings dataclass is frozen: a run resolves its config by `replace`, so no step can
    change the settings another step (or config.json) already read."""
    config = FinetuneConfig()
    node = getattr(config, part) if part else config
    field = dataclasses.fields(node)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(node, field, getattr(node, field))
