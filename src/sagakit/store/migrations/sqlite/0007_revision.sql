-- How many transitions have been written to the saga. Every transition is written only if
-- the writer's fence and revision are the stored ones, and adds one: a driver that slept
-- through somebody else's progress can never write over it, even under a fence it got back.
ALTER TABLE saga_instances ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
