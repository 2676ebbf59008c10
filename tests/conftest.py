pytest_plugins = ["platform_fixtures"]
