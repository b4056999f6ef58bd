"""The ``offpost`` command (:mod:`.main`), one module per command group;
:mod:`.common` holds what they share, :mod:`.embedded` the all-in-one ``offpost up``.

An interface: it may import everything else.
"""
