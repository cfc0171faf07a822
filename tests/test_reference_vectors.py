"""The reference-vector loader: the repository copy by default, the file named by the env var otherwise."""

import json

from reference_vectors import ENV_VAR, DEFAULT_PATH, load_reference, reference_path


def test_default_is_repository_copy(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert reference_path() == DEFAULT_PATH
    ref = load_reference()
    assert {"ibot_loss", "dinov2", "stablerep_multipos_contrastive", "eq8_formula_not_original_code"} <= set(ref)


def test_env_var_overrides(monkeypatch, tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"meta": {"seed": 123}}))
    monkeypatch.setenv(ENV_VAR, str(other))
    assert load_reference() == {"meta": {"seed": 123}}
