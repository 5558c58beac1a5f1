-- What operators (and `pg-once doctor`) need to know and the database could not tell: which
-- relays run, and when the last sweep ran. An idle relay left no trace (leases exist only while
-- it delivers), and a sweep run by hand left none either.
--
-- once.relays: one row per relay process, written at start, its seen_at renewed every 30 s,
-- stopped_at set on a graceful stop (a killed relay simply stops being seen). Sweeps delete rows
-- not seen for 7 days.
-- once.sweeps: one row per completed sweep (by the relay's cron or by hand), with what it
-- deleted; sweeps delete rows older than 30 days.
-- Neither holds tenant data, so neither has row-level security; only the relay role may touch
-- them. The relay role may also read once.migrations, so `doctor` run as the relay's login sees
-- pending migrations.
--
-- Variables: relay_role (psql: -v relay_role=...), bound by `pg-once migrate`.

CREATE TABLE once.relays (
  relay_id   text        PRIMARY KEY,
  host       text        NOT NULL,
  pid        integer     NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  seen_at    timestamptz NOT NULL DEFAULT now(),
  stopped_at timestamptz
);

CREATE TABLE once.sweeps (
  id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at         timestamptz NOT NULL DEFAULT now(),
  by_role    text        NOT NULL DEFAULT current_user,
  deleted    jsonb       NOT NULL,
  truncated  boolean     NOT NULL
);
CREATE INDEX sweeps_at ON once.sweeps (at);

REVOKE ALL ON once.relays, once.sweeps FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON once.relays TO :"relay_role";
GRANT SELECT, INSERT, DELETE ON once.sweeps TO :"relay_role";
GRANT SELECT ON once.migrations TO :"relay_role";
