"""Issue 7's benchmark: the gateway against the upstream directly and a naive relay.

``python -m bench [a b c d e] [--smoke]``; see ``bench/README.md``.
"""
