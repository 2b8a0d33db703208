//! The classifier's corpus: every statement with the class it must get.

use super::*;

const R: Access = Access::Read;
const W: Access = Access::Write;

/// (statement, expected class). Traps are marked in comments.
const CORPUS: &[(&str, Access)] = &[
    // Plain reads.
    ("SELECT 1", R),
    ("select 1", R),
    ("SELECT inet_server_port()", R),
    ("SELECT * FROM accounts WHERE id = $1", R),
    ("SELECT abalance FROM pgbench_accounts WHERE aid = 42;", R),
    ("  \n\tSELECT 1  ", R),
    ("SELECT count(*) FROM t", R),
    ("SELECT a, b FROM t ORDER BY a LIMIT 10 OFFSET 5", R),
    ("SELECT DISTINCT ON (a) a, b FROM t", R),
    ("SELECT * FROM a JOIN b USING (id)", R),
    ("SELECT * FROM a LEFT JOIN b ON a.id = b.id", R),
    ("SELECT now()", R),
    ("SELECT current_timestamp", R),
    ("SELECT version()", R),
    ("SELECT pg_is_in_recovery()", R),
    ("SELECT pg_last_wal_replay_lsn()", R),
    ("SELECT $1::int + $2::int", R),
    ("SELECT 'nextval(''s'')'", R),
    ("SELECT 'FOR UPDATE'", R),
    ("SELECT $$ INSERT INTO t VALUES (1) $$", R),
    ("SELECT $tag$ DELETE FROM t $tag$", R),
    ("SELECT \"nextval\" FROM t", R),
    ("SELECT nextval FROM t", R),
    ("SELECT 1 -- nextval('s')", R),
    ("SELECT /* nextval('s') */ 1", R),
    ("SELECT /* nested /* nextval('s') */ still comment */ 1", R),
    ("SELECT E'it\\'s nextval(''x'')'", R),
    ("SELECT substring('abc' FROM 1 FOR 2)", R),
    ("SELECT overlay('abc' PLACING 'x' FROM 1 FOR 1)", R),
    ("SELECT * FROM t WHERE a IN (SELECT b FROM u)", R),
    (
        "SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.a = t.a)",
        R,
    ),
    ("SELECT json_build_object('a', 1)", R),
    ("SELECT array_agg(x) FROM generate_series(1, 10) x", R),
    ("SELECT * FROM generate_series(1,3)", R),
    ("SELECT a FROM t GROUP BY a HAVING count(*) > 1", R),
    ("SELECT a FROM t UNION SELECT b FROM u", R),
    ("SELECT a FROM t UNION ALL SELECT b FROM u", R),
    ("SELECT a FROM t INTERSECT SELECT b FROM u", R),
    ("SELECT a FROM t EXCEPT SELECT b FROM u", R),
    ("(SELECT 1) UNION (SELECT 2)", R),
    ("((SELECT 1))", R),
    (
        "SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t",
        R,
    ),
    ("SELECT * FROM t TABLESAMPLE SYSTEM (10)", R),
    ("SELECT lower(name) FROM users", R),
    ("SELECT coalesce(a, b) FROM t", R),
    ("SELECT pg_sleep(0.1)", R),
    ("SELECT current_setting('search_path')", R),
    ("SELECT txid_current_snapshot()", R),
    ("SELECT pg_current_wal_lsn()", R),
    ("SELECT has_table_privilege('t', 'select')", R),
    ("SELECT * FROM pg_stat_activity", R),
    ("SELECT * FROM pg_locks", R),
    ("SELECT * FROM information_schema.tables", R),
    ("SELECT relname FROM pg_class WHERE relkind = 'r'", R),
    ("SELECT length(lo) FROM blobs", R),
    ("SELECT lower_bound FROM ranges", R),
    ("SELECT update FROM t", R),
    ("SELECT \"into\" FROM t", R),
    ("SELECT 1; SELECT 2", R),
    ("SELECT 1;;; SELECT 2;", R),
    (";", R),
    ("", R),
    ("   ", R),
    ("-- only a comment", R),
    ("/* only a comment */", R),
    ("VALUES (1), (2)", R),
    ("values (1, 'a')", R),
    ("TABLE accounts", R),
    ("table pgbench_branches", R),
    ("SHOW search_path", R),
    ("SHOW ALL", R),
    ("show transaction_isolation", R),
    ("EXPLAIN SELECT * FROM t", R),
    ("EXPLAIN VERBOSE SELECT * FROM t", R),
    ("EXPLAIN (COSTS OFF) SELECT 1", R),
    ("EXPLAIN INSERT INTO t VALUES (1)", R),
    ("EXPLAIN DELETE FROM t", R),
    ("EXPLAIN ANALYZE SELECT * FROM t", R),
    ("EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM t", R),
    ("EXPLAIN (ANALYZE false) DELETE FROM t", R),
    ("WITH x AS (SELECT 1) SELECT * FROM x", R),
    (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r",
        R,
    ),
    (
        "WITH a AS (SELECT 1), b AS (SELECT 2) SELECT * FROM a, b",
        R,
    ),
    ("WITH x AS MATERIALIZED (SELECT 1) SELECT * FROM x", R),
    ("BEGIN READ ONLY", R),
    ("BEGIN TRANSACTION READ ONLY", R),
    ("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", R),
    ("BEGIN READ ONLY; SELECT 1; COMMIT", R),
    ("START TRANSACTION READ ONLY", R),
    (
        "START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY",
        R,
    ),
    ("BEGIN ISOLATION LEVEL READ COMMITTED, READ ONLY", R),
    ("BEGIN ISOLATION LEVEL READ UNCOMMITTED READ WRITE", W),
    ("BEGIN; SET TRANSACTION READ ONLY; SELECT 1; COMMIT", R),
    ("SET TRANSACTION READ ONLY", R),
    ("COMMIT", R),
    ("END", R),
    ("ROLLBACK", R),
    ("ABORT", R),
    ("SAVEPOINT s1", R),
    ("RELEASE SAVEPOINT s1", R),
    ("ROLLBACK TO SAVEPOINT s1", R),
    ("COMMIT; SELECT 1", R),
    ("/* switchyard: replica */ SELECT 1", R),
    ("SELECT 1 /* trailing */", R),
    ("select\n  a\nfrom\n  t\nwhere\n  b = 'x;y'", R),
    ("SELECT ';' ; SELECT ';'", R),
    ("SELECT U&'d\\0061t\\+000061'", R),
    ("SELECT B'1010'", R),
    ("SELECT X'FF'", R),
    ("SELECT 1.5e-3", R),
    ("SELECT a::text FROM t", R),
    ("SELECT t.* FROM t", R),
    ("SELECT * FROM t WHERE a = ANY($1)", R),
    ("SELECT pg_catalog.now()", R),
    ("SELECT \"Nextval\"('s')", R),
    // Locking clauses (trap).
    ("SELECT * FROM t FOR UPDATE", W),
    ("SELECT * FROM t WHERE id = 1 FOR UPDATE SKIP LOCKED", W),
    ("SELECT * FROM t FOR NO KEY UPDATE", W),
    ("SELECT * FROM t FOR SHARE", W),
    ("SELECT * FROM t FOR KEY SHARE", W),
    ("SELECT * FROM t FOR UPDATE OF t NOWAIT", W),
    ("select * from t for update", W),
    ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", W),
    ("WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x", W),
    ("TABLE t FOR UPDATE", W),
    // SELECT INTO (trap).
    ("SELECT * INTO new_table FROM t", W),
    ("SELECT a, b INTO TEMP tmp FROM t", W),
    ("SELECT 1 INTO UNLOGGED u", W),
    ("select x into y from z", W),
    // Writing functions (trap).
    ("SELECT nextval('seq')", W),
    ("SELECT NEXTVAL('seq')", W),
    ("SELECT pg_catalog.nextval('seq')", W),
    ("SELECT nextval ('seq')", W),
    ("SELECT setval('seq', 10)", W),
    ("SELECT currval('seq')", W),
    ("SELECT lastval()", W),
    ("SELECT id, nextval('s') FROM t", W),
    ("SELECT * FROM t WHERE id = nextval('s')", W),
    ("SELECT pg_advisory_lock(1)", W),
    ("SELECT pg_advisory_lock_shared(1)", W),
    ("SELECT pg_advisory_xact_lock(1)", W),
    ("SELECT pg_advisory_unlock(1)", W),
    ("SELECT pg_advisory_unlock_all()", W),
    ("SELECT pg_try_advisory_lock(1)", W),
    ("SELECT pg_try_advisory_xact_lock_shared(1)", W),
    ("SELECT lo_creat(-1)", W),
    ("SELECT lo_create(0)", W),
    ("SELECT lo_import('/tmp/x')", W),
    ("SELECT lo_unlink(123)", W),
    ("SELECT lo_from_bytea(0, 'x')", W),
    ("SELECT lo_put(1, 0, 'x')", W),
    ("SELECT dblink_exec('dbname=x', 'DELETE FROM t')", W),
    ("SELECT txid_current()", W),
    ("SELECT pg_current_xact_id()", W),
    ("SELECT pg_notify('ch', 'payload')", W),
    ("SELECT pg_switch_wal()", W),
    ("SELECT pg_create_restore_point('p')", W),
    ("SELECT pg_create_physical_replication_slot('s')", W),
    ("SELECT pg_drop_replication_slot('s')", W),
    ("SELECT \"nextval\"('s')", W),
    ("VALUES (nextval('s'))", W),
    ("SELECT (SELECT nextval('s'))", W),
    ("SELECT 1; SELECT nextval('s')", W),
    ("EXPLAIN ANALYZE SELECT nextval('s')", W),
    // Data-modifying CTEs (trap).
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", W),
    (
        "WITH i AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM i",
        W,
    ),
    (
        "WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT count(*) FROM u",
        W,
    ),
    (
        "WITH m AS (MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE RETURNING *) SELECT 1",
        W,
    ),
    ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", W),
    ("WITH x AS (SELECT 1) DELETE FROM t", W),
    ("with recursive r as (select 1) update t set a = 1", W),
    // EXPLAIN ANALYZE runs the statement.
    ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", W),
    ("EXPLAIN ANALYZE DELETE FROM t", W),
    ("EXPLAIN (ANALYZE) UPDATE t SET a = 1", W),
    ("EXPLAIN (ANALYZE true, BUFFERS) DELETE FROM t", W),
    ("EXPLAIN ANALYZE VERBOSE INSERT INTO t VALUES (1)", W),
    ("EXPLAIN ANALYZE", W),
    // Plain writes.
    ("INSERT INTO t VALUES (1)", W),
    ("insert into t (a) values ($1)", W),
    ("UPDATE t SET a = 1", W),
    (
        "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1;",
        W,
    ),
    ("DELETE FROM t", W),
    (
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a",
        W,
    ),
    ("TRUNCATE t", W),
    ("COPY t FROM STDIN", W),
    ("COPY t TO STDOUT", W),
    ("COPY (SELECT 1) TO STDOUT", W),
    ("CREATE TABLE t (a int)", W),
    ("CREATE TEMP TABLE t (a int)", W),
    ("CREATE INDEX ON t (a)", W),
    ("ALTER TABLE t ADD COLUMN b int", W),
    ("DROP TABLE t", W),
    ("GRANT SELECT ON t TO u", W),
    ("REVOKE ALL ON t FROM u", W),
    ("VACUUM t", W),
    ("ANALYZE t", W),
    ("CLUSTER t", W),
    ("REINDEX TABLE t", W),
    ("REFRESH MATERIALIZED VIEW v", W),
    ("LOCK TABLE t", W),
    ("LISTEN ch", W),
    ("UNLISTEN *", W),
    ("NOTIFY ch, 'x'", W),
    ("CALL proc()", W),
    ("DO $$ BEGIN PERFORM 1; END $$", W),
    ("PREPARE p AS SELECT 1", W),
    ("EXECUTE p", W),
    ("DEALLOCATE p", W),
    ("DECLARE c CURSOR FOR SELECT 1", W),
    ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", W),
    ("FETCH 10 FROM c", W),
    ("CLOSE c", W),
    ("DISCARD ALL", W),
    ("RESET ALL", W),
    ("SET search_path = app", W),
    ("SET statement_timeout TO 1000", W),
    ("SET LOCAL work_mem = '64MB'", W),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", W),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", W),
    ("SET TRANSACTION READ WRITE", W),
    ("SECURITY LABEL ON TABLE t IS 'x'", W),
    ("COMMENT ON TABLE t IS 'x'", W),
    ("CHECKPOINT", W),
    ("LOAD 'plugin'", W),
    ("REASSIGN OWNED BY a TO b", W),
    ("IMPORT FOREIGN SCHEMA s FROM SERVER f INTO l", W),
    ("SELECT 1; INSERT INTO t VALUES (1)", W),
    ("INSERT INTO t VALUES (1); SELECT 1", W),
    ("SELECT 1; DELETE FROM t; SELECT 2", W),
    // Transactions that are not declared read-only.
    ("BEGIN", W),
    ("BEGIN;", W),
    ("START TRANSACTION", W),
    ("BEGIN ISOLATION LEVEL SERIALIZABLE", W),
    // Read-only but serializable: a hot standby refuses it (0A000).
    (
        "START TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE",
        W,
    ),
    ("BEGIN READ ONLY ISOLATION LEVEL SERIALIZABLE", W),
    (
        "BEGIN READ ONLY; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        W,
    ),
    ("BEGIN READ WRITE", W),
    ("BEGIN READ ONLY, READ WRITE", W),
    ("BEGIN; SELECT 1; COMMIT", W),
    ("BEGIN; SELECT 1; SET TRANSACTION READ ONLY; COMMIT", W),
    ("BEGIN; INSERT INTO t VALUES (1); COMMIT", W),
    ("BEGIN READ ONLY; COMMIT; INSERT INTO t VALUES (1)", W),
    // Unsure means write.
    ("(", W),
    ("((", W),
    ("42", W),
    ("'just a string'", W),
    ("$1", W),
    ("\"select\" 1", W),
    ("SELEC 1", W),
    ("frobnicate the database", W),
];

