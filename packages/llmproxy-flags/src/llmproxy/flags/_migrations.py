from llmproxy.core import MigrationPackage

MIGRATIONS = MigrationPackage(
    name="flags",
    script_location="llmproxy.flags:migrations",
    version_table="llmproxy_flags_alembic_version",
    depends_on=("core",),
)
