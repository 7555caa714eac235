"""The store contract on ``file://``, plus its layout, options, errors and observer-clock leases."""

from __future__ import annotations

from pathlib import Path

import pytest

from rdzv.testing.contract import StoreContract


class TestFileStoreContract(StoreContract):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"file://{tmp_path / 'store'}"
