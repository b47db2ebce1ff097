"""The Postgres side: connections, migrations, the audit projector's sink, analyst queries."""
