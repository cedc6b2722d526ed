"""Test helpers: a real HTTP target server, workflow starters."""
