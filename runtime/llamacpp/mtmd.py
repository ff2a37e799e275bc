"""llama.cpp's multimodal library (mtmd) through llama-cpp-python's MTMDChatHandler, for vision models.

    handler = MtmdHandler(mmproj_path, template)       # the model file's chat template, or None
    llm = load_llama(model_path, params, chat_handler=handler)
    handler.start(llm)                                 # loads the projector: a bad pair fails here

The handler puts each image where the chat template puts mtmd's marker, encodes it with the
projector and decodes its tokens with the prompt (runtime.screen.vision uses it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_cpp.llama_chat_format import MTMDChatHandler

from edge_ai.errors import EdgeAIError
from runtime.llamacpp import log as llama_log

# For a model without a chat template: text parts in order, the image marker where the image goes.
TRANSCRIPT_TEMPLATE = (
    "{% for m in messages %}{% if m.role == 'system' %}{{ m.content }}\n\n"
    "{% else %}{{ 'User' if m.role == 'user' else 'Assistant' }}: "
    "{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}{{ p.text }}{% endfor %}{% endif %}"
    "\n{% endif %}{% endfor %}Assistant:")
TRANSCRIPT_STOPS = ("\nUser:", "\n\n\n")


class MtmdHandler(MTMDChatHandler):
    """mtmd with the model's own chat template, or the transcript one when the file has none."""

    def __init__(self, mmproj: Path, template: str | None) -> None:
        super().__init__(clip_model_path=str(mmproj), verbose=False, use_gpu=False)
        self.template = template

    def _get_chat_template(self, llama_model: Any) -> str:
        return self.template or TRANSCRIPT_TEMPLATE

    def start(self, llama_model: Any) -> None:
        """Load the projector now, so a bad pair fails at load with llama.cpp's reason, not at the first ask."""
        mark = llama_log.mark()
        try:
            self._init_mtmd_context(llama_model)
        except ValueError as exc:
            reason = "; ".join(llama_log.errors_since(mark)) or str(exc)
            raise EdgeAIError(f"llama.cpp could not load the projector {Path(self.clip_model_path).name}: "
                              f"{reason}") from None