#[test]
fn corpus_has_at_least_two_hundred_statements() {
    assert!(CORPUS.len() >= 200, "{} statements", CORPUS.len());
}

#[test]
fn every_corpus_statement_gets_its_class() {
    let functions = WriteFunctions::default();
    let wrong: Vec<_> = CORPUS
        .iter()
        .filter(|(sql, want)| classify(sql.as_bytes(), &functions) != *want)
        .map(|(sql, want)| format!("{want:?} expected: {sql}"))
        .collect();
    assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
}

#[test]
fn configured_functions_count_as_writes() {
    let functions = WriteFunctions::new(&["audit_log", "app_*"]);
    assert_eq!(classify(b"SELECT audit_log('x')", &functions), W);
    assert_eq!(classify(b"SELECT app_touch(1)", &functions), W);
    assert_eq!(classify(b"SELECT appendix(1)", &functions), R);
    assert_eq!(
        classify(b"SELECT audit_log('x')", &WriteFunctions::default()),
        R
    );
}

#[test]
fn backslash_escapes_follow_standard_conforming_strings() {
    let functions = WriteFunctions::default();
    let off = LexOptions {
        standard_conforming_strings: false,
    };
    // With it off, \' does not end the string: the nextval is quoted.
    let sql = b"SELECT 'a\\' nextval(1) '";
    assert_eq!(classify_with(sql, &functions, off), R);
    assert_eq!(classify(sql, &functions), W);
}

