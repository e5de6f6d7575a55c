#!/bin/sh
# Postgres runs this once, when its data volume is created: a read-only login for BI tools
# (Grafana, Metabase, Excel). It reads every table and report view the syncer creates, now
# and later, and can change nothing. On an existing volume, run it by hand:
#   docker compose exec db sh /docker-entrypoint-initdb.d/10-reporter.sh
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v owner="$POSTGRES_USER" -v password="${REPORTER_PASSWORD:-reporter}" <<'SQL'
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'reporter') AS missing \gset
\if :missing
CREATE ROLE reporter LOGIN;
\endif
ALTER ROLE reporter WITH LOGIN PASSWORD :'password';
GRANT USAGE ON SCHEMA public TO reporter;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO reporter;
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO reporter;
SQL
