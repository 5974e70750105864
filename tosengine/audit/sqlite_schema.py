"""The statements that make a new SQLite audit log what migrations/versions make of it (at REVISION).

Generated: `python -m tosengine.audit.migrate` writes this file again after a new migration;
tests/test_audit.py holds it equal to what the migrations build. A new SQLite log is created from
these in one transaction, without loading Alembic (tosengine/audit/migrate.py).
"""

REVISION = "0008"

STATEMENTS = (
    (
        "CREATE TABLE alembic_version (\n"
        "\tversion_num VARCHAR(32) NOT NULL, \n"
        "\tCONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n"
        ")"
    ),
    (
        "CREATE TABLE violations (\n"
        "\tseq INTEGER NOT NULL, \n"
        "\tid VARCHAR(32) NOT NULL, \n"
        "\tpolicy VARCHAR(200) NOT NULL, \n"
        "\trule VARCHAR(400) NOT NULL, \n"
        "\tpolicy_version VARCHAR(80) NOT NULL, \n"
        "\tclause TEXT NOT NULL, \n"
        "\tsubject VARCHAR(1000) NOT NULL, \n"
        '\t"key" VARCHAR(1000) NOT NULL, \n'
        "\tseverity VARCHAR(20) NOT NULL, \n"
        "\taction VARCHAR(40) NOT NULL, \n"
        "\tmessage TEXT NOT NULL, \n"
        "\ttime DATETIME NOT NULL, \n"
        "\trecorded_at DATETIME NOT NULL, \n"
        "\tevidence TEXT NOT NULL, \n"
        "\tevidence_events TEXT NOT NULL, \n"
        "\tcauses TEXT NOT NULL, \n"
        "\tdetail TEXT NOT NULL, \n"
        "\tengine_version VARCHAR(40) NOT NULL, \n"
        "\tprev_hash VARCHAR(64) NOT NULL, \n"
        "\thash VARCHAR(64) NOT NULL, mode VARCHAR(10) DEFAULT 'enforce' NOT NULL, \n"
        "\tCONSTRAINT pk_violations PRIMARY KEY (seq), \n"
        "\tCONSTRAINT uq_violations_id UNIQUE (id)\n"
        ")"
    ),
    "CREATE INDEX ix_violations_policy ON violations (policy)",
    "CREATE INDEX ix_violations_time ON violations (time)",
    "CREATE INDEX ix_violations_subject_time ON violations (subject, time)",
    (
        "CREATE TABLE events (\n"
        "\tseq INTEGER NOT NULL, \n"
        "\tsource VARCHAR(1000) NOT NULL, \n"
        "\tevent_id VARCHAR(1000) NOT NULL, \n"
        "\ttype VARCHAR(400) NOT NULL, \n"
        "\tsubject VARCHAR(1000) NOT NULL, \n"
        "\ttime DATETIME NOT NULL, \n"
        "\tbody TEXT NOT NULL, \n"
        "\trecorded_at DATETIME NOT NULL, partition VARCHAR(200) DEFAULT '' NOT NULL, \n"
        "\tCONSTRAINT pk_events PRIMARY KEY (seq), \n"
        "\tCONSTRAINT uq_events_source UNIQUE (source, event_id)\n"
        ")"
    ),
    (
        "CREATE TABLE policy_versions (\n"
        "\tseq INTEGER NOT NULL, \n"
        "\tpolicy VARCHAR(200) NOT NULL, \n"
        "\tversion VARCHAR(80) NOT NULL, \n"
        "\tpath VARCHAR(2000) NOT NULL, \n"
        "\ttext TEXT NOT NULL, \n"
        "\tfirst_seen DATETIME NOT NULL, \n"
        "\tCONSTRAINT pk_policy_versions PRIMARY KEY (seq), \n"
        "\tCONSTRAINT uq_policy_versions_policy UNIQUE (policy, version)\n"
        ")"
    ),
    (
        "CREATE TABLE chain_head (\n"
        "\tname VARCHAR(40) NOT NULL, \n"
        "\tcount BIGINT NOT NULL, \n"
        "\tlast_seq BIGINT NOT NULL, \n"
        "\thash VARCHAR(64) NOT NULL, mac VARCHAR(64) DEFAULT '' NOT NULL, \n"
        "\tCONSTRAINT pk_chain_head PRIMARY KEY (name)\n"
        ")"
    ),
    (
        "CREATE TABLE meta (\n"
        "\tname VARCHAR(80) NOT NULL, \n"
        "\tvalue TEXT NOT NULL, \n"
        "\tCONSTRAINT pk_meta PRIMARY KEY (name)\n"
        ")"
    ),
    (
        "CREATE TRIGGER violations_no_update BEFORE UPDATE ON violations BEGIN SELECT RAISE(ABORT, "
        "'the audit log is append-only: UPDATE refused'); END"
    ),
    (
        "CREATE TRIGGER violations_no_delete BEFORE DELETE ON violations BEGIN SELECT RAISE(ABORT, "
        "'the audit log is append-only: DELETE refused'); END"
    ),
    (
        "CREATE TABLE checkpoints (\n"
        "\tseq INTEGER NOT NULL, \n"
        "\tpartition VARCHAR(200) NOT NULL, \n"
        "\tposition BIGINT NOT NULL, \n"
        "\tformat VARCHAR(40) NOT NULL, \n"
        "\tversion INTEGER NOT NULL, \n"
        "\trules TEXT NOT NULL, \n"
        "\tpolicies TEXT NOT NULL, \n"
        "\tstate BLOB NOT NULL, \n"
        "\tsize BIGINT NOT NULL, \n"
        "\tengine_version VARCHAR(40) NOT NULL, \n"
        "\trecorded_at DATETIME NOT NULL, \n"
        "\tCONSTRAINT pk_checkpoints PRIMARY KEY (seq)\n"
        ")"
    ),
    "CREATE INDEX ix_checkpoints_partition_seq ON checkpoints (partition, seq)",
    (
        "CREATE TABLE state_changes (\n"
        "\tseq INTEGER NOT NULL, \n"
        "\tpartition VARCHAR(200) NOT NULL, \n"
        "\twhat VARCHAR(40) NOT NULL, \n"
        "\tdetail TEXT NOT NULL, \n"
        "\trecorded_at DATETIME NOT NULL, \n"
        "\tCONSTRAINT pk_state_changes PRIMARY KEY (seq)\n"
        ")"
    ),
    (
        "CREATE TABLE repeats (\n"
        "\tseq INTEGER NOT NULL, \n"
        "\tid VARCHAR(32) NOT NULL, \n"
        "\trepeat_of VARCHAR(32) NOT NULL, \n"
        "\tpolicy VARCHAR(200) NOT NULL, \n"
        "\trule VARCHAR(400) NOT NULL, \n"
        "\tsubject VARCHAR(1000) NOT NULL, \n"
        '\t"key" VARCHAR(1000) NOT NULL, \n'
        "\tcount BIGINT NOT NULL, \n"
        "\ttime DATETIME NOT NULL, \n"
        "\tfirst DATETIME NOT NULL, \n"
        "\tlast DATETIME NOT NULL, \n"
        "\tevidence TEXT NOT NULL, \n"
        "\tevidence_events TEXT NOT NULL, \n"
        "\trecorded_at DATETIME NOT NULL, \n"
        "\tengine_version VARCHAR(40) NOT NULL, \n"
        "\tprev_hash VARCHAR(64) NOT NULL, \n"
        "\thash VARCHAR(64) NOT NULL, \n"
        "\tCONSTRAINT pk_repeats PRIMARY KEY (seq), \n"
        "\tCONSTRAINT uq_repeats_id UNIQUE (id)\n"
        ")"
    ),
    "CREATE INDEX ix_repeats_repeat_of ON repeats (repeat_of)",
    "CREATE INDEX ix_repeats_subject_time ON repeats (subject, time)",
    (
        "CREATE TRIGGER repeats_no_update BEFORE UPDATE ON repeats BEGIN SELECT RAISE(ABORT, 'the "
        "audit log is append-only: UPDATE refused'); END"
    ),
    (
        "CREATE TRIGGER repeats_no_delete BEFORE DELETE ON repeats BEGIN SELECT RAISE(ABORT, 'the "
        "audit log is append-only: DELETE refused'); END"
    ),
    (
        "CREATE TABLE evaluation_errors (\n"
        "\tseq INTEGER NOT NULL, \n"
        "\trule VARCHAR(400) NOT NULL, \n"
        "\tsource VARCHAR(1000) NOT NULL, \n"
        "\tevent_id VARCHAR(1000) NOT NULL, \n"
        "\terror TEXT NOT NULL, \n"
        "\trecorded_at DATETIME NOT NULL, \n"
        "\tCONSTRAINT pk_evaluation_errors PRIMARY KEY (seq), \n"
        "\tCONSTRAINT uq_evaluation_errors_rule UNIQUE (rule, source, event_id)\n"
        ")"
    ),
    (
        'CREATE TABLE "rejected_events" (\n'
        "\tseq INTEGER NOT NULL, \n"
        "\torigin VARCHAR(1000) NOT NULL, \n"
        "\tline INTEGER, \n"
        "\tfield VARCHAR(1000) NOT NULL, \n"
        "\treason TEXT NOT NULL, \n"
        "\traw TEXT NOT NULL, \n"
        "\trecorded_at DATETIME NOT NULL, \n"
        "\tdigest VARCHAR(64), \n"
        "\tCONSTRAINT pk_rejected_events PRIMARY KEY (seq), \n"
        "\tCONSTRAINT uq_rejected_events_digest UNIQUE (digest)\n"
        ")"
    ),
    (
        "CREATE TABLE kafka_offsets (\n"
        "\tpartition VARCHAR(200) NOT NULL, \n"
        "\ttopic VARCHAR(400) NOT NULL, \n"
        "\tkafka_partition INTEGER NOT NULL, \n"
        "\tnext_offset BIGINT, \n"
        "\tepoch BIGINT NOT NULL, \n"
        "\tcheckpoint_seq BIGINT, \n"
        "\ttopology VARCHAR(40) NOT NULL, \n"
        "\towner VARCHAR(200) NOT NULL, \n"
        "\tupdated_at DATETIME NOT NULL, \n"
        "\tCONSTRAINT pk_kafka_offsets PRIMARY KEY (partition)\n"
        ")"
    ),
)
