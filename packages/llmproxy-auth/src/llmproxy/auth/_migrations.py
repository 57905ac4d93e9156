from llmproxy.core import MigrationPackage

MIGRATIONS = MigrationPackage(
    name="auth",
    script_location="llmproxy.auth:migrations",
    version_table="llmproxy_auth_alembic_version",
    depends_on=("core",),
)
