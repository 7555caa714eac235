"""A store plugin whose module cannot be imported: it needs a package that is not installed."""

from __future__ import annotations

raise ImportError("rdzv_plugin_broken needs the package 'no_such_client', which is not installed")
