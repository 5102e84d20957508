-- Sign-in attempts, reserved before the password is checked (outcome NULL while it is), so
-- concurrent attempts cannot check more passwords than the throttle allows. The throttle counts
-- per (email, client address), so an attacker elsewhere cannot lock the account's owner out.
DROP TABLE login_failures;

CREATE TABLE login_attempts (
    id      bigserial PRIMARY KEY,
    email   text NOT NULL,
    address text NOT NULL,
    at      timestamptz NOT NULL DEFAULT now(),
    outcome text CHECK (outcome IN ('failed', 'ok'))
);
CREATE INDEX login_attempts_key ON login_attempts (email, address, id);
CREATE INDEX login_attempts_address ON login_attempts (address, at);
