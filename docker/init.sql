-- The example app's table; apps write to it unchanged, walhook reads the WAL.
CREATE TABLE IF NOT EXISTS packet_comments (
    id serial PRIMARY KEY, organization_id text NOT NULL, packet_id int NOT NULL, content text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
