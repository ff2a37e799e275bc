"""Everything that runs on the user's machine with no network: LLM engine, server, audio, screen."""
