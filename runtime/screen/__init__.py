"""Screen awareness: what is on the user's screen, privately.

capture (mss; private windows blanked before a frame is returned) -> change (perceptual hash: skip
frames that did not change) -> ocr (rapidocr: lines in reading order, text within a token budget)
-> redact (PII and secrets out of the text before a model or a log sees it).
windows lists the X11 windows; privacy decides which are private and builds the mask.
"""
