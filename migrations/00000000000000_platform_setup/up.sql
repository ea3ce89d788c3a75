-- Platform helpers shared by every domain's tables.

-- Keeps an `updated_at` column honest: any UPDATE that changes a row stamps it,
-- whatever code path issued the UPDATE. Attach with:
--   CREATE TRIGGER t BEFORE UPDATE ON my_table
--   FOR EACH ROW EXECUTE FUNCTION tessera_touch_updated_at();
CREATE FUNCTION tessera_touch_updated_at() RETURNS trigger AS $$
BEGIN
    IF NEW IS DISTINCT FROM OLD AND NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
