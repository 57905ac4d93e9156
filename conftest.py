pytest_plugins = ["llmproxy.core.testing.plugin"]
