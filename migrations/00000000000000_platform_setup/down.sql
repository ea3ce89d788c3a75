DROP FUNCTION IF EXISTS tessera_touch_updated_at();
