"""The token store's services: intake of a client's short-lived token
(:mod:`.intake`: debug_token, permissions, exchange, Page tokens and tasks), the
daily token check (:mod:`.expiry`) and tokens found dead (:mod:`.death`).

May import ``offpost.models``, ``offpost.graph`` and the base modules.
"""
