-- What the stand-in installs in its backend database so that the catalog and
-- the system objects read as Aurora DSQL's do. Idempotent; run as a superuser.

-- DSQL's index access method is `btree_index`: pg_am names it so and
-- pg_get_indexdef prints `USING btree_index`, primary keys included.
-- PostgreSQL's btree cannot be renamed or copied (its code checks its OID), so
-- the stand-in shows the catalog through these two, and rewrites references
-- to pg_am and pg_get_indexdef in the statements it is sent.
CREATE SCHEMA IF NOT EXISTS dsql_sim;
CREATE OR REPLACE VIEW dsql_sim.pg_am AS
    SELECT oid, CASE WHEN amname = 'btree' THEN 'btree_index'::name ELSE amname END AS amname, amhandler, amtype
    FROM pg_catalog.pg_am;
CREATE OR REPLACE FUNCTION dsql_sim.pg_get_indexdef(oid) RETURNS text
    LANGUAGE sql STABLE AS $$ SELECT replace(pg_catalog.pg_get_indexdef($1), ' USING btree (', ' USING btree_index (') $$;
CREATE OR REPLACE FUNCTION dsql_sim.pg_get_indexdef(oid, integer, boolean) RETURNS text
    LANGUAGE sql STABLE AS $$ SELECT pg_catalog.pg_get_indexdef($1, $2, $3) $$;

-- DSQL's job table and its wait procedure.
CREATE SCHEMA IF NOT EXISTS sys;
CREATE TABLE IF NOT EXISTS sys.jobs (
    job_id      text PRIMARY KEY,
    status      text NOT NULL,
    details     text,
    job_type    text NOT NULL DEFAULT 'INDEX_BUILD',
    object_name text,
    start_time  timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
);
-- The stand-in's own note of the table each job's object belongs to
-- (sys.jobs names only the object: one name can be in two schemas).
CREATE TABLE IF NOT EXISTS dsql_sim.job_tables (job_id text PRIMARY KEY, table_oid oid);
CREATE TABLE IF NOT EXISTS dsql_sim.settings (wait_for_job_ms integer NOT NULL);
INSERT INTO dsql_sim.settings SELECT 30000 WHERE NOT EXISTS (SELECT 1 FROM dsql_sim.settings);

-- `CALL sys.wait_for_job('<id>')` answers one boolean: true when the job
-- completed, false when it failed or the wait timed out. It commits between
-- looks so that its own transaction never holds the build back.
CREATE OR REPLACE PROCEDURE sys.wait_for_job(job text, INOUT completed boolean DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    until timestamptz := clock_timestamp()
        + make_interval(secs => (SELECT wait_for_job_ms FROM dsql_sim.settings) / 1000.0);
    state text;
BEGIN
    LOOP
        SELECT j.status INTO state FROM sys.jobs j WHERE j.job_id = job;
        IF state IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = '42704', MESSAGE = format('job %s not found', job);
        END IF;
        IF state IN ('completed', 'failed', 'cancelled') OR clock_timestamp() > until THEN
            completed := state = 'completed';
            RETURN;
        END IF;
        COMMIT;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
