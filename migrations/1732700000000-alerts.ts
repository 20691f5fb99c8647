import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Alerts and the rules administrators define. An alert is deduplicated on (type, subject): while
 * one is unresolved and inside its window, repeats only raise its count. key_networks remembers
 * the networks each key was used from, so NEW_SOURCE_IP survives restarts and spans instances.
 */
export class Alerts1732700000000 implements MigrationInterface {
  name = 'Alerts1732700000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE alert_rules (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
        metric text NOT NULL CHECK (metric IN ('VERIFY_CALLS', 'VERIFY_FAILURES', 'RATE_LIMITED', 'DENIED_ACTIONS', 'AUTH_FAILURES')),
        threshold integer NOT NULL CHECK (threshold > 0),
        window_seconds integer NOT NULL CHECK (window_seconds > 0),
        severity text NOT NULL CHECK (severity IN ('INFO', 'LOW', 'MEDIUM', 'HIGH', 'CRITICAL')),
        key_id uuid REFERENCES api_keys (id) ON DELETE CASCADE,
        user_id uuid REFERENCES users (id) ON DELETE CASCADE,
        enabled boolean NOT NULL DEFAULT true,
        created_by_id uuid REFERENCES users (id),
        created_at timestamptz NOT NULL DEFAULT date_trunc('milliseconds', now()),
        updated_at timestamptz NOT NULL DEFAULT date_trunc('milliseconds', now())
      );
      CREATE TABLE alerts (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        type text NOT NULL,
        severity text NOT NULL CHECK (severity IN ('INFO', 'LOW', 'MEDIUM', 'HIGH', 'CRITICAL')),
        severity_rank smallint NOT NULL,
        status text NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'ACKNOWLEDGED', 'RESOLVED')),
        subject text NOT NULL,
        message text NOT NULL,
        key_id uuid REFERENCES api_keys (id) ON DELETE SET NULL,
        user_id uuid REFERENCES users (id) ON DELETE SET NULL,
        rule_id uuid REFERENCES alert_rules (id) ON DELETE SET NULL,
        details jsonb,
        repeat_count integer NOT NULL DEFAULT 0,
        window_ends_at timestamptz NOT NULL,
        last_seen_at timestamptz NOT NULL DEFAULT date_trunc('milliseconds', now()),
        created_at timestamptz NOT NULL DEFAULT date_trunc('milliseconds', now()),
        acknowledged_at timestamptz,
        acknowledged_by_id uuid REFERENCES users (id),
        resolved_at timestamptz,
        resolved_by_id uuid REFERENCES users (id)
      );
      CREATE INDEX alerts_open_subject ON alerts (type, subject) WHERE status <> 'RESOLVED';
      CREATE INDEX alerts_page ON alerts (created_at, id);
      CREATE INDEX alerts_key ON alerts (key_id, created_at) WHERE key_id IS NOT NULL;
      CREATE INDEX alerts_user ON alerts (user_id, created_at) WHERE user_id IS NOT NULL;
      CREATE TABLE key_networks (
        key_id uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
        network cidr NOT NULL,
        first_seen_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (key_id, network)
      );
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TABLE key_networks; DROP TABLE alerts; DROP TABLE alert_rules;');
  }
}
