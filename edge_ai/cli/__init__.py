"""The `edge-ai` command line: the top layer, the only one that may import runtime/, tui/ and convert/.

`main` holds the chat, ask, serve, models and config commands; `toolchain` the model toolchain's.
"""
