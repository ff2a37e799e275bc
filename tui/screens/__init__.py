"""The chat screen and the modal dialogs (model picker, settings, help, prompts)."""
