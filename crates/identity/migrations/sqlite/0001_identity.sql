-- The identity store, version 1 (SQLite). migrations/postgres/0001_identity.sql is the same
-- schema in PostgreSQL's dialect; the queries in src/ run unchanged on both. Times are Unix
-- seconds, flags 0/1 (BIGINT everywhere, so both drivers decode them as i64). Ids are never
-- reused (AUTOINCREMENT here, identity columns there): an id a client holds, or an audit event
-- names, stays that user's or key's.

-- One row per key: 'revision' (bumped first by every write transaction: it serializes writers
-- and tells every supervisor's cache that something changed) and 'jwt_secret' (the signing key
-- of tokens when no auth config file supplies one; shared by supervisors on one database).
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('revision', '0');

CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL DEFAULT 'local',
    password_hash TEXT,
    enabled BIGINT NOT NULL DEFAULT 1,
    must_change_password BIGINT NOT NULL DEFAULT 0,
    -- Canonical permission names, space-separated (validated on the way in).
    permissions TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- SHA-256 (hex) of the whole key; the key itself is never stored.
    key_hash TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    name TEXT,
    description TEXT,
    enabled BIGINT NOT NULL DEFAULT 1,
    expires_at BIGINT,
    -- The key's own permissions (space-separated), NULL for the default (model use).
    permissions TEXT,
    requests_per_minute BIGINT,
    tokens_per_minute BIGINT,
    concurrent_requests BIGINT,
    tokens_per_day BIGINT,
    tokens_per_month BIGINT,
    requests BIGINT NOT NULL DEFAULT 0,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX api_keys_user ON api_keys(user_id);

-- Which models a key may list and use: kind 'all', 'model_id' or 'model_type'.
CREATE TABLE api_key_models (
    key_id BIGINT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    value TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (key_id, kind, value)
);

-- A login: every access token carries its session id (`sid`); refresh tokens rotate within
-- it. Config-file users have sessions too (user_id NULL, source 'config').
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id BIGINT REFERENCES users(id) ON DELETE CASCADE,
    username TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_username ON sessions(source, username);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    -- Set when rotated: presenting it again is reuse, and revokes the session.
    used_at BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);

CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    username TEXT,
    key_prefix TEXT,
    target TEXT,
    address TEXT,
    detail TEXT
);
CREATE INDEX audit_events_at ON audit_events(at);
CREATE INDEX audit_events_user ON audit_events(username, at);
