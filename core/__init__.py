"""Pieces shared by the API and the worker: settings, names, the store and the Temporal client."""
