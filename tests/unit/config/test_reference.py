"""docs/configuration.md is generated from the schema and must stay current."""

from pathlib import Path


def test_configuration_reference_is_current():
    from safehold.config.reference import markdown

    reference = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
    assert reference.read_text() == markdown(), "regenerate: python -m safehold.config.reference > docs/configuration.md"
