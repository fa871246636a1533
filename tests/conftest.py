"""Test-suite root: fixtures come as plugins, one module per service."""

pytest_plugins = ["tests.fix_mqtt", "tests.fix_db"]
