"""Widgets of the chat screen. They post messages up and get their data set from above."""
