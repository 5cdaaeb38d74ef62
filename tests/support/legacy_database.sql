-- The team's existing database, as the project finds it: their own products and ad_runs (another
-- shape than the project's), the seed's three tables (../../shared/seed-schema.sql, inlined by
-- tests/support/legacy_database.py), the seed's views and updated_at trigger, and rows in every
-- table. Rows have no tenant_id (the old scheduler was single-tenant).

CREATE TABLE products (
    id UUID PRIMARY KEY,
    brand_id UUID NOT NULL,
    name TEXT NOT NULL,
    sku TEXT,
    description TEXT,
    region TEXT NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
);

CREATE TABLE ad_runs (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    product_id UUID REFERENCES products(id),
    status TEXT,
    prompt TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
);

-- @SEED_SCHEMA@

CREATE VIEW v_active_scheduled_jobs AS
SELECT j.*, p.name AS product_name
FROM scheduled_jobs j JOIN products p ON p.id = j.product_id
WHERE j.status = 'active';

CREATE VIEW v_recent_job_runs AS
SELECT r.*, j.name AS job_name
FROM scheduled_job_runs r JOIN scheduled_jobs j ON j.id = r.scheduled_job_id
WHERE r.started_at > NOW() - INTERVAL '7 days';

CREATE OR REPLACE FUNCTION update_updated_at_column() RETURNS TRIGGER AS $$
BEGIN
    NEW.updated_at = NOW();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER update_scheduled_jobs_updated_at BEFORE UPDATE ON scheduled_jobs
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

-- rows -------------------------------------------------------------------------------------------

INSERT INTO products (id, brand_id, name, sku, description, region) VALUES
    ('11111111-0000-0000-0000-000000000001', 'bbbbbbbb-0000-0000-0000-000000000001',
     'Trail Runner 2', 'TR-2', 'A light trail shoe.', 'eu'),
    ('11111111-0000-0000-0000-000000000002', 'bbbbbbbb-0000-0000-0000-000000000001',
     'Summit Jacket', 'SJ-1', NULL, 'eu'),
    ('11111111-0000-0000-0000-000000000003', 'bbbbbbbb-0000-0000-0000-000000000002',
     'Camp Mug', NULL, NULL, 'us');

INSERT INTO ad_runs (id, product_id, status, prompt) VALUES
    ('aaaaaaaa-0000-0000-0000-000000000001', '11111111-0000-0000-0000-000000000001', 'completed', 'p1'),
    ('aaaaaaaa-0000-0000-0000-000000000002', '11111111-0000-0000-0000-000000000001', 'completed', 'p2'),
    ('aaaaaaaa-0000-0000-0000-000000000003', '11111111-0000-0000-0000-000000000002', 'done', NULL);

INSERT INTO scheduled_jobs (id, product_id, brand_id, name, schedule_type, cron_expression,
                            scheduled_at, next_run_at, max_runs, runs_completed, status,
                            template_mode, template_count, template_ids, parameters) VALUES
    -- a recurring job, active, two of five runs done
    ('22222222-0000-0000-0000-000000000001', '11111111-0000-0000-0000-000000000001',
     'bbbbbbbb-0000-0000-0000-000000000001', 'Weekly trail ads', 'recurring', '0 9 * * 1',
     NULL, NOW() + INTERVAL '3 days', 5, 2, 'active', 'unused', 2, NULL,
     '{"num_variations": 2, "content_source": "hooks", "color_mode": "brand", "image_mode": "auto",
       "export_destination": "none"}'),
    -- paused, with a Slack webhook in its parameters (it must move into a block)
    ('22222222-0000-0000-0000-000000000002', '11111111-0000-0000-0000-000000000002',
     'bbbbbbbb-0000-0000-0000-000000000001', 'Daily jacket ads', 'recurring', '30 14 * * *',
     NULL, NULL, NULL, 0, 'paused', 'unused', 1, NULL,
     '{"num_variations": 1, "content_source": "benefits", "color_mode": "original",
       "export_destination": "slack",
       "slack_webhook_url": "https://hooks.slack.com/services/T0LEGACY/B0LEGACY/legacysecret"}'),
    -- completed: max_runs reached
    ('22222222-0000-0000-0000-000000000003', '11111111-0000-0000-0000-000000000003',
     'bbbbbbbb-0000-0000-0000-000000000002', 'Mug launch', 'recurring', '0 8 * * *',
     NULL, NULL, 1, 1, 'completed', 'unused', 1, NULL,
     '{"num_variations": 3}'),
    -- one-time, in the future, specific templates, emailed
    ('22222222-0000-0000-0000-000000000004', '11111111-0000-0000-0000-000000000001',
     'bbbbbbbb-0000-0000-0000-000000000001', 'Black Friday', 'one_time', NULL,
     NOW() + INTERVAL '30 days', NOW() + INTERVAL '30 days', NULL, 0, 'active', 'specific', 2,
     ARRAY['tpl-a.png', 'templates/tpl-e.png'],
     '{"num_variations": 1, "content_source": "recreate_template", "color_mode": "complementary",
       "export_destination": "email", "export_email": "team@example.com, Boss@Example.com"}'),
    -- still "active", but its history shows max_runs reached: completed once adopted
    ('22222222-0000-0000-0000-000000000006', '11111111-0000-0000-0000-000000000003',
     'bbbbbbbb-0000-0000-0000-000000000002', 'Spring sale', 'recurring', '0 7 * * *',
     NULL, NULL, 1, 0, 'active', 'unused', 1, NULL, '{"num_variations": 1}'),
    -- bad parameters: cannot be adopted, must be reported and left as it is
    ('22222222-0000-0000-0000-000000000005', '11111111-0000-0000-0000-000000000002',
     'bbbbbbbb-0000-0000-0000-000000000001', 'Broken job', 'recurring', '0 10 * * *',
     NULL, NULL, NULL, 0, 'active', 'unused', 1, NULL,
     '{"num_variations": 50, "color_mode": "neon"}');

