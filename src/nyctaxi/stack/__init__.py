"""Running the whole stack: settings, the one-shot bootstrap, automations, the local launcher.

Nothing here reads configuration at import time: each entry point builds its settings object.
"""