#[test]
fn hints_are_read_from_the_leading_comment_only() {
    assert_eq!(
        hint(b"/* switchyard: primary */ SELECT 1"),
        Some(Hint::Primary)
    );
    assert_eq!(
        hint(b"  /*switchyard:replica*/SELECT 1"),
        Some(Hint::Replica)
    );
    assert_eq!(
        hint(b"-- SwitchYard: Primary\nSELECT 1"),
        Some(Hint::Primary)
    );
    assert_eq!(hint(b"SELECT 1 /* switchyard: primary */"), None);
    assert_eq!(hint(b"/* switchyard: sideways */ SELECT 1"), None);
    assert_eq!(hint(b"/* other */ SELECT 1"), None);
    assert_eq!(hint(b""), None);
}

#[test]
fn route_settings_are_recognised_exactly() {
    assert_eq!(
        route_setting(b"SET switchyard.route = 'replica'"),
        Some(b"replica".as_slice())
    );
    assert_eq!(
        route_setting(b"set SESSION switchyard.route to primary;"),
        Some(b"primary".as_slice())
    );
    assert_eq!(
        route_setting(b"RESET switchyard.route"),
        Some(b"auto".as_slice())
    );
    assert_eq!(route_setting(b"SET search_path = x"), None);
    assert_eq!(route_setting(b"SET switchyard.route = 'x'; SELECT 1"), None);
    assert_eq!(route_setting(b"SET switchyard.other = 'x'"), None);
    assert_eq!(route_setting(b"SELECT 1"), None);
}

