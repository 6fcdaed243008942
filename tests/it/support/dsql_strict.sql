-- DSQL-strict harness for PostgreSQL.
--
-- Installed into a test database, it makes PostgreSQL refuse what Aurora DSQL
-- refuses, so that tests fail when the engine breaks a DSQL rule:
--   * more than 3,000 mutated rows (table rows plus secondary index rows) or
--     more than 10 MiB of row data in one transaction: SQLSTATE 54000;
--   * DDL and DML in one transaction, or two DDL statements in one: 0A000;
--   * TRUNCATE and temporary tables: 0A000;
-- and injects optimistic-concurrency failures (SQLSTATE 40001, "OC000") at
-- COMMIT on every n-th committing write transaction.
--
-- Sequences are not transactional, so `dsql_harness.violations`,
-- `dsql_harness.occ_injected` and `dsql_harness.rows_written` keep counting
-- even when the transaction rolls back; tests read them to prove that no rule
-- was broken and to count redone work.
--
-- Only tables created after the harness is installed are watched (an event
-- trigger attaches the counting triggers to them); `dsql_harness.watch(regclass)`
-- attaches them to an existing table.

CREATE SCHEMA dsql_harness;

CREATE TABLE dsql_harness.settings (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    occ_every   integer NOT NULL DEFAULT 0,      -- 0: never inject
    row_limit   integer NOT NULL DEFAULT 3000,
    byte_limit  bigint  NOT NULL DEFAULT 10485760
);
INSERT INTO dsql_harness.settings DEFAULT VALUES;

CREATE SEQUENCE dsql_harness.violations;
CREATE SEQUENCE dsql_harness.occ_injected;
CREATE SEQUENCE dsql_harness.commits;
-- Every row written to a watched table, including attempts that rolled back:
-- with the rows that stayed, it tells how much work was redone.
CREATE SEQUENCE dsql_harness.rows_written;

-- One row per committed (or attempted) write transaction on a watched table.
CREATE TABLE dsql_harness.txn_log (
    txid          bigint PRIMARY KEY,
    mutated_rows  integer NOT NULL DEFAULT 0,
    mutated_bytes bigint  NOT NULL DEFAULT 0,
    statements    integer NOT NULL DEFAULT 0
);

CREATE FUNCTION dsql_harness.local_int(name text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('dsql_harness.' || name, true), ''), '0')::bigint
$$;

CREATE FUNCTION dsql_harness.set_local(name text, value bigint) RETURNS void
LANGUAGE sql AS $$
    SELECT set_config('dsql_harness.' || name, value::text, true)
$$;

