"""Adapters that put the order flow on a trading framework's own event bus.

Each adapter is a module of its own and imports its framework, so importing this package needs
none: ``orderflow_plugin.adapters.vnpy`` needs vn.py (``pip install orderflow-plugin[vnpy]``),
``orderflow_plugin.adapters.nautilus`` nautilus_trader and Python >= 3.12 (``[nautilus]``).
See docs/frameworks.md.
"""

from __future__ import annotations

__all__: list[str] = []
