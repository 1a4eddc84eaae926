"""The one way the tests find the reference data: fail under CI, skip with directions elsewhere."""

import pytest


def test_missing_reference_data_fails_under_ci_and_skips_elsewhere(reference_file, tmp_path, monkeypatch):
    monkeypatch.setenv("STEREO_REFERENCE_DIR", str(tmp_path))
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="is missing"):
        reference_file("crestereo/absent.pt")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="STEREO_REFERENCE_DIR"):
        reference_file("crestereo/absent.pt")
    (tmp_path / "crestereo").mkdir()
    (tmp_path / "crestereo" / "present.pt").write_bytes(b"")
    assert reference_file("crestereo/present.pt") == tmp_path / "crestereo" / "present.pt"


def test_reference_data_is_found_next_to_the_repository(reference_file, monkeypatch):
    monkeypatch.delenv("STEREO_REFERENCE_DIR", raising=False)
    from tests.conftest import REPOSITORY, reference_dir

    assert reference_dir() == REPOSITORY.parent / "shared" / "reference"
