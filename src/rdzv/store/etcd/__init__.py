"""The etcd v3 store backend (``etcd://``, ``etcd+https://``); needs ``pip install 'rdzv[etcd]'``."""

from rdzv.store.etcd.config import EtcdConfig, parse_url
from rdzv.store.etcd.gateway import EtcdServerError
from rdzv.store.etcd.store import EtcdStore

__all__ = ["EtcdConfig", "EtcdServerError", "EtcdStore", "parse_url"]
