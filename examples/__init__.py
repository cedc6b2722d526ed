"""Example definitions (the YAML files here) and the demo service they run against (``demo_service``)."""
