"""Benchmark-only: makes `serve` answer top-K requests with a constant ranking (see benchmarks/live_scoring.py).

Put this directory on PYTHONPATH and set RECSYS_BENCH_CONSTANT=1: every ``Ranker.top_k`` call then returns the
ranking it computed on its first call for the same number of users and k, so the stack does everything a request
needs (nginx, gunicorn, the WSGI fast path, JSON decoding and validation, id lookups, filters, the response's
encoding) except scoring and ranking. Without the variable it changes nothing.
"""

import os

if os.environ.get("RECSYS_BENCH_CONSTANT") == "1":
    from recsys.serving import ranking

    _original = ranking.Ranker.top_k
    _answers: dict = {}

    def _constant_top_k(self, users, k, filters=ranking.Filters()):
        key = (len(users), k)
        if key not in _answers:
            _answers[key] = _original(self, users, k, filters)
        return list(_answers[key])

    ranking.Ranker.top_k = _constant_top_k
