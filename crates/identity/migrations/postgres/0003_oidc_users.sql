-- Users from single sign-on: the provider's issuer and subject name them for good (their
-- username may change at the provider; issuer + subject may not). NULL for other users.
ALTER TABLE users ADD COLUMN oidc_issuer TEXT;
ALTER TABLE users ADD COLUMN oidc_subject TEXT;
CREATE UNIQUE INDEX users_oidc_identity ON users (oidc_issuer, oidc_subject);
