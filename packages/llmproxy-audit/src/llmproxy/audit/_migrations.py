from llmproxy.core import MigrationPackage

MIGRATIONS = MigrationPackage(
    name="audit",
    script_location="llmproxy.audit:migrations",
    version_table="llmproxy_audit_alembic_version",
    depends_on=("core",),
)
