"""Request ids (postern.api.middleware.new_request_id): unique, and different in each
forked worker although they come from the process's own generator."""

from __future__ import annotations

import multiprocessing
import re

from postern.api.middleware import new_request_id


def test_shape_and_uniqueness():
    ids = [new_request_id() for _ in range(20_000)]
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def _ids(queue):
    queue.put([new_request_id() for _ in range(50)])


def test_forked_workers_do_not_repeat_each_other():
    new_request_id()  # the parent's generator is in use before the forks, as gunicorn's master
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    children = [fork.Process(target=_ids, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    first, second = queue.get(timeout=30), queue.get(timeout=30)
    for child in children:
        child.join(30)
    assert not set(first) & set(second)
    assert not set(first) & {new_request_id() for _ in range(50)}
