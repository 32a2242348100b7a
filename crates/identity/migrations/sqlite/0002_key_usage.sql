-- Tokens used by each key per UTC day ('d:<days since 1970>') and month ('m:<months since
-- 1970-01>'), for token budgets shared by every supervisor on the database.
CREATE TABLE key_usage (
    key_id BIGINT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    period TEXT NOT NULL,
    tokens BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, period)
);
