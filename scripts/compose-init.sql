-- Init SQL of the `postgres` service in docker-compose.yml. The official image runs it once, on an
-- empty data volume, as the superuser, connected to POSTGRES_DB (fanout), with ON_ERROR_STOP.
-- It sets up what scripts/localpg.sh sets up for `make run`: a role `fanout`, not a superuser, that
-- owns the database, and the demo schema loaded as that role, so that it owns the tables too.
--
-- The password is for this local stack only: docker-compose.yml publishes no PostgreSQL port, and
-- its FANOUT_DATABASE carries the same password.
CREATE ROLE fanout LOGIN PASSWORD 'fanout';
ALTER DATABASE fanout OWNER TO fanout;

-- docker-compose.yml mounts scripts/demo.sql at /docker-entrypoint-initdb.d/fanout/demo.sql. The
-- entrypoint runs only the files directly in /docker-entrypoint-initdb.d and skips that folder, so
-- the demo runs once, here, after the role exists and as the role.
SET ROLE fanout;
\ir fanout/demo.sql
RESET ROLE;
