"""Parley core: settings, database, errors, ids, the plug-in registry, artifact storage, logging."""
