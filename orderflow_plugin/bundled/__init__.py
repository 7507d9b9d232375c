"""The ready-made plugins shipped in the wheel.

Each is registered like any third-party plugin, through the ``orderflow_plugin`` entry point
group (see ``pyproject.toml``), and is on or off by its ``hooks.<name>.enabled`` setting:

- ``diagnostics`` (on): every lifecycle event as one readable log line;
- ``whale_alert`` (on): a warning for every trade at or over ``min_notional``;
- ``recorder`` (off): every trade as one JSON line in a file, rotating by size;
- ``prometheus`` (off): the stream's health for Prometheus (needs ``orderflow-plugin[prometheus]``).

Each is a class: the loader makes one instance per plugin manager, so two streams in one
process never share a plugin's state. The repository's ``hooks/`` folder holds a drop-in
example instead.
"""

__all__: list[str] = []
