"""Names that reach MLflow filter strings must match strict patterns."""

import pytest

from registry_service.domain.names import check_alias, check_model_name
from registry_service.errors import ValidationError
from registry_service.services.models import TagPatch


@pytest.mark.parametrize("name", ["iris", "fraud-v2", "a.b_c-1", "X" * 128])
def test_valid_model_names(name):
    assert check_model_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", "has space", "quo'te", "pct%", "a/b", "X" * 129])
def test_invalid_model_names(name):
    with pytest.raises(ValidationError) as info:
        check_model_name(name)
    assert info.value.errors[0]["field"] == "name"


@pytest.mark.parametrize("alias", ["champion", "challenger_2", "blue-green"])
def test_valid_aliases(alias):
    assert check_alias(alias) == alias


@pytest.mark.parametrize("alias", ["latest", "v3", "Champion", "9lives", "a'b", ""])
def test_invalid_aliases(alias):
    with pytest.raises(ValidationError):
        check_alias(alias)


def test_tag_patch_splits_sets_and_deletes():
    patch = TagPatch.parse({"team": "ds", "old": None})
    assert patch.set == {"team": "ds"} and patch.delete == ["old"]


@pytest.mark.parametrize("key", ["mlflow.user", "registry.registered_by", ".x", "a b"])
def test_reserved_or_malformed_tag_keys_are_refused(key):
    with pytest.raises(ValidationError):
        TagPatch.parse({key: "v"})


def test_tag_patch_inverse_restores_touched_keys_only():
    before = {"team": "ds", "tier": "2", "keep": "x"}
    patch = TagPatch.parse({"team": "ml", "tier": None, "new": "1"})
    restore = patch.inverse(before)
    assert restore.set == {"team": "ds", "tier": "2"} and restore.delete == ["new"]
