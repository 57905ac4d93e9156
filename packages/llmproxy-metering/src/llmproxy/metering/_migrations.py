from llmproxy.core import MigrationPackage

MIGRATIONS = MigrationPackage(
    name="metering",
    script_location="llmproxy.metering:migrations",
    version_table="llmproxy_metering_alembic_version",
    depends_on=("core",),
)
