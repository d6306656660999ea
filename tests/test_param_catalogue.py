"""The parameters of the built-in methods: one catalogue of shared ones, the same schema as shown.

``method_params.json`` pins every built-in method's declared parameters (name, default, help,
type, choices, bounds) as ``seethrough methods`` and the Methods page show them; a change there
is a change users see, so it is made on purpose, with the snapshot.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from seethrough.registry import Param, list_methods

SNAPSHOT = Path(__file__).with_name("method_params.json")


def _record(p: Param) -> list[object]:
    choices = list(p.choices) if p.choices is not None else None
    record = [p.name, repr(p.default), p.help, p.type.__name__, choices, p.min, p.max]
    return [*record, list(p.aliases)] if p.aliases else record  # former names, when any


def _schema() -> dict[str, list[list[object]]]:
    return {m.name: [_record(p) for p in m.params] for m in list_methods()}


def test_the_built_in_methods_declare_the_parameters_users_see():
    pinned = json.loads(SNAPSHOT.read_text())
    schema = {name: params for name, params in _schema().items() if name in pinned}
    assert schema == pinned


def test_a_param_is_frozen_and_a_variant_is_a_replace():
    from seethrough.methods import params as catalogue

    with pytest.raises(dataclasses.FrozenInstanceError):
        catalogue.SEED.default = 1  # type: ignore[misc]
    variant = dataclasses.replace(catalogue.N_SAMPLES, default=7, help="a few")
    assert (variant.name, variant.default, variant.help) == ("n_samples", 7, "a few")
    assert (variant.type, variant.min) == (catalogue.N_SAMPLES.type, catalogue.N_SAMPLES.min)
    assert catalogue.N_SAMPLES.default != 7


def test_the_extension_api_offers_the_shared_parameters():
    from seethrough import extend
    from seethrough.methods import params as catalogue

    for name in ("SEED", "N_SAMPLES", "BATCH_SIZE"):
        assert getattr(extend, name) is getattr(catalogue, name)
        assert name in extend.__all__


def test_shared_parameters_come_from_the_catalogue():
    from seethrough.methods import params as catalogue

    shared = {
        p.name: p
        for p in vars(catalogue).values()
        if isinstance(p, Param) and p.name in {"seed", "n_samples", "batch_size"}
    }
    assert set(shared) == {"seed", "n_samples", "batch_size"}
    for m in list_methods():
        for p in m.params:
            base = shared.get(p.name)
            if base is not None:  # the same parameter: its type and kind of bounds agree
                assert p.type is base.type, (m.name, p.name)
