"""When posts are due: the dispatcher, its wake-up channel, the housekeeping it runs
each tick, recurring schedules (:mod:`.recurrence`) and their materialisation.

May import ``offpost.posts``, ``offpost.tokens``, ``offpost.models`` and below.
"""