CREATE FUNCTION dsql_harness.violation(state text, msg text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('dsql_harness.violations');
    RAISE EXCEPTION USING ERRCODE = state, MESSAGE = 'dsql-strict: ' || msg;
END $$;

-- Statement-level: counts the statement's rows times (1 + secondary indexes).
CREATE FUNCTION dsql_harness.count_mutations() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    n_rows    bigint;
    n_bytes   bigint;
    n_indexes bigint;
    total     bigint;
    bytes     bigint;
    lim       dsql_harness.settings;
BEGIN
    IF dsql_harness.local_int('ddl') > 0 THEN
        PERFORM dsql_harness.violation('0A000', 'DDL and DML in one transaction');
    END IF;
    SELECT count(*), coalesce(sum(pg_column_size(c.*)), 0) INTO n_rows, n_bytes FROM changed c;
    IF TG_OP <> 'DELETE' THEN
        PERFORM nextval('dsql_harness.rows_written') FROM generate_series(1, n_rows);
    END IF;
    SELECT count(*) INTO n_indexes FROM pg_index WHERE indrelid = TG_RELID AND NOT indisprimary;
    total := dsql_harness.local_int('rows') + n_rows * (1 + n_indexes);
    bytes := dsql_harness.local_int('bytes') + n_bytes;
    SELECT * INTO lim FROM dsql_harness.settings;
    IF total > lim.row_limit THEN
        PERFORM dsql_harness.violation('54000', format(
            'transaction row limit exceeded: %s rows counting index rows (%s on %s), over the limit of %s',
            total, TG_OP, TG_TABLE_NAME, lim.row_limit));
    END IF;
    IF bytes > lim.byte_limit THEN
        PERFORM dsql_harness.violation('54000', format(
            'transaction size limit exceeded: %s bytes, over the limit of %s', bytes, lim.byte_limit));
    END IF;
    PERFORM dsql_harness.set_local('rows', total);
    PERFORM dsql_harness.set_local('bytes', bytes);
    IF dsql_harness.local_int('dml') = 0 THEN
        PERFORM dsql_harness.set_local('dml', 1);
        INSERT INTO dsql_harness.txn_log (txid) VALUES (txid_current());
    END IF;
    UPDATE dsql_harness.txn_log
       SET mutated_rows = total, mutated_bytes = bytes, statements = statements + 1
     WHERE txid = txid_current();
    RETURN NULL;
END $$;

CREATE FUNCTION dsql_harness.refuse_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM dsql_harness.violation('0A000', 'TRUNCATE is not supported');
    RETURN NULL;
END $$;

-- Fires once per write transaction, at COMMIT (deferred constraint trigger on
-- the transaction's txn_log row): this is where DSQL reports OCC conflicts.
CREATE FUNCTION dsql_harness.at_commit() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    every integer;
    n     bigint;
BEGIN
    SELECT occ_every INTO every FROM dsql_harness.settings;
    n := nextval('dsql_harness.commits');
    IF every > 0 AND n % every = 0 THEN
        PERFORM nextval('dsql_harness.occ_injected');
        RAISE EXCEPTION USING ERRCODE = '40001',
            MESSAGE = 'change conflicts with another transaction, please retry: (OC000)';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER occ_at_commit AFTER INSERT ON dsql_harness.txn_log
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION dsql_harness.at_commit();

CREATE FUNCTION dsql_harness.watch(target regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('dsql_harness.internal', '1', true);
    EXECUTE format('CREATE TRIGGER dsql_harness_ins AFTER INSERT ON %s REFERENCING NEW TABLE AS changed '
                   'FOR EACH STATEMENT EXECUTE FUNCTION dsql_harness.count_mutations()', target);
    EXECUTE format('CREATE TRIGGER dsql_harness_upd AFTER UPDATE ON %s REFERENCING NEW TABLE AS changed '
                   'FOR EACH STATEMENT EXECUTE FUNCTION dsql_harness.count_mutations()', target);
    EXECUTE format('CREATE TRIGGER dsql_harness_del AFTER DELETE ON %s REFERENCING OLD TABLE AS changed '
                   'FOR EACH STATEMENT EXECUTE FUNCTION dsql_harness.count_mutations()', target);
    EXECUTE format('CREATE TRIGGER dsql_harness_trunc BEFORE TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION dsql_harness.refuse_truncate()', target);
    PERFORM set_config('dsql_harness.internal', '', true);
END $$;

CREATE FUNCTION dsql_harness.on_ddl_start() RETURNS event_trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('dsql_harness.internal', true) = '1' THEN
        RETURN;
    END IF;
    IF dsql_harness.local_int('dml') > 0 THEN
        PERFORM dsql_harness.violation('0A000', 'DDL and DML in one transaction (' || tg_tag || ')');
    END IF;
    IF dsql_harness.local_int('ddl') > 0 THEN
        PERFORM dsql_harness.violation('0A000', 'more than one DDL statement in one transaction (' || tg_tag || ')');
    END IF;
    PERFORM dsql_harness.set_local('ddl', 1);
END $$;

CREATE FUNCTION dsql_harness.on_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
    cmd record;
BEGIN
    IF current_setting('dsql_harness.internal', true) = '1' THEN
        RETURN;
    END IF;
    FOR cmd IN SELECT * FROM pg_event_trigger_ddl_commands()
               WHERE command_tag = 'CREATE TABLE' AND object_type = 'table' LOOP
        IF cmd.schema_name = 'dsql_harness' THEN
            CONTINUE;
        END IF;
        IF EXISTS (SELECT 1 FROM pg_class WHERE oid = cmd.objid AND relpersistence = 't') THEN
            PERFORM dsql_harness.violation('0A000', 'temporary tables are not supported');
        END IF;
        PERFORM dsql_harness.watch(cmd.objid::regclass);
    END LOOP;
END $$;

CREATE EVENT TRIGGER dsql_harness_ddl_start ON ddl_command_start
    EXECUTE FUNCTION dsql_harness.on_ddl_start();
CREATE EVENT TRIGGER dsql_harness_ddl_end ON ddl_command_end
    EXECUTE FUNCTION dsql_harness.on_ddl_end();
