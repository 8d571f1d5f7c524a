-- A unit run as one statement (its actions' calls, then its saga's insert) calls this when
-- one of its actions was refused, or its key was taken meanwhile, after its results were
-- guessed: the statement fails, so nothing of it stays, and the saga runs the ordinary way.
CREATE FUNCTION sagakit_discard_unit(reason text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sagakit unit discarded: %', reason USING ERRCODE = 'SKDIS';
END
$$;
