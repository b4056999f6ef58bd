"""The ``offpost`` CLI's command groups, one module each; ``common`` holds what they share."""
