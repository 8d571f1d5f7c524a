-- Dashboard sessions. The cookie holds a random id; only its SHA-256 digest is kept here, so
-- reading this table gives nobody a session. ``credential`` ties the session to the tokens
-- it was opened with: when the admin token (or the viewer token used) changes, it no longer
-- matches and the session is gone. Times are seconds since the epoch.
CREATE TABLE sagakit_sessions (
    id_digest  TEXT PRIMARY KEY,
    role       TEXT NOT NULL,
    label      TEXT NOT NULL,
    credential TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX sagakit_sessions_expiry ON sagakit_sessions (expires_at);