INSERT INTO scheduled_job_runs (id, scheduled_job_id, started_at, completed_at, status,
                                error_message, ad_run_ids, templates_used, logs) VALUES
    ('33333333-0000-0000-0000-000000000001', '22222222-0000-0000-0000-000000000001',
     NOW() - INTERVAL '14 days', NOW() - INTERVAL '14 days' + INTERVAL '2 minutes', 'completed',
     NULL, ARRAY['aaaaaaaa-0000-0000-0000-000000000001']::uuid[], ARRAY['tpl-a.png'], 'ok'),
    ('33333333-0000-0000-0000-000000000002', '22222222-0000-0000-0000-000000000001',
     NOW() - INTERVAL '7 days', NOW() - INTERVAL '7 days' + INTERVAL '2 minutes', 'completed',
     NULL, ARRAY['aaaaaaaa-0000-0000-0000-000000000002']::uuid[], ARRAY['tpl-b.png'], 'ok'),
    ('33333333-0000-0000-0000-000000000003', '22222222-0000-0000-0000-000000000001',
     NOW() - INTERVAL '1 day', NOW() - INTERVAL '1 day' + INTERVAL '1 minute', 'failed',
     'generator timed out', NULL, NULL, 'failed'),
    ('33333333-0000-0000-0000-000000000004', '22222222-0000-0000-0000-000000000003',
     NOW() - INTERVAL '20 days', NOW() - INTERVAL '20 days' + INTERVAL '1 minute', 'completed',
     NULL, ARRAY['aaaaaaaa-0000-0000-0000-000000000003']::uuid[], ARRAY['tpl-a.png'], 'ok'),
    ('33333333-0000-0000-0000-000000000005', '22222222-0000-0000-0000-000000000006',
     NOW() - INTERVAL '10 days', NOW() - INTERVAL '10 days' + INTERVAL '1 minute', 'completed',
     NULL, NULL, NULL, 'ok');

INSERT INTO product_template_usage (id, product_id, template_storage_name, used_at, ad_run_id) VALUES
    ('44444444-0000-0000-0000-000000000001', '11111111-0000-0000-0000-000000000001', 'tpl-a.png',
     NOW() - INTERVAL '14 days', 'aaaaaaaa-0000-0000-0000-000000000001'),
    -- the old worker sometimes stored the template's storage path, not its name
    ('44444444-0000-0000-0000-000000000002', '11111111-0000-0000-0000-000000000001',
     'templates/tpl-b.png',
     NOW() - INTERVAL '7 days', 'aaaaaaaa-0000-0000-0000-000000000002'),
    ('44444444-0000-0000-0000-000000000003', '11111111-0000-0000-0000-000000000003', 'tpl-a.png',
     NOW() - INTERVAL '20 days', 'aaaaaaaa-0000-0000-0000-000000000003');
