"""The conversation list with its full-text search box."""

from __future__ import annotations

from collections.abc import Sequence

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Label, ListItem, ListView


class ConversationItem(ListItem):
    def __init__(self, conversation_id: int, title: str, snippet: str = "") -> None:
        super().__init__(classes="conversation")
        self.conversation_id = conversation_id
        self.title = title
        self.snippet = snippet

    def compose(self) -> ComposeResult:
        yield Label(self.title, classes="title", markup=False)
        if self.snippet and self.snippet != self.title:
            yield Label(self.snippet, classes="snippet", markup=False)


class ConversationList(ListView):
    BINDINGS = [Binding("delete", "delete_highlighted", "Delete", show=False)]

    def action_delete_highlighted(self) -> None:
        item = self.highlighted_child
        if isinstance(item, ConversationItem):
            self.post_message(Sidebar.DeleteRequested(item.conversation_id))


class Sidebar(Vertical):
    """Shows `(id, title, snippet)` rows set by the screen; posts what the user picks or types."""

    class Selected(Message):
        def __init__(self, conversation_id: int) -> None:
            super().__init__()
            self.conversation_id = conversation_id

    class SearchChanged(Message):
        def __init__(self, query: str) -> None:
            super().__init__()
            self.query = query

    class DeleteRequested(Message):
        def __init__(self, conversation_id: int) -> None:
            super().__init__()
            self.conversation_id = conversation_id

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Search (Ctrl+F)", id="search")
        yield Label("Conversations", id="list-title")
        yield ConversationList(id="conversations")

    @property
    def search_box(self) -> Input:
        return self.query_one("#search", Input)

    @property
    def list_view(self) -> ConversationList:
        return self.query_one("#conversations", ConversationList)

    @property
    def query_text(self) -> str:
        return self.search_box.value

    async def show(self, rows: Sequence[tuple[int, str, str]], current: int | None, *, searching: bool) -> None:
        """Replace the list with `rows`, highlighting the `current` conversation."""
        self.query_one("#list-title", Label).update(
            f"Search results ({len(rows)})" if searching else "Conversations")
        view = self.list_view
        await view.clear()
        await view.extend([ConversationItem(cid, title, snippet) for cid, title, snippet in rows])
        ids = [cid for cid, _, _ in rows]
        if current in ids:
            view.index = ids.index(current)

    def items(self) -> list[ConversationItem]:
        return list(self.list_view.query_children(ConversationItem))

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.SearchChanged(event.value))

    @on(Input.Submitted, "#search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.items():
            self.list_view.focus()

    @on(ListView.Selected, "#conversations")
    def _selected(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, ConversationItem):
            self.post_message(self.Selected(event.item.conversation_id))