#[test]
fn after_a_held_begin_only_set_transaction_read_only_first_reads() {
    let functions = WriteFunctions::default();
    let opened = |sql: &str| classify_opened(sql.as_bytes(), &functions);
    for sql in [
        "SET TRANSACTION READ ONLY",
        "set transaction isolation level repeatable read, read only",
        "SET TRANSACTION READ ONLY; SELECT 1",
        "SET TRANSACTION READ ONLY; SELECT 1; COMMIT",
    ] {
        assert_eq!(opened(sql), Access::Read, "{sql}");
    }
    for sql in [
        "SELECT 1",
        "SHOW work_mem",
        "SET TRANSACTION READ WRITE",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY",
        "SET TRANSACTION READ ONLY ISOLATION LEVEL SERIALIZABLE",
        "SET LOCAL work_mem = '1MB'; SET TRANSACTION READ ONLY",
        "SET TRANSACTION READ ONLY; COMMIT; INSERT INTO t VALUES (1)",
        "COMMIT; SELECT 1",
        "INSERT INTO t VALUES (1)",
    ] {
        assert_eq!(opened(sql), Access::Write, "{sql}");
    }
}

#[test]
fn write_function_lookup_filters_by_length_and_first_byte_without_missing_any() {
    let long = "f".repeat(70);
    let functions = WriteFunctions::new(&[long.as_str(), "audit_*"]);
    assert!(functions.contains(b"NEXTVAL", false));
    assert!(functions.contains(b"nextval", true));
    assert!(!functions.contains(b"Nextval", true));
    assert!(functions.contains(long.to_uppercase().as_bytes(), false));
    assert!(!functions.contains("f".repeat(69).as_bytes(), false));
    assert!(functions.contains(b"Audit_Log", false));
    assert!(functions.contains(b"pg_try_advisory_lock", false));
    for read in ["count", "now", "in", "coalesce", "", "nextva", "nextvals"] {
        assert!(!functions.contains(read.as_bytes(), false), "{read}");
    }
    assert!(WriteFunctions::new(&["*"]).contains(b"anything", false));
}
