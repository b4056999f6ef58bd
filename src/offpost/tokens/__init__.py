"""The token store's services: intake of a client's short-lived token
(:mod:`.intake`: debug_token, exchange, Page tokens) and the daily expiry sweep
(:mod:`.expiry`).

May import ``offpost.models``, ``offpost.graph`` and the base modules.
"""
