"""Replay buffer: FIFO order, episode starts, shape errors, exact state round trip."""
import numpy as np
import pytest

from modelrl.data.buffer import ReplayBuffer


def fill(buf, n, episode_len=3):
    for i in range(n):
        end = (i + 1) % episode_len == 0
        buf.add(np.full(2, i), np.full(1, -i), float(i), np.full(2, i + 1), False, end)


def test_fifo_wraps_and_all_is_oldest_first():
    buf = ReplayBuffer(2, 1, capacity=4, seed=0)
    fill(buf, 6)
    assert len(buf) == 4 and buf.total == 6
    assert buf.all()["reward"].tolist() == [2.0, 3.0, 4.0, 5.0]
    order = (np.arange(4) + buf.pos) % 4
    assert buf.episode_start[order].tolist() == [False, True, False, False]  # transition 3 starts episode 2


def test_shape_errors_and_empty_sample():
    buf = ReplayBuffer(2, 1, capacity=4)
    with pytest.raises(ValueError, match="empty"):
        buf.sample(2)
    with pytest.raises(ValueError, match="observation has 3 entries"):
        buf.add(np.zeros(3), np.zeros(1), 0.0, np.zeros(3), False, False)
    with pytest.raises(ValueError, match="action has 2 entries"):
        buf.add(np.zeros(2), np.zeros(2), 0.0, np.zeros(2), False, False)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(2, 1, capacity=0)


def test_state_dict_round_trip_samples_the_same_batches():
    a = ReplayBuffer(2, 1, capacity=8, seed=1)
    fill(a, 11)
    state = a.state_dict()
    expected = [a.sample(5)["reward"] for _ in range(3)]
    b = ReplayBuffer(2, 1, capacity=8, seed=99)
    b.load_state_dict(state)
    assert all(np.array_equal(b.sample(5)["reward"], e) for e in expected)
    assert (b.pos, b.size, b.total) == (a.pos, a.size, a.total)
    fill(a, 1)
    fill(b, 1)
    assert np.array_equal(a.all()["obs"], b.all()["obs"])
