"""core.spectral: see docs/architecture.md."""
