"""Shared pytest setup: run from the repository root with protocal registered in mmdet's scope."""
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _repo_root_and_mmdet_scope(monkeypatch):
    """Every test sees the repository root as cwd and ``mmdet`` as mmengine's default scope
    (what ``default_scope = 'mmdet'`` in the configs does for the Runner)."""
    import protocal  # noqa: F401  (registers everything)
    from mmengine.registry import DefaultScope, init_default_scope
    monkeypatch.chdir(ROOT)
    if DefaultScope.get_current_instance() is None or \
            DefaultScope.get_current_instance().scope_name != 'mmdet':
        init_default_scope('mmdet')
    yield
