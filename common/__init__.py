"""The ground floor: what every package of ours may import, and which imports none of them.

:mod:`common.errors` is the one exception root; :mod:`common.ids` the id
rule and the log pseudonym; :mod:`common.backoff` the one retry policy.
"""
