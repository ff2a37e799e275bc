"""edge-ai: an offline, on-device AI assistant. Shared core: config, paths, hardware, models, CLI."""

__version__ = "0.1.0"
