import { MigrationInterface, QueryRunner } from 'typeorm';

/** What audit_events has on top of its columns, before and after this migration alike. */
const INDEXES_AND_TRIGGERS = `
      CREATE INDEX audit_events_time ON audit_events (occurred_at, id);
      CREATE INDEX audit_events_actor ON audit_events (actor_id, id);
      CREATE INDEX audit_events_actor_key ON audit_events (actor_key_id, id);
      CREATE INDEX audit_events_action ON audit_events (action text_pattern_ops, id);
      CREATE INDEX audit_events_target ON audit_events (target_type, target_id, id);
      CREATE INDEX audit_events_outcome ON audit_events (outcome, id);
      CREATE INDEX audit_events_ip ON audit_events USING gist ((ip::inet) inet_ops);
      CREATE INDEX audit_events_details ON audit_events USING gin (details jsonb_path_ops);
      CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE ON audit_events
        FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
      CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
        FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();`;

const COLUMNS = `id, occurred_at, action, outcome, actor_type, actor_id, actor_key_id, target_type, target_id, ip,
                 user_agent, request_id, details, prev_hash, hash`;

/**
 * Years of audit events: audit_events becomes range-partitioned by month of occurred_at, so a
 * time-bounded query reads only its months, every index stays the size of one month, and
 * retention detaches whole months instead of deleting rows (which the table refuses).
 *
 * - Partitions are made ahead by keyledger_audit_partitions(from, to), which the server calls at
 *   start and daily; anything outside them lands in audit_events_default, so an insert never fails.
 * - Row triggers on the parent reach every partition; a TRUNCATE trigger is put on each partition,
 *   since statement triggers are not inherited.
 * - The primary key must hold the partition column: (id, occurred_at). Ids stay unique because
 *   one sealer at a time assigns them from a sequence.
 * - audit_chain_head holds the last sealed id and hash, so sealing never searches the partitions.
 * - audit_chain_anchors records what retention removed (the last removed id and its hash), so the
 *   chain of what remains still verifies from its first event.
 * - audit_counts_hourly rolls counts up by hour, action, outcome and target type (see audit-rollup.ts).
 */
export class AuditPartitions1732800000000 implements MigrationInterface {
  name = 'AuditPartitions1732800000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER SEQUENCE audit_events_id_seq OWNED BY NONE;
      ALTER TABLE audit_events RENAME TO audit_events_unpartitioned;
      ALTER TABLE audit_events_unpartitioned RENAME CONSTRAINT audit_events_pkey TO audit_events_unpartitioned_pkey;
      DROP INDEX audit_events_time, audit_events_actor, audit_events_actor_key, audit_events_action,
                 audit_events_target, audit_events_outcome, audit_events_ip, audit_events_details;

      CREATE TABLE audit_events (
        id bigint NOT NULL,
        occurred_at timestamptz NOT NULL,
        action text NOT NULL,
        outcome text NOT NULL CHECK (outcome IN ('SUCCESS', 'DENIED', 'FAILURE')),
        actor_type text NOT NULL CHECK (actor_type IN ('USER', 'SYSTEM', 'ANONYMOUS')),
        actor_id uuid,
        actor_key_id uuid,
        target_type text,
        target_id text,
        ip text,
        user_agent text,
        request_id text,
        details jsonb,
        prev_hash text NOT NULL,
        hash text NOT NULL,
        PRIMARY KEY (id, occurred_at)
      ) PARTITION BY RANGE (occurred_at);
      ALTER SEQUENCE audit_events_id_seq OWNED BY audit_events.id;
      ${INDEXES_AND_TRIGGERS}

      CREATE FUNCTION keyledger_audit_partition(name text, bounds text) RETURNS void LANGUAGE plpgsql
      SET timezone = 'UTC' AS $$
      BEGIN
        IF to_regclass(name) IS NOT NULL THEN RETURN; END IF;
        EXECUTE format('CREATE TABLE %I PARTITION OF audit_events %s', name, bounds);
        EXECUTE format('CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON %I
                          FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()', name);
      END $$;

      -- One partition per UTC month touching [from_time, to_time); returns how many were made.
      -- In UTC whatever the session's zone: month arithmetic on timestamptz follows the session's zone.
      CREATE FUNCTION keyledger_audit_partitions(from_time timestamptz, to_time timestamptz) RETURNS integer
      LANGUAGE plpgsql SET timezone = 'UTC' AS $$
      DECLARE
        month timestamptz := date_trunc('month', from_time, 'UTC');
        made integer := 0;
        name text;
      BEGIN
        PERFORM keyledger_audit_partition('audit_events_default', 'DEFAULT');
        WHILE month < to_time LOOP
          name := 'audit_events_' || to_char(month AT TIME ZONE 'UTC', 'YYYY_MM');
          IF to_regclass(name) IS NULL THEN
            PERFORM keyledger_audit_partition(name, format('FOR VALUES FROM (%L) TO (%L)',
              month, month + interval '1 month'));
            made := made + 1;
          END IF;
          month := month + interval '1 month';
        END LOOP;
        RETURN made;
      END $$;

      SELECT keyledger_audit_partitions(
        coalesce((SELECT min(occurred_at) FROM audit_events_unpartitioned), now()), now() + interval '3 months');
      INSERT INTO audit_events (${COLUMNS}) SELECT ${COLUMNS} FROM audit_events_unpartitioned;
      DROP TABLE audit_events_unpartitioned;

      CREATE TABLE audit_chain_head (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        last_id bigint,
        hash text NOT NULL
      );
      INSERT INTO audit_chain_head (last_id, hash)
        SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1;
      INSERT INTO audit_chain_head (last_id, hash)
        SELECT NULL, repeat('0', 64) WHERE NOT EXISTS (SELECT 1 FROM audit_chain_head);

      CREATE TABLE audit_chain_anchors (
        last_id bigint PRIMARY KEY,
        hash text NOT NULL,
        removed_before timestamptz NOT NULL,
        removed_events bigint NOT NULL,
        removed_at timestamptz NOT NULL DEFAULT now()
      );

      CREATE TABLE audit_counts_hourly (
        hour timestamptz NOT NULL,
        action text NOT NULL,
        outcome text NOT NULL,
        target_type text,
        count bigint NOT NULL,
        UNIQUE NULLS NOT DISTINCT (hour, action, outcome, target_type)
      );
    `);
    await q.query(`
      INSERT INTO audit_counts_hourly (hour, action, outcome, target_type, count)
      SELECT date_trunc('hour', occurred_at, 'UTC'), action, outcome, target_type, count(*)
        FROM audit_events GROUP BY 1, 2, 3, 4`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      DROP TABLE audit_counts_hourly, audit_chain_anchors, audit_chain_head;
      ALTER SEQUENCE audit_events_id_seq OWNED BY NONE;
      ALTER TABLE audit_events RENAME TO audit_events_partitioned;
      CREATE TABLE audit_events (LIKE audit_events_partitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
      INSERT INTO audit_events SELECT * FROM audit_events_partitioned;
      DROP TABLE audit_events_partitioned;
      DROP FUNCTION keyledger_audit_partitions(timestamptz, timestamptz), keyledger_audit_partition(text, text);
      ALTER TABLE audit_events ADD PRIMARY KEY (id);
      ALTER SEQUENCE audit_events_id_seq OWNED BY audit_events.id;
      ${INDEXES_AND_TRIGGERS}
    `);
  }
}
