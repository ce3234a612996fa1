import shutil

import pytest

from s2m_helpers import tiny_checkpoint


@pytest.fixture(scope="session")
def _ckpt_master(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("s2m_ckpt") / "master.pt")


@pytest.fixture
def ckpt(tmp_path, _ckpt_master):
    """A private copy of a tiny random segmenter checkpoint (64x128 train size)."""
    return shutil.copy(_ckpt_master, tmp_path / "m.pt")
