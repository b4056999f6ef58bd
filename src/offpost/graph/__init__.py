"""The Graph API boundary: the client offpost calls Graph with, and the sandbox that imitates Graph.

Imports nothing of offpost's other layers.
"""
