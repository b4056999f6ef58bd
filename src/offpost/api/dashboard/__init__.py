"""The operators' dashboard at ``/admin``: server-rendered pages over the admin views.

:mod:`.routes` holds the pages and buttons, :mod:`.session` the signed session
cookie and its CSRF token, :mod:`.chart` the per-minute chart, :mod:`.credentials`
the credentials page's queries, :mod:`.schedules` the schedules pages' queries and
:mod:`.rule_words` their rules in plain English; the Jinja2 templates ship in
``templates/`` as package data.
"""
