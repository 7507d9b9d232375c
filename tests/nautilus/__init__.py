"""Tests that need nautilus_trader (Python >= 3.12): `make test` runs them in .venv-nautilus."""
