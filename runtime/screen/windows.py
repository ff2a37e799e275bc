"""The windows on an X11 screen, bottom to top, read from the X server itself (python-xlib).

The privacy mask needs every visible window, focused or not, with its title, WM_CLASS, where it is
on the screen and what lies above it. The root window's children come back from QueryTree in
stacking order (bottom first), whether a window manager is running or not; under a window manager
each child is a frame whose client window (the one carrying WM_STATE, its title and class) is a
descendant. The frame's rectangle, decorations included, is what gets masked.

    with open_display() as display:
        for w in list_windows(display):        # bottom to top
            w.title, w.wm_class, w.rect
        active_window(display)                  # _NET_ACTIVE_WINDOW, else the input focus
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from edge_ai.errors import EdgeAIError


@dataclass(frozen=True)
class Rect:
    """A screen rectangle in root-window pixels."""

    x: int
    y: int
    width: int
    height: int

    def clip(self, other: Rect) -> Rect | None:
        """The part of this rectangle inside `other`, or None when they do not overlap."""
        x0, y0 = max(self.x, other.x), max(self.y, other.y)
        x1 = min(self.x + self.width, other.x + other.width)
        y1 = min(self.y + self.height, other.y + other.height)
        if x1 <= x0 or y1 <= y0:
            return None
        return Rect(x0, y0, x1 - x0, y1 - y0)


@dataclass(frozen=True)
class Window:
    """One top-level window as the user sees it."""

    id: int  # the X id of the top-level (frame) window
    client_id: int  # the application's window (== id with no window manager)
    title: str  # _NET_WM_NAME (UTF-8) or WM_NAME; "" when it has none
    wm_class: tuple[str, ...]  # WM_CLASS: (instance, class), e.g. ("keepassxc", "KeePassXC")
    rect: Rect  # on the root window, decorations included
    stack: int  # 0 = the bottom-most; higher indices are drawn over lower ones


def check_x11_session(env: dict[str, str] | None = None) -> str:
    """The X display to use, or a one-line error saying why screen capture cannot run here.

    A Wayland session is refused even when XWayland provides DISPLAY: X11 sees only the XWayland
    windows, so the privacy mask could not see a native Wayland password manager over which it
    would capture.
    """
    env = dict(os.environ) if env is None else env
    wayland = env.get("WAYLAND_DISPLAY") or env.get("XDG_SESSION_TYPE", "").lower() == "wayland"
    if wayland:
        raise EdgeAIError("screen capture needs an X11 session; this is a Wayland session, where windows cannot be "
                          "listed to mask private ones; log in to an X11 (Xorg) session, or OCR a screenshot file "
                          "with `edge-ai screen ocr --image FILE`")
    display = env.get("DISPLAY", "")
    if not display:
        raise EdgeAIError("no display: DISPLAY is not set (no graphical session here); run inside an X11 desktop "
                          "session, or OCR a screenshot file with `edge-ai screen ocr --image FILE`")
    return display


@contextlib.contextmanager
def open_display(name: str | None = None) -> Iterator[Any]:
    """An Xlib connection to the session's display, closed on exit."""
    display = connect(name)
    try:
        yield display
    finally:
        display.close()


def connect(name: str | None = None) -> Any:
    """An open Xlib Display (`Xlib.display.Display`); the caller closes it."""
    name = name or check_x11_session()
    try:
        from Xlib import display as xdisplay
        from Xlib import error as xerror
    except ImportError as exc:
        raise EdgeAIError("screen capture needs python-xlib; install the screen extra: "
                          "pip install 'edge-ai[screen]'") from exc
    try:
        return xdisplay.Display(name)
    except (xerror.DisplayError, xerror.ConnectionClosedError, OSError) as exc:
        raise EdgeAIError(f"cannot open X display {name!r} ({exc}); check DISPLAY and that the X server runs") from None


def list_windows(display: Any) -> list[Window]:
    """The viewable top-level windows, bottom to top. Windows that vanish while being read are skipped."""
    from Xlib import X
    from Xlib import error as xerror

    root = display.screen().root
    windows = []
    for child in root.query_tree().children:  # stacking order, bottom first
        try:
            attrs = child.get_attributes()
            if attrs.map_state != X.IsViewable:
                continue
            geom = child.get_geometry()
            pos = child.translate_coords(root, 0, 0)  # the window's origin in root coordinates
            border = geom.border_width
            rect = Rect(-pos.x - border, -pos.y - border, geom.width + 2 * border, geom.height + 2 * border)
            if rect.width <= 0 or rect.height <= 0:
                continue
            client = _client_window(display, child) or child
            windows.append(Window(child.id, client.id, _title(display, client, child), _wm_class(client, child),
                                  rect, len(windows)))
        except (xerror.BadWindow, xerror.BadDrawable, xerror.BadMatch):
            continue  # closed between QueryTree and the reads
    return windows


