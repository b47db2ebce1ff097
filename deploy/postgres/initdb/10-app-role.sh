#!/bin/sh
# The application role the phasestream services connect as: it owns the database (so
# `phasestream migrate` can create and alter its tables) and is no superuser. The
# postgres image runs this once, when the data volume is first initialised; the role's
# name and password come from APP_DB_USER and APP_DB_PASSWORD (docker-compose.yml).
set -eu
: "${APP_DB_USER:?set APP_DB_USER}" "${APP_DB_PASSWORD:?set APP_DB_PASSWORD}"
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v app_user="$APP_DB_USER" -v app_password="$APP_DB_PASSWORD" -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER DATABASE :"db" OWNER TO :"app_user";
-- PostgreSQL 15+ gives the public schema to the database owner; older ones need this.
ALTER SCHEMA public OWNER TO :"app_user";
SQL
