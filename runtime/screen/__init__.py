"""Screen awareness: capture, privacy, OCR and redaction of what is on the screen."""
