from tests.s2m.s2m_helpers import _ckpt_master, ckpt  # noqa: F401  (fixtures shared with tests/commands)
