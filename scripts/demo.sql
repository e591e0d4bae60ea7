-- The demo schema and data that `make run` loads into its local database (docs/API.md uses it).
CREATE TABLE users (
    id         bigint PRIMARY KEY,
    name       text NOT NULL,
    email      text UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id       bigserial PRIMARY KEY,
    user_id  bigint NOT NULL REFERENCES users (id),
    total    numeric(12, 2) NOT NULL CHECK (total >= 0),
    items    jsonb NOT NULL DEFAULT '[]',
    placed   date NOT NULL DEFAULT current_date
);
INSERT INTO users (id, name, email, created_at)
SELECT i, 'user ' || i, 'user' || i || '@example.com', timestamptz '2026-01-01 00:00:00+00' + i * interval '1 hour'
FROM generate_series(1, 1000) AS i;
UPDATE users SET name = 'ann' WHERE id = 42;
INSERT INTO orders (user_id, total, items, placed)
SELECT 1 + (i * 7919) % 1000, ((i * 37) % 10000) / 100.0,
       jsonb_build_array(jsonb_build_object('sku', 'sku-' || (i % 50), 'qty', 1 + i % 3)),
       date '2026-01-01' + (i % 300)
FROM generate_series(1, 5000) AS i;
ANALYZE users, orders;
