from llmproxy.core import MigrationPackage

MIGRATIONS = MigrationPackage(
    name="ratelimit_config",
    script_location="llmproxy.ratelimit_config:migrations",
    version_table="llmproxy_ratelimit_config_alembic_version",
    depends_on=("core",),
)
