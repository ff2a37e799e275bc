"""The speaker's queue as the audio callback sees it: blocks pulled in order, held, resumed, dropped."""

from __future__ import annotations

import numpy as np

from runtime.audio.duplex import Player


def pull(player: Player, n: int = 4) -> np.ndarray:
    out = np.full(n, np.nan, dtype=np.float32)
    player.pull(out)
    return out


def test_a_held_player_sends_silence_and_resumes_at_the_same_sample():
    player = Player()
    item = player.play(np.arange(1, 11, dtype=np.float32), 16_000, tag="chunk")
    assert pull(player).tolist() == [1, 2, 3, 4]
    player.pause()
    assert pull(player).tolist() == [0, 0, 0, 0]
    assert item.played == 4  # what the listener heard stops growing while held
    player.resume()
    assert pull(player).tolist() == [5, 6, 7, 8]
    assert pull(player).tolist() == [9, 10, 0, 0]


def test_stop_drops_a_held_reply_and_ends_the_hold():
    player = Player()
    player.play(np.ones(10, dtype=np.float32), 16_000, tag="old")
    pull(player)
    player.pause()
    dropped = player.stop()
    assert [(item.tag, item.played) for item in dropped] == [("old", 4)]
    player.play(np.full(4, 2.0, dtype=np.float32), 16_000, tag="next")
    assert pull(player).tolist() == [2, 2, 2, 2]  # the next reply is not held