class WindowTracker:
    """The window list, read again only when the X server reports a change that could affect it.

    Reading every window's title, class and geometry costs ~7 round trips per window (~4 ms for two
    windows here), too much for a capture loop polling an idle screen. The tracker asks for the
    events that can change the list: SubstructureNotify on the root (windows mapped, unmapped,
    moved, resized, restacked, destroyed) and PropertyChange on each listed window (title and
    class). `windows()` first makes one round trip (XSync), so every event the server generated
    before that moment is in the queue; only when one is there is the list read again.
    """

    def __init__(self, display: Any) -> None:
        from Xlib import X

        self.display = display
        self._root = display.screen().root
        self._root.change_attributes(event_mask=X.SubstructureNotifyMask)
        self._windows: list[Window] | None = None
        self.generation = 0  # incremented each time the list is read again

    def windows(self) -> list[Window]:
        """The current list (the same object as last time when nothing changed)."""
        from Xlib import X
        from Xlib import error as xerror

        self.display.sync()
        changed = self._windows is None
        while self.display.pending_events():
            self.display.next_event()
            changed = True
        if changed:
            self._windows = list_windows(self.display)
            self.generation += 1
            for window in self._windows:
                for wid in {window.id, window.client_id}:
                    try:
                        self.display.create_resource_object("window", wid).change_attributes(
                            event_mask=X.PropertyChangeMask | X.StructureNotifyMask)
                    except xerror.XError:
                        continue  # gone already: its DestroyNotify comes through the root
        return self._windows  # type: ignore[return-value]


def active_window(display: Any) -> Window:
    """The window the user is working in: _NET_ACTIVE_WINDOW (EWMH), else the window holding the input focus
    (with focus-follows-pointer, PointerRoot: the top-level window under the pointer)."""
    from Xlib import X

    root = display.screen().root
    target = None
    prop = root.get_full_property(display.intern_atom("_NET_ACTIVE_WINDOW"), X.AnyPropertyType)
    if prop is not None and len(prop.value) and prop.value[0]:
        target = int(prop.value[0])
    else:
        focus = display.get_input_focus().focus
        if focus == X.PointerRoot:
            child = root.query_pointer().child
            target = None if isinstance(child, int) or child.id == X.NONE else child.id
        elif not isinstance(focus, int) and focus.id != root.id:
            target = focus.id
    if target is not None:
        for window in list_windows(display):
            if target in (window.id, window.client_id) or _is_descendant(display, target, window.id):
                return window
    raise EdgeAIError("no visible active window: nothing has the input focus, or the focused window is minimized; "
                      "click a window first, or capture the whole screen (drop --window)")


def _is_descendant(display: Any, target: int, ancestor: int) -> bool:
    """Whether window `target` lies inside `ancestor` (focus often sits on a client's child window)."""
    from Xlib import error as xerror

    root_id = display.screen().root.id
    window = display.create_resource_object("window", target)
    for _ in range(32):  # window trees are shallow; bounded against a malformed tree
        try:
            parent = window.query_tree().parent
        except xerror.BadWindow:
            return False
        if isinstance(parent, int) or parent.id in (0, root_id):
            return False
        if parent.id == ancestor:
            return True
        window = parent
    return False


def _client_window(display: Any, frame: Any, depth: int = 0) -> Any | None:
    """The application window inside a window manager's frame: the first descendant with WM_STATE."""
    from Xlib import X
    from Xlib import error as xerror

    wm_state = display.intern_atom("WM_STATE")
    try:
        if frame.get_full_property(wm_state, X.AnyPropertyType) is not None:
            return frame
        if depth >= 4:
            return None
        for child in frame.query_tree().children:
            found = _client_window(display, child, depth + 1)
            if found is not None:
                return found
    except (xerror.BadWindow, xerror.BadDrawable):
        return None
    return None


def _title(display: Any, client: Any, frame: Any) -> str:
    """_NET_WM_NAME (UTF-8), else WM_NAME, of the client (or of the frame, which some managers title)."""
    from Xlib import X

    net_name, utf8 = display.intern_atom("_NET_WM_NAME"), display.intern_atom("UTF8_STRING")
    for window in (client, frame):
        prop = window.get_full_property(net_name, utf8)
        if prop is not None and prop.value:
            return _text(prop.value)
        prop = window.get_full_property(display.intern_atom("WM_NAME"), X.AnyPropertyType)
        if prop is not None and prop.value:
            return _text(prop.value)
    return ""


def _wm_class(client: Any, frame: Any) -> tuple[str, ...]:
    for window in (client, frame):
        value = window.get_wm_class()
        if value:
            return tuple(value)
    return ()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
