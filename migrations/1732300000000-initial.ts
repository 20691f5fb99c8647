import { MigrationInterface, QueryRunner } from 'typeorm';

export class Initial1732300000000 implements MigrationInterface {
  name = 'Initial1732300000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE server_settings (
        name text PRIMARY KEY,
        value text NOT NULL
      );

      CREATE TABLE users (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        kind text NOT NULL CHECK (kind IN ('HUMAN', 'SERVICE')),
        name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
        email text CHECK (length(email) <= 320),
        status text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'DISABLED')),
        owner_id uuid REFERENCES users (id),
        disabled_reason text,
        created_at timestamptz NOT NULL DEFAULT date_trunc('milliseconds', now()),
        created_by_id uuid REFERENCES users (id),
        last_active_at timestamptz,
        CONSTRAINT users_kind_shape CHECK (
          (kind = 'HUMAN' AND owner_id IS NULL AND email IS NOT NULL)
          OR (kind = 'SERVICE' AND owner_id IS NOT NULL AND email IS NULL)
        )
      );
      CREATE UNIQUE INDEX users_email_unique ON users (lower(email)) WHERE email IS NOT NULL;
      CREATE INDEX users_page ON users (created_at, id);
      CREATE INDEX users_owner ON users (owner_id) WHERE owner_id IS NOT NULL;
      CREATE INDEX users_created_by ON users (created_by_id);
      CREATE INDEX users_kind_status ON users (kind, status);

      CREATE TABLE roles (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
        description text,
        permissions text[] NOT NULL DEFAULT '{}',
        built_in boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL DEFAULT date_trunc('milliseconds', now()),
        updated_at timestamptz NOT NULL DEFAULT date_trunc('milliseconds', now())
      );
      CREATE UNIQUE INDEX roles_name_unique ON roles (lower(name));

      CREATE TABLE user_roles (
        user_id uuid NOT NULL REFERENCES users (id),
        role_id uuid NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
        created_at timestamptz NOT NULL DEFAULT date_trunc('milliseconds', now()),
        PRIMARY KEY (user_id, role_id)
      );
      CREATE INDEX user_roles_role ON user_roles (role_id);

      CREATE TABLE api_keys (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        hash bytea NOT NULL,
        prefix text NOT NULL,
        start text NOT NULL,
        name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
        owner_id uuid NOT NULL REFERENCES users (id),
        created_by_id uuid REFERENCES users (id),
        stored_status text NOT NULL DEFAULT 'ACTIVE' CHECK (stored_status IN ('ACTIVE', 'DISABLED', 'REVOKED')),
        granted_permissions text[] NOT NULL DEFAULT '{}',
        expires_at timestamptz,
        revoked_at timestamptz,
        revoked_by_id uuid REFERENCES users (id),
        revoke_reason text,
        rotated_from_id uuid REFERENCES api_keys (id),
        allowed_cidrs text[] NOT NULL DEFAULT '{}',
        rate_limit integer CHECK (rate_limit > 0),
        rate_limit_window_seconds integer CHECK (rate_limit_window_seconds > 0),
        remaining integer CHECK (remaining >= 0),
        refill_amount integer CHECK (refill_amount > 0),
        refill_interval_seconds integer CHECK (refill_interval_seconds > 0),
        last_refill_at timestamptz,
        metadata jsonb,
        last_used_at timestamptz,
        last_used_ip text,
        created_at timestamptz NOT NULL DEFAULT date_trunc('milliseconds', now()),
        updated_at timestamptz NOT NULL DEFAULT date_trunc('milliseconds', now())
      );
      CREATE UNIQUE INDEX api_keys_hash ON api_keys (hash);
      CREATE INDEX api_keys_owner ON api_keys (owner_id, created_at, id);
      CREATE INDEX api_keys_page ON api_keys (created_at, id);
      CREATE INDEX api_keys_created_by ON api_keys (created_by_id);
      CREATE INDEX api_keys_status ON api_keys (stored_status);
      CREATE INDEX api_keys_expires ON api_keys (expires_at) WHERE expires_at IS NOT NULL;
      CREATE INDEX api_keys_start ON api_keys (start);
      CREATE UNIQUE INDEX api_keys_rotated_from ON api_keys (rotated_from_id) WHERE rotated_from_id IS NOT NULL;

      CREATE TABLE api_key_roles (
        key_id uuid NOT NULL REFERENCES api_keys (id),
        role_id uuid NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
        PRIMARY KEY (key_id, role_id)
      );
      CREATE INDEX api_key_roles_role ON api_key_roles (role_id);

      CREATE TABLE audit_events (
        id bigint PRIMARY KEY,
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
        hash text NOT NULL
      );
      CREATE SEQUENCE audit_events_id_seq OWNED BY audit_events.id;
      CREATE INDEX audit_events_time ON audit_events (occurred_at, id);
      CREATE INDEX audit_events_actor ON audit_events (actor_id, id);
      CREATE INDEX audit_events_actor_key ON audit_events (actor_key_id, id);
      CREATE INDEX audit_events_action ON audit_events (action text_pattern_ops, id);
      CREATE INDEX audit_events_target ON audit_events (target_type, target_id, id);
      CREATE INDEX audit_events_outcome ON audit_events (outcome, id);
      CREATE INDEX audit_events_ip ON audit_events USING gist ((ip::inet) inet_ops);
      CREATE INDEX audit_events_details ON audit_events USING gin (details jsonb_path_ops);

      -- Append-only, enforced by the database whoever the client is.
      CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        RAISE EXCEPTION 'audit_events is append-only: % is not allowed', TG_OP
          USING ERRCODE = 'insufficient_privilege';
      END $$;
      CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE ON audit_events
        FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
      CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
        FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

      INSERT INTO roles (name, description, permissions, built_in) VALUES
        ('admin', 'Everything', '{*}', true),
        ('auditor', 'Reads identities, keys and the audit trail; exports it',
          '{users:read,roles:read,keys:read,audit:read,audit:export,alerts:read}', true),
        ('key-manager', 'Issues and manages API keys for anyone', '{users:read,keys:read,keys:write}', true),
        ('verifier', 'Services that check presented keys', '{keys:verify}', true),
        ('member', 'Manages their own keys and their service accounts'' keys', '{keys:own}', true);
    `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      DROP TABLE audit_events;
      DROP FUNCTION audit_events_append_only();
      DROP TABLE api_key_roles;
      DROP TABLE api_keys;
      DROP TABLE user_roles;
      DROP TABLE roles;
      DROP TABLE users;
      DROP TABLE server_settings;
    `);
  }
}
