"""The terminal assistant (Textual): `tui.app.run_app(cfg)` starts it.

Layout: `app.py` (the App: config, history store, engine slot, theme, command palette),
`screens/` (the chat screen and the modal dialogs), `widgets/` (message list, prompt input,
sidebar, status bar), `app.tcss` (all styles), `keys.py` (every command and its keys, one table).
"""
