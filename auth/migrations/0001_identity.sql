-- Identity: users, tenants and memberships, API keys, per-resource grants, and the state
-- behind tokens (signing keys, sessions, refresh tokens).

CREATE TABLE users (
    id            uuid        PRIMARY KEY,
    username      text        NOT NULL CHECK (length(username) BETWEEN 1 AND 64),
    email         text        CHECK (length(email) <= 254),
    password_hash text        NOT NULL,
    is_admin      boolean     NOT NULL DEFAULT false,
    disabled      boolean     NOT NULL DEFAULT false,
    -- Bumped by a password change or a disable: tokens and cached Basic credentials
    -- carrying an older value stop working at once.
    cred_version  bigint      NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz
);
CREATE UNIQUE INDEX users_username ON users (lower(username));
CREATE UNIQUE INDEX users_email ON users (lower(email)) WHERE email IS NOT NULL;

CREATE TABLE tenants (
    id         uuid        PRIMARY KEY,
    name       text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
    tenant_id  uuid        NOT NULL REFERENCES tenants ON DELETE CASCADE,
    user_id    uuid        NOT NULL REFERENCES users ON DELETE CASCADE,
    role       text        NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    -- The membership grants access from starts_on through ends_on (UTC dates, both
    -- inclusive); NULL leaves that side open.
    starts_on  date,
    ends_on    date,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id),
    CHECK (starts_on IS NULL OR ends_on IS NULL OR ends_on >= starts_on)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY,
    tenant_id    uuid        NOT NULL REFERENCES tenants ON DELETE CASCADE,
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    prefix       text        NOT NULL UNIQUE,
    secret_hash  bytea       NOT NULL,
    role         text        NOT NULL CHECK (role IN ('admin', 'member', 'viewer')),
    created_by   uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

CREATE TABLE grants (
    id          uuid        PRIMARY KEY,
    tenant_id   uuid        NOT NULL REFERENCES tenants ON DELETE CASCADE,
    user_id     uuid        REFERENCES users ON DELETE CASCADE,
    api_key_id  uuid        REFERENCES api_keys ON DELETE CASCADE,
    resource    text        NOT NULL CHECK (length(resource) BETWEEN 1 AND 300),
    permission  text        NOT NULL CHECK (permission IN ('read', 'write', 'admin')),
    granted_by  uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((user_id IS NULL) <> (api_key_id IS NULL))
);
CREATE UNIQUE INDEX grants_unique ON grants (tenant_id, COALESCE(user_id, api_key_id), resource, permission);
CREATE INDEX grants_resource ON grants (tenant_id, resource);

-- HS256 signing keys for access tokens; the newest unretired one signs, any unretired
-- one verifies (so keys rotate without cutting off tokens in flight).
CREATE TABLE signing_keys (
    kid        text        PRIMARY KEY,
    secret     bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);

-- A session is one sign-in: its refresh tokens form a family rotated on every use.
CREATE TABLE sessions (
    id            uuid        PRIMARY KEY,
    user_id       uuid        NOT NULL REFERENCES users ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    revoke_reason text
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

CREATE TABLE refresh_tokens (
    hash       bytea       PRIMARY KEY,
    session_id uuid        NOT NULL REFERENCES sessions ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at    timestamptz
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);
