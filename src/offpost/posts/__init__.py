"""Posts as a service: the rules a post must follow (:mod:`.rules`), the store that
inserts and changes them under guards (:mod:`.store`), idempotency keys, CSV import
and the counts operators see (:mod:`.stats`).

May import ``offpost.models``, ``offpost.graph`` and the base modules.
"""
