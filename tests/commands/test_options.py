"""Options derived from a Config dataclass (``seqlevel.commands.options``): names, types, help, presets."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from seqlevel.bench import progress
from seqlevel.commands.options import add_config_arguments, config_from_args, field_docs


@dataclass
class Toy:
    """A toy config."""

    seeds: tuple[int, ...] = (0, 1)
    """Seeds of the runs."""
    lr: float = 1e-3
    """Learning rate."""
    use_noise: bool = True
    """Insert noise."""
    name: str | None = None
    """An optional name."""


def _parse(argv, base=None):
    p = argparse.ArgumentParser()
    add_config_arguments(p, Toy, base=base)
    return config_from_args(p.parse_args(argv), Toy, base=base), p


def test_field_docstrings_are_the_help():
    assert field_docs(Toy) == {"seeds": "Seeds of the runs.", "lr": "Learning rate.", "use_noise": "Insert noise.",
                               "name": "An optional name."}
    _, p = _parse([])
    text = p.format_help()
    assert "--seeds N [N ...]" in text and "Seeds of the runs. (default: 0,1)" in text and "--no-use-noise" in text


@pytest.mark.parametrize("argv, want", [
    ([], Toy()),
    (["--seeds", "3,4"], Toy(seeds=(3, 4))),
    (["--seeds", "3", "4,5"], Toy(seeds=(3, 4, 5))),
    (["--lr", "0.5", "--no-use-noise", "--name", "x"], Toy(lr=0.5, use_noise=False, name="x")),
    (["--use_noise", "false"], Toy(use_noise=False)),
])
def test_values_reach_the_config_and_stay_typed(argv, want):
    cfg, _ = _parse(argv)
    assert cfg == want and isinstance(cfg.seeds, tuple)


def test_a_preset_keeps_every_value_not_given():
    base = Toy(seeds=(9,), lr=0.1)
    cfg, _ = _parse(["--lr", "0.2"], base=base)
    assert cfg == Toy(seeds=(9,), lr=0.2)


def test_a_bad_list_is_a_value_error_naming_the_flag():
    with pytest.raises(ValueError, match="--seeds must be a comma list of integers, got '1,x'"):
        _parse(["--seeds", "1,x"])


def test_progress_bar_counts_steps_and_nests():
    with progress.bar("outer", total=3) as b:
        progress.advance(2)
        with progress.bar("inner", total=4) as inner:  # a benchmark run inside another's grows the outer bar
            assert inner is b and b.total == 7
            progress.grow(1)
            progress.advance(1, note="x")
        assert (b.n, b.total) == (3, 8)
    progress.advance(5)  # no bar open: nothing happens


def test_a_no_flag_says_it_switches_the_option_off():
    """issue 23: HfArgumentParser gives --no-x the help of --x, which says the opposite of what --no-x does."""
    import argparse
    import dataclasses

    from seqlevel.commands.options import add_config_arguments

    @dataclasses.dataclass
    class Cfg:
        normalise: bool = True
        """Normalise the weights."""

    p = argparse.ArgumentParser()
    add_config_arguments(p, Cfg)
    helps = {a.option_strings[0]: a.help for a in p._actions if a.option_strings}
    assert helps["--no-normalise"] == "switch off --normalise (on by default: Normalise the weights.)"
